"""The smtp connector against a real SMTP server (aiosmtpd): TLS, AUTH, headers, failures."""

from __future__ import annotations

import email
import email.policy
import time

import pytest

from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.net import AmbiguousSendError
from connectors.smtp import SmtpConnector, message_id
from tests.integration.connectors.conftest import SMTP_PASSWORD, SMTP_USER, free_port

SUBJECT = "欢迎成为我们的客户"


def mail(key: str = "7:welcome_email:1", **params: object) -> Message:
    defaults = {"to": "li.lei@example.com", "subject": SUBJECT, "text": "李雷，您好！感谢您选择我们。",
                "html": "<p>李雷，您好！</p>"}
    return Message(key, "smtp", {**defaults, **params})


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_plain_send_builds_a_proper_message(smtp_server):
    server = smtp_server("none")
    delivery = SmtpConnector().send(mail(), server.settings())

    [received] = server.handler.messages
    assert received.mail_from == "service@example.com"
    assert received.rcpt_tos == ["li.lei@example.com"]
    raw_headers = received.content.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in raw_headers  # the Chinese subject and sender name are RFC 2047 encoded
    assert all(byte < 128 for byte in raw_headers)
    msg = parsed(received.content)
    assert msg["Subject"] == SUBJECT
    assert msg["From"].addresses[0].display_name == "客服中心"
    assert msg["From"].addresses[0].addr_spec == "service@example.com"
    assert msg["To"] == "li.lei@example.com"
    assert msg["Message-ID"] == message_id("7:welcome_email:1", "service@example.com")
    assert msg["X-Careflow-Key"] == "7:welcome_email:1"
    assert msg.get_body(("plain",)).get_content().strip() == "李雷，您好！感谢您选择我们。"
    assert msg.get_body(("html",)).get_content().strip() == "<p>李雷，您好！</p>"
    assert delivery.provider_ref == msg["Message-ID"]
    assert "queued as CAREFLOW1" in delivery.detail["smtp_reply"]


def test_a_resend_carries_the_same_message_id(smtp_server):
    server = smtp_server("none")
    connector = SmtpConnector()
    connector.send(mail(), server.settings())
    connector.send(mail(), server.settings())
    connector.send(mail("7:welcome_email:2"), server.settings())
    ids = [parsed(m.content)["Message-ID"] for m in server.handler.messages]
    assert ids[0] == ids[1] != ids[2]


def test_text_only_message_has_no_html_part(smtp_server):
    server = smtp_server("none")
    SmtpConnector().send(mail(html=None), server.settings())
    msg = parsed(server.handler.messages[0].content)
    assert msg.get_content_type() == "text/plain"


def test_starttls_with_auth(smtp_server):
    server = smtp_server("starttls", auth=True)
    SmtpConnector().send(mail(), server.settings(username=SMTP_USER, password=SMTP_PASSWORD))
    assert len(server.handler.messages) == 1


def test_wrong_password_is_permanent_and_sends_nothing(smtp_server):
    server = smtp_server("starttls", auth=True)
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings(username=SMTP_USER, password="wrong"))
    assert not caught.value.retryable
    assert "authentication failed" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert server.handler.messages == []


def test_server_requiring_auth_refuses_an_anonymous_send(smtp_server):
    server = smtp_server("starttls", auth=True)
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings())
    assert not caught.value.retryable  # 530 authentication required: a settings problem
    assert server.handler.messages == []


def test_implicit_tls(smtp_server):
    server = smtp_server("ssl")
    SmtpConnector().send(mail(), server.settings())
    assert len(server.handler.messages) == 1


def test_plain_connection_with_optional_auth(smtp_server):
    server = smtp_server("none", auth=True)
    SmtpConnector().send(mail(), server.settings(username=SMTP_USER, password=SMTP_PASSWORD))
    assert len(server.handler.messages) == 1


def test_untrusted_certificate_is_permanent(smtp_server):
    server = smtp_server("starttls")
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings(ca_cert=None))  # public CAs only: ours is unknown
    assert not caught.value.retryable
    assert "not trusted" in str(caught.value)
    assert server.handler.messages == []


def test_starttls_never_falls_back_to_plain_text(smtp_server):
    server = smtp_server("none")
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings(security="starttls"))
    assert not caught.value.retryable
    assert server.handler.messages == []


@pytest.mark.parametrize("field, value", [
    ("subject", "Hello\r\nBcc: victim@example.com"),
    ("subject", "第一行\n第二行"),
    ("to", "li.lei@example.com\r\nBcc: victim@example.com"),
    ("to", "not-an-address"),
])
def test_header_injection_is_refused_before_connecting(smtp_server, field, value):
    server = smtp_server("none")
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(**{field: value}), server.settings())
    assert not caught.value.retryable
    assert server.handler.messages == []


def test_crlf_in_sender_name_is_refused(smtp_server):
    server = smtp_server("none")
    with pytest.raises(ConnectorError):
        SmtpConnector().send(mail(), server.settings(from_name="Shop\r\nBcc: x@example.com"))
    assert server.handler.messages == []


def test_connection_refused_is_transient_and_not_ambiguous():
    settings = {"host": "127.0.0.1", "port": free_port(), "security": "none", "from_address": "a@example.com", "timeout": 2}
    with pytest.raises(TransientConnectorError) as caught:
        SmtpConnector().send(mail(), settings)
    assert not isinstance(caught.value, AmbiguousSendError)


@pytest.mark.parametrize("reply, retryable", [("550 5.1.1 No such user", False), ("451 4.3.0 Try again later", True)])
def test_recipient_refusals_follow_the_reply_class(smtp_server, reply, retryable):
    server = smtp_server("none")
    server.handler.rcpt_reply = reply
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings())
    assert caught.value.retryable is retryable
    assert reply.split(" ", 1)[1] in str(caught.value)
    assert not isinstance(caught.value, AmbiguousSendError)


@pytest.mark.parametrize("reply, retryable", [("554 5.7.1 Rejected as spam", False), ("452 4.3.1 Out of storage", True)])
def test_data_refusals_follow_the_reply_class(smtp_server, reply, retryable):
    server = smtp_server("none")
    server.handler.data_reply = reply
    with pytest.raises(ConnectorError) as caught:
        SmtpConnector().send(mail(), server.settings())
    assert caught.value.retryable is retryable
    assert not isinstance(caught.value, AmbiguousSendError)  # the server answered


def test_lost_answer_after_the_body_is_ambiguous(smtp_server):
    server = smtp_server("none")
    server.handler.data_delay = 3.0
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError) as caught:
        SmtpConnector().send(mail(), server.settings(timeout=1))
    assert time.monotonic() - started < 2.5
    assert caught.value.retryable and caught.value.ambiguous


def test_utf8_local_part_uses_smtputf8(smtp_server):
    server = smtp_server("none")
    SmtpConnector().send(mail(to="李雷@例子.中国"), server.settings())
    [received] = server.handler.messages
    assert received.smtp_utf8
    assert received.rcpt_tos == ["李雷@例子.中国"]


def test_idn_domain_is_sent_in_ascii_form(smtp_server):
    server = smtp_server("none")
    SmtpConnector().send(mail(to="lilei@例子.中国"), server.settings())
    [received] = server.handler.messages
    assert received.rcpt_tos == ["lilei@xn--fsqu00a.xn--fiqs8s"]
    assert not received.smtp_utf8
