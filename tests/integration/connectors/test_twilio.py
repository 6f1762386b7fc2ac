"""The twilio_sms connector against Prism serving Twilio's published API contract.

The contract defines only 201 for sending a message, so 429 and 5xx answers come from local
stubs (Prism answers 404 for a ``Prefer: code=`` the contract lacks).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.net import AmbiguousSendError
from connectors.twilio_sms import TwilioSmsConnector
from tests.integration.connectors.conftest import StubReply, free_port

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "CANARY-twilio-token"


def sms(text: str = "李雷您好，欢迎加入！您的客户经理将尽快与您联系。", to: str = "+8613800138000") -> Message:
    return Message("7:welcome_sms:1", "twilio_sms", {"to": to, "text": text, "channel": "sms"})


def settings(base_url: str, **extra: object) -> dict[str, object]:
    return {"account_sid": SID, "auth_token": TOKEN, "from_number": "+14155552345", "base_url": base_url, "timeout": 10,
            **extra}


def test_valid_send_is_accepted_by_the_contract(prism_twilio):
    mark = prism_twilio.mark()
    delivery = TwilioSmsConnector().send(sms(), settings(prism_twilio.base_url))
    assert delivery.provider_ref and delivery.provider_ref.startswith("SM")
    assert prism_twilio.violations(mark) == []


def test_messaging_service_and_status_callback_fit_the_contract(prism_twilio):
    mark = prism_twilio.mark()
    TwilioSmsConnector().send(sms(), settings(
        prism_twilio.base_url, from_number=None, messaging_service_sid="MG0123456789abcdef0123456789abcdef",
        status_callback="https://careflow.example.com/hooks/twilio",
    ))
    assert prism_twilio.violations(mark) == []


def test_a_request_the_contract_rejects_is_permanent(prism_twilio):
    mark = prism_twilio.mark()
    with pytest.raises(ConnectorError) as caught:
        TwilioSmsConnector().send(sms(), settings(prism_twilio.base_url, account_sid="ACnot-a-valid-sid"))
    assert not caught.value.retryable
    assert "HTTP 422" in str(caught.value)
    assert prism_twilio.violations(mark)


@pytest.mark.parametrize("missing", ["auth_token", "account_sid"])
def test_missing_credentials_are_permanent_without_a_request(stub_server, missing):
    stub = stub_server(lambda request: StubReply(201, {"sid": "SMx"}))
    with pytest.raises(ConnectorError) as caught:
        TwilioSmsConnector().send(sms(), settings(stub.url, **{missing: ""}))
    assert not caught.value.retryable
    assert stub.requests == []


@pytest.mark.parametrize("to", ["13800138000", "+86 138 0013 8000", "+0123456789", "not a phone", ""])
def test_bad_numbers_fail_without_a_request(stub_server, to):
    stub = stub_server(lambda request: StubReply(201, {"sid": "SMx"}))
    with pytest.raises(ConnectorError) as caught:
        TwilioSmsConnector().send(sms(to=to), settings(stub.url))
    assert not caught.value.retryable
    assert stub.requests == []


def test_request_shape(stub_server):
    stub = stub_server(lambda request: StubReply(201, {"sid": "SM123", "status": "queued"}))
    delivery = TwilioSmsConnector().send(sms(), settings(stub.url, append_unsubscribe=True,
                                                         status_callback="https://cf.example.com/tw?x=1"))
    [request] = stub.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    assert form["To"] == "+8613800138000" and form["From"] == "+14155552345"
    assert form["Body"].endswith("联系。回T退订")
    assert form["StatusCallback"] == "https://cf.example.com/tw?x=1&effect_key=7%3Awelcome_sms%3A1"
    assert request.headers["I-Twilio-Idempotency-Token"] == "7:welcome_sms:1"
    assert request.headers["Authorization"].startswith("Basic ")
    assert delivery.provider_ref == "SM123"


@pytest.mark.parametrize("status, retryable", [(429, True), (500, True), (503, True), (400, False), (401, False), (404, False)])
def test_error_answers(stub_server, status, retryable):
    answer = {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": status}
    stub = stub_server(lambda request: StubReply(status, answer, {"Retry-After": "5"}))
    with pytest.raises(ConnectorError) as caught:
        TwilioSmsConnector().send(sms(), settings(stub.url))
    assert caught.value.retryable is retryable
    assert "not a valid phone number" in str(caught.value) and "21211" in str(caught.value)
    assert TOKEN not in str(caught.value)
    if status == 429:
        assert caught.value.retry_after == 5


def test_timeout_is_ambiguous(stub_server):
    stub = stub_server(lambda request: StubReply(201, {"sid": "SM1"}, delay=5))
    with pytest.raises(AmbiguousSendError):
        TwilioSmsConnector().send(sms(), settings(stub.url, timeout=1))
    assert not TwilioSmsConnector.idempotent


def test_connection_refused_is_transient_not_ambiguous():
    with pytest.raises(TransientConnectorError) as caught:
        TwilioSmsConnector().send(sms(), settings(f"http://127.0.0.1:{free_port()}"))
    assert not isinstance(caught.value, AmbiguousSendError)


def test_text_over_the_part_limit_is_permanent(stub_server):
    stub = stub_server(lambda request: StubReply(201, {"sid": "SM1"}))
    with pytest.raises(ConnectorError) as caught:
        TwilioSmsConnector().send(sms("长" * 200), settings(stub.url, max_segments=2))
    assert not caught.value.retryable and "max_segments" in str(caught.value)
    assert stub.requests == []


def test_accepted_without_a_sid_is_still_a_delivery(stub_server):
    stub = stub_server(lambda request: StubReply(201, b"<not json>"))
    delivery = TwilioSmsConnector().send(sms(), settings(stub.url))
    assert delivery.provider_ref is None  # sent: failing would invite a second text
