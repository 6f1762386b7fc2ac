"""The aliyun_sms connector, through the real Aliyun SDK, against a local dysmsapi stub.

The stub recomputes the ACS3-HMAC-SHA256 signature the way Alibaba Cloud documents it (V3
request signature), so a request signed with the wrong secret is refused like the real API does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from connectors.aliyun_sms import AliyunSmsConnector
from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.net import AmbiguousSendError
from tests.integration.connectors.conftest import StubReply, StubRequest, free_port

KEY_ID, KEY_SECRET = "LTAI5tCareflowTest", "CANARY-aliyun-secret"


def acs3_signature_ok(request: StubRequest, secret: str) -> bool:
    """Alibaba Cloud V3: HMAC-SHA256 over the hashed canonical request, keyed with the AccessKey secret."""
    authorization = request.headers["Authorization"]
    algorithm, _, rest = authorization.partition(" ")
    fields = dict(part.split("=", 1) for part in rest.split(","))
    signed_headers = fields["SignedHeaders"].split(";")
    query = sorted(parse_qsl(urlsplit(request.target).query, keep_blank_values=True))
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    canonical_headers = "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed_headers)
    payload_hash = hashlib.sha256(request.body).hexdigest()
    canonical = "\n".join(["POST", "/", canonical_query, canonical_headers, fields["SignedHeaders"], payload_hash])
    to_sign = f"{algorithm}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return (algorithm == "ACS3-HMAC-SHA256" and fields["Credential"] == KEY_ID
            and request.headers["x-acs-content-sha256"] == payload_hash and hmac.compare_digest(expected, fields["Signature"]))


def dysmsapi(code: str = "OK", status: int = 200):
    def respond(request: StubRequest) -> StubReply:
        if not acs3_signature_ok(request, KEY_SECRET):
            return StubReply(400, {"Code": "SignatureDoesNotMatch", "RequestId": "R1",
                                   "Message": "Specified signature does not match our calculation."})
        if request.headers["x-acs-action"] != "SendSms":
            return StubReply(400, {"Code": "InvalidAction", "Message": "no", "RequestId": "R1"})
        if code == "OK":
            return StubReply(200, {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "R2"})
        return StubReply(status, {"Code": code, "Message": f"{code} happened", "RequestId": "R3"})

    return respond


def settings(stub_url: str, **extra: object) -> dict[str, object]:
    return {"access_key_id": KEY_ID, "access_key_secret": KEY_SECRET, "sign_name": "阿里云短信测试",
            "template_code": "SMS_154950909", "endpoint": stub_url.removeprefix("http://"), "protocol": "http",
            "timeout": 3, **extra}


def sms(**params: object) -> Message:
    return Message("7:welcome_sms:1", "aliyun_sms", {"to": "+8613800138000", "text": "李雷您好，欢迎加入！", **params})


def sent(stub) -> dict[str, str]:
    return {k: v[0] for k, v in stub.requests[-1].query.items()}


def test_send_with_a_valid_signature(stub_server):
    stub = stub_server(dysmsapi())
    delivery = AliyunSmsConnector().send(sms(), settings(stub.url, append_unsubscribe=True))
    query = sent(stub)
    assert query["PhoneNumbers"] == "13800138000"
    assert query["SignName"] == "阿里云短信测试"
    assert query["TemplateCode"] == "SMS_154950909"
    assert json.loads(query["TemplateParam"]) == {"content": "李雷您好，欢迎加入！回T退订"}
    assert query["OutId"] == "7:welcome_sms:1"
    assert delivery.provider_ref == "900619746936498440^0"


def test_message_template_and_params_override(stub_server):
    stub = stub_server(dysmsapi())
    AliyunSmsConnector().send(
        sms(template_code="SMS_2", template_params={"name": "李雷", "code": 1234}, to="+85291234567"), settings(stub.url)
    )
    query = sent(stub)
    assert query["TemplateCode"] == "SMS_2"
    assert json.loads(query["TemplateParam"]) == {"name": "李雷", "code": "1234"}
    assert query["PhoneNumbers"] == "85291234567"  # outside the mainland: country code + number


def test_wrong_secret_is_permanent(stub_server):
    stub = stub_server(dysmsapi())
    with pytest.raises(ConnectorError) as caught:
        AliyunSmsConnector().send(sms(), settings(stub.url, access_key_secret="wrong"))
    assert not caught.value.retryable
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert KEY_SECRET not in str(caught.value)


@pytest.mark.parametrize("code, status, retryable", [
    ("isv.BUSINESS_LIMIT_CONTROL", 200, True),
    ("isp.SYSTEM_ERROR", 200, True),
    ("isv.MOBILE_NUMBER_ILLEGAL", 200, False),
    ("isv.SMS_TEMPLATE_ILLEGAL", 200, False),
    ("isv.AMOUNT_NOT_ENOUGH", 200, False),
    ("ServiceUnavailable", 503, True),
    ("Throttling.User", 400, True),
    ("InvalidAccessKeyId.NotFound", 404, False),
])
def test_business_and_http_errors(stub_server, code, status, retryable):
    stub = stub_server(dysmsapi(code, status))
    with pytest.raises(ConnectorError) as caught:
        AliyunSmsConnector().send(sms(), settings(stub.url))
    assert caught.value.retryable is retryable
    assert code in str(caught.value)


def test_timeout_is_ambiguous_and_the_sdk_does_not_retry(stub_server):
    stub = stub_server(lambda request: StubReply(200, {"Code": "OK"}, delay=5))
    with pytest.raises(AmbiguousSendError):
        AliyunSmsConnector().send(sms(), settings(stub.url, timeout=1))
    assert len(stub.requests) == 1


def test_connection_refused_is_transient_not_ambiguous():
    with pytest.raises(TransientConnectorError) as caught:
        AliyunSmsConnector().send(sms(), settings(f"http://127.0.0.1:{free_port()}"))
    assert not isinstance(caught.value, AmbiguousSendError)


def test_length_counts_the_signature(stub_server):
    stub = stub_server(dysmsapi())
    # 【阿里云短信测试】 is 9 characters: 61 + 9 = 70 fits one part, 62 + 9 needs two.
    AliyunSmsConnector().send(sms(text="好" * 61), settings(stub.url, max_segments=1))
    with pytest.raises(ConnectorError) as caught:
        AliyunSmsConnector().send(sms(text="好" * 62), settings(stub.url, max_segments=1))
    assert not caught.value.retryable
    assert len(stub.requests) == 1


@pytest.mark.parametrize("to", ["13800138000", "+86-138", "", None])
def test_bad_numbers_fail_without_a_request(stub_server, to):
    stub = stub_server(dysmsapi())
    with pytest.raises(ConnectorError):
        AliyunSmsConnector().send(sms(to=to), settings(stub.url))
    assert stub.requests == []


def test_without_the_sdk_the_error_says_how_to_install_it(monkeypatch):
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "alibabacloud_dysmsapi20170525", None)
    with pytest.raises(ConnectorError) as caught:
        AliyunSmsConnector().send(sms(), settings("http://127.0.0.1:1"))
    assert not caught.value.retryable
    assert "pip install careflow[aliyun]" in str(caught.value)
