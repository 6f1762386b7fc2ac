"""The sendgrid connector against Prism serving SendGrid's published Mail Send contract.

Prism validates each request against the contract; a valid send must leave no violation in its
log. Error answers the contract defines are forced with Prism's ``Prefer: code=...`` header,
sent by a test-only subclass; 429 (not in the contract) comes from a local stub.
"""

from __future__ import annotations

import logging

import pytest

from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.net import AmbiguousSendError
from connectors.sendgrid import SendGridConnector
from tests.integration.connectors.conftest import StubReply, free_port

API_KEY = "SG.test-key.CANARY-sendgrid-secret"


class PreferringSendGrid(SendGridConnector):
    """Asks Prism for a given response code (test only)."""

    def __init__(self, prefer: str):
        self.prefer = prefer

    def _request_headers(self, message: Message) -> dict[str, str]:
        return {"Prefer": self.prefer}


def mail(**params: object) -> Message:
    base = {"to": "li.lei@example.com", "subject": "欢迎成为我们的客户", "text": "李雷，您好！", "html": "<p>李雷，您好！</p>"}
    return Message("7:welcome_email:1", "sendgrid", {**base, **params})


def settings(base_url: str, **extra: object) -> dict[str, object]:
    return {"api_key": API_KEY, "from_address": "service@example.com", "from_name": "客服中心", "base_url": base_url,
            "timeout": 10, **extra}


def test_valid_send_is_accepted_by_the_contract(prism_sendgrid):
    mark = prism_sendgrid.mark()
    delivery = SendGridConnector().send(mail(), settings(prism_sendgrid.base_url))
    assert delivery.detail["status"] == 202
    assert prism_sendgrid.violations(mark) == []


def test_text_only_send_is_accepted_by_the_contract(prism_sendgrid):
    mark = prism_sendgrid.mark()
    SendGridConnector().send(mail(html=None), settings(prism_sendgrid.base_url, from_name=None))
    assert prism_sendgrid.violations(mark) == []


def test_request_body_carries_the_key_in_custom_args_only():
    body = SendGridConnector().request_body(mail(), settings("http://unused"))
    assert body["personalizations"][0]["custom_args"] == {"careflow_key": "7:welcome_email:1"}
    assert body["from"] == {"email": "service@example.com", "name": "客服中心"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]


def test_a_request_the_contract_rejects_is_permanent(prism_sendgrid):
    class NoSender(SendGridConnector):
        def request_body(self, message, settings):  # what a bug dropping 'from' would send
            body = super().request_body(message, settings)
            del body["from"]
            return body

    mark = prism_sendgrid.mark()
    with pytest.raises(ConnectorError) as caught:
        NoSender().send(mail(), settings(prism_sendgrid.base_url))
    assert not caught.value.retryable
    assert "HTTP 400" in str(caught.value)
    assert any("'from'" in line for line in prism_sendgrid.violations(mark))


def test_missing_api_key_is_permanent_without_a_request(stub_server):
    stub = stub_server(lambda request: StubReply(202))
    with pytest.raises(ConnectorError) as caught:
        SendGridConnector().send(mail(), settings(stub.url, api_key=""))
    assert not caught.value.retryable
    assert stub.requests == []


def test_a_rejected_key_is_permanent(prism_sendgrid):
    with pytest.raises(ConnectorError) as caught:
        PreferringSendGrid("code=401").send(mail(), settings(prism_sendgrid.base_url))
    assert not caught.value.retryable
    assert "HTTP 401" in str(caught.value)


@pytest.mark.parametrize("code", ["403", "413"])
def test_contract_4xx_answers_are_permanent_with_the_message(prism_sendgrid, code):
    with pytest.raises(ConnectorError) as caught:
        PreferringSendGrid(f"code={code}").send(mail(), settings(prism_sendgrid.base_url))
    assert not caught.value.retryable
    assert f"HTTP {code}" in str(caught.value)
    assert "error message" in str(caught.value)  # the contract's example errors[].message


def test_contract_500_is_transient(prism_sendgrid):
    mark = prism_sendgrid.mark()
    with pytest.raises(TransientConnectorError) as caught:
        PreferringSendGrid("code=500").send(mail(), settings(prism_sendgrid.base_url))
    assert not isinstance(caught.value, AmbiguousSendError)
    assert prism_sendgrid.violations(mark) == []


def test_rate_limit_honours_retry_after(stub_server):
    stub = stub_server(lambda request: StubReply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "42"}))
    with pytest.raises(TransientConnectorError) as caught:
        SendGridConnector().send(mail(), settings(stub.url))
    assert caught.value.retry_after == 42
    [request] = stub.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_accepted_send_returns_the_message_id(stub_server):
    stub = stub_server(lambda request: StubReply(202, b"", {"X-Message-Id": "sg-msg-123"}))
    assert SendGridConnector().send(mail(), settings(stub.url)).provider_ref == "sg-msg-123"


def test_lost_answer_is_ambiguous(stub_server):
    stub = stub_server(lambda request: StubReply(202, delay=5))
    with pytest.raises(AmbiguousSendError):
        SendGridConnector().send(mail(), settings(stub.url, timeout=1))
    assert len(stub.requests) == 1


def test_dropped_connection_is_ambiguous(stub_server):
    stub = stub_server(lambda request: StubReply(drop=True))
    with pytest.raises(AmbiguousSendError):
        SendGridConnector().send(mail(), settings(stub.url))


def test_connection_refused_is_transient_not_ambiguous():
    with pytest.raises(TransientConnectorError) as caught:
        SendGridConnector().send(mail(), settings(f"http://127.0.0.1:{free_port()}"))
    assert not isinstance(caught.value, AmbiguousSendError)


@pytest.mark.parametrize("params", [{"subject": "Hi\r\nBcc: x@example.com"}, {"to": "a@example.com\nBcc: b@example.com"},
                                    {"to": "nobody"}, {"subject": ""}, {"text": ""}])
def test_bad_messages_fail_before_any_request(stub_server, params):
    stub = stub_server(lambda request: StubReply(202))
    with pytest.raises(ConnectorError) as caught:
        SendGridConnector().send(mail(**params), settings(stub.url))
    assert not caught.value.retryable
    assert stub.requests == []


def test_api_key_stays_out_of_debug_logs(stub_server, caplog):
    stub = stub_server(lambda request: StubReply(202))
    with caplog.at_level(logging.DEBUG):
        SendGridConnector().send(mail(), settings(stub.url))
    assert "CANARY" not in caplog.text and "li.lei@example.com" not in caplog.text
