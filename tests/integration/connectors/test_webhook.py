"""The webhook connector against a local receiver that checks Standard Webhooks signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.net import AmbiguousSendError
from connectors.webhook import WebhookConnector
from tests.integration.connectors.conftest import StubReply, StubRequest

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def verify_standard_webhook(request: StubRequest, secret: str, tolerance: int = 300) -> bool:
    """What a receiver does, per the Standard Webhooks specification."""
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + request.body, hashlib.sha256).digest())
    offered = [part.split(",", 1)[1] for part in request.headers["webhook-signature"].split(" ") if part.startswith("v1,")]
    return any(hmac.compare_digest(expected.decode(), sig) for sig in offered)


def receiver(status: int = 200, **reply):
    def respond(request: StubRequest) -> StubReply:
        return StubReply(status, **reply) if verify_standard_webhook(request, SECRET) else StubReply(401, b"bad signature")

    return respond


def settings(url: str, **extra):
    return {"url": url + "/hooks/careflow", "secret": SECRET, "allow_private": True, "timeout": 5, **extra}


MESSAGE = Message("12:notify_crm:1", "webhook", {"event": "complaint.opened", "ticket": "T-001", "note": "客户投诉"},
                  {"id": 42, "name": "李雷", "phone": "+8613800138000"})


def test_signed_delivery(stub_server):
    stub = stub_server(receiver(204))
    delivery = WebhookConnector().send(MESSAGE, settings(stub.url, headers={"X-Tenant": "acme"}))
    [request] = stub.requests
    assert request.path == "/hooks/careflow"
    assert request.headers["webhook-id"] == "12:notify_crm:1"
    assert request.headers["Idempotency-Key"] == "12:notify_crm:1"
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.json() == {"event": "complaint.opened", "effect_key": "12:notify_crm:1", "customer_id": 42,
                              "params": {"ticket": "T-001", "note": "客户投诉"}}
    assert delivery.provider_ref == "12:notify_crm:1"


def test_plain_secret_is_used_as_utf8_bytes(stub_server):
    plain = "a-plain-secret-of-some-length"

    def respond(request: StubRequest) -> StubReply:
        return StubReply(200 if verify_standard_webhook(request, plain) else 401)

    stub = stub_server(respond)
    WebhookConnector().send(MESSAGE, settings(stub.url, secret=plain))


def test_retries_carry_the_same_id_and_a_fresh_signature(stub_server):
    stub = stub_server(receiver(200))
    connector = WebhookConnector()
    connector.send(MESSAGE, settings(stub.url))
    connector.send(MESSAGE, settings(stub.url))
    first, second = stub.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


def test_a_tampered_body_fails_verification():
    stub_request = StubRequest("POST", "/", {}, {}, b"")
    body = json.dumps({"x": 1}).encode()
    from connectors.webhook import signature

    ts = str(int(time.time()))
    stub_request.headers = {"webhook-id": "k", "webhook-timestamp": ts, "webhook-signature": signature(SECRET, "k", ts, body)}
    stub_request.body = body
    assert verify_standard_webhook(stub_request, SECRET)
    stub_request.body = body.replace(b"1", b"2")
    assert not verify_standard_webhook(stub_request, SECRET)


@pytest.mark.parametrize("status, retryable", [(500, True), (503, True), (429, True), (408, True),
                                               (400, False), (401, False), (404, False), (410, False)])
def test_status_handling(stub_server, status, retryable):
    stub = stub_server(receiver(status, body=b"receiver says no", headers={"Retry-After": "30"}))
    with pytest.raises(ConnectorError) as caught:
        WebhookConnector().send(MESSAGE, settings(stub.url))
    assert caught.value.retryable is retryable
    if status == 429:
        assert caught.value.retry_after == 30
    if not retryable:
        assert "receiver says no" in str(caught.value)


def test_redirect_is_an_error_and_not_followed(stub_server):
    target = stub_server(receiver(200))
    redirecting = stub_server(lambda request: StubReply(302, headers={"Location": target.url + "/hooks/careflow"}))
    with pytest.raises(ConnectorError) as caught:
        WebhookConnector().send(MESSAGE, settings(redirecting.url))
    assert not caught.value.retryable
    assert target.requests == []


def test_slow_receiver_times_out_as_ambiguous_within_the_timeout(stub_server):
    stub = stub_server(lambda request: StubReply(200, delay=5))
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError) as caught:
        WebhookConnector().send(MESSAGE, settings(stub.url, timeout=1))
    assert time.monotonic() - started < 3
    assert caught.value.retryable  # safe: the receiver de-duplicates on webhook-id
    assert WebhookConnector.idempotent


def test_huge_answer_is_cut_and_still_a_success(stub_server):
    stub = stub_server(lambda request: StubReply(200, b"y" * 5_000_000))
    delivery = WebhookConnector().send(MESSAGE, settings(stub.url))
    assert delivery.detail["status"] == 200


def test_private_address_refused_unless_allowed(stub_server):
    stub = stub_server(receiver(200))
    with pytest.raises(ConnectorError) as caught:
        WebhookConnector().send(MESSAGE, settings(stub.url, allow_private=False))
    assert not caught.value.retryable
    assert stub.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data/",
                                 "http://[::ffff:10.0.0.1]/", "http://2130706433/", "ftp://example.com/"])
def test_save_time_check(url):
    with pytest.raises(ValueError):
        WebhookConnector().check_settings({"url": url, "secret": SECRET})


def test_save_time_check_accepts_an_allowed_private_url():
    WebhookConnector().check_settings({"url": "http://10.1.2.3:8080/hook", "secret": SECRET, "allow_private": True})


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nInjected: yes"}, {"Bad Name": "x"}, {"Host": "evil.example.com"}, {"webhook-id": "forged"},
    {"Content-Length": "0"}, {"X-Line": "a\u2028b"},
])
def test_bad_extra_headers_are_refused(headers, stub_server):
    stub = stub_server(receiver(200))
    with pytest.raises(ValueError):
        WebhookConnector().check_settings({"url": "http://10.1.2.3/", "secret": SECRET, "allow_private": True,
                                           "headers": headers})
    with pytest.raises(ConnectorError) as caught:
        WebhookConnector().send(MESSAGE, settings(stub.url, headers=headers))
    assert not caught.value.retryable
    assert stub.requests == []


def test_connection_refused_is_transient_not_ambiguous():
    from tests.integration.connectors.conftest import free_port

    with pytest.raises(TransientConnectorError) as caught:
        WebhookConnector().send(MESSAGE, settings(f"http://127.0.0.1:{free_port()}"))
    assert not isinstance(caught.value, AmbiguousSendError)
