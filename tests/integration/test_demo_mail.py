"""The demo mailbox: the real SMTP connector delivers to the local aiosmtpd server, the page shows it."""

from __future__ import annotations

import socket

from engine.demo_mail import DEMO_SMTP_SETTINGS, read_mailbox, start_mailbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_welcome_email_of_onboarding_lands_in_the_demo_mailbox(cf_sqlite, tmp_path):
    port = free_port()
    mailbox = start_mailbox(tmp_path / "mail", port=port)
    try:
        cf_sqlite.save_connector("smtp-demo", "smtp", {**DEMO_SMTP_SETTINGS, "port": port})
        cf_sqlite.save_connector("email", "email", {"provider": "smtp-demo"})
        cf_sqlite.submit_form("new_customer", {"name": "张伟", "email": "zhangwei@example.com", "region": "上海",
                                               "expected_value": 150000, "language": "zh"})
        report = cf_sqlite.tick()
        assert report["outbox"]["sent"] == 1
    finally:
        mailbox.stop()
    [mail] = read_mailbox(tmp_path / "mail")
    assert mail.subject == "欢迎成为我们的客户"
    assert mail.to == "zhangwei@example.com"
    assert "张伟，您好" in mail.body
