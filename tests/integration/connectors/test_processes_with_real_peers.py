"""A built-in process end to end through real peers: SMTP to aiosmtpd, SMS to Twilio's contract on Prism."""

from __future__ import annotations

import email
import email.policy

from tests.integration.connectors.conftest import Prism

ACCOUNT = "AC" + "0" * 32


def test_onboarding_sends_its_welcome_email_and_sms_through_attached_connectors(cf_sqlite, smtp_server, prism_twilio: Prism):
    cf = cf_sqlite
    smtp = smtp_server("none")
    cf.save_connector("smtp-main", "smtp", smtp.settings(), by="admin")
    cf.save_connector("twilio-main", "twilio_sms", {"account_sid": ACCOUNT, "auth_token": "secret-token",
                                                    "from_number": "+15005550006", "base_url": prism_twilio.base_url})
    cf.save_connector("email", "email", {"provider": "smtp-main"})
    cf.save_connector("sms", "sms", {"provider": "twilio-main"})
    mark = prism_twilio.mark()
    result = cf.submit_form("new_customer", {"name": "张伟", "phone": "138 0013 8000", "email": "zhangwei@example.com",
                                             "region": "上海", "expected_value": 150000, "language": "zh"})
    report = cf.tick()
    assert report["outbox"]["sent"] == 2, cf.delivery_log()
    assert prism_twilio.violations(mark) == []
    [received] = smtp.handler.messages
    assert received.rcpt_tos == ["zhangwei@example.com"]
    msg = email.message_from_bytes(received.content, policy=email.policy.default)
    assert str(msg["Subject"]) == "欢迎成为我们的客户"
    assert msg["X-Careflow-Key"] == f"{result['instances'][0]}:welcome_email:1"  # the idempotency key travels along
    log = {m["step"]: (m["status"], m["channel"]) for m in cf.delivery_log()}
    assert log == {"welcome_email": ("sent", "email"), "welcome_sms": ("sent", "sms")}
