"""WeCom, DingTalk and Feishu group robots against local stubs that check signatures as documented."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from connectors.base import ConnectorError, Message, TransientConnectorError
from connectors.dingtalk import DingTalkConnector
from connectors.feishu import FeishuConnector
from connectors.net import AmbiguousSendError
from connectors.wecom import WeComConnector
from tests.integration.connectors.conftest import StubReply, StubRequest

DING_SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
FEISHU_SECRET = "feishu-robot-secret"
TEXT = Message("3:notify_team:1", "x", {"subject": "新投诉", "text": "客户李雷提交了投诉 T-001，请尽快处理。"})
MARKDOWN = Message("3:notify_team:2", "x", {"subject": "新投诉", "markdown": "## 新投诉\n- 客户：李雷\n- 工单：**T-001**"})


def dingtalk_stub(code: int = 0, status: int = 200):
    """DingTalk's check: timestamp within an hour, sign = base64(HMAC-SHA256(secret, ts + "\\n" + secret))."""

    def respond(request: StubRequest) -> StubReply:
        if request.query.get("access_token") != ["tok123"]:
            return StubReply(200, {"errcode": 300001, "errmsg": "token is not exist"})
        ts, sign = request.query["timestamp"][0], request.query["sign"][0]  # parse_qs has url-decoded sign
        digest = hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
        if abs(time.time() * 1000 - int(ts)) > 3_600_000 or sign != base64.b64encode(digest).decode():
            return StubReply(200, {"errcode": 310000, "errmsg": "sign not match"})
        if code:
            return StubReply(status, {"errcode": code, "errmsg": "send too fast, exceed 20 times per minute"})
        return StubReply(200, {"errcode": 0, "errmsg": "ok"})

    return respond


def feishu_stub(code: int = 0, status: int = 200):
    """Feishu's check: sign = base64(HMAC-SHA256(key=ts + "\\n" + secret, msg="")), both in the body."""

    def respond(request: StubRequest) -> StubReply:
        body = request.json()
        ts, sign = body.get("timestamp"), body.get("sign")
        digest = hmac.new(f"{ts}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256).digest()
        if not ts or abs(time.time() - int(ts)) > 3600 or sign != base64.b64encode(digest).decode():
            return StubReply(200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"})
        if code:
            return StubReply(status, {"code": code, "msg": "too many request", "data": {}})
        return StubReply(200, {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})

    return respond


def wecom_stub(code: int = 0):
    def respond(request: StubRequest) -> StubReply:
        if request.query.get("key") != ["wkey-1"]:
            return StubReply(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        return StubReply(200, {"errcode": code, "errmsg": "ok" if not code else "api freq out of limit"})

    return respond


def ding_settings(stub, **extra):
    return {"webhook_url": f"{stub.url}/robot/send?access_token=tok123", "secret": DING_SECRET,
            "allow_private": True, "timeout": 5, **extra}


def feishu_settings(stub, **extra):
    return {"webhook_url": f"{stub.url}/open-apis/bot/v2/hook/abc-123", "secret": FEISHU_SECRET,
            "allow_private": True, "timeout": 5, **extra}


def wecom_settings(stub, **extra):
    return {"webhook_url": f"{stub.url}/cgi-bin/webhook/send?key=wkey-1", "allow_private": True, "timeout": 5, **extra}


# ---------------------------------------------------------------------------- DingTalk


def test_dingtalk_text_is_signed(stub_server):
    stub = stub_server(dingtalk_stub())
    DingTalkConnector().send(TEXT, ding_settings(stub))
    [request] = stub.requests
    assert request.path == "/robot/send"
    assert request.json() == {"msgtype": "text", "text": {"content": "新投诉\n客户李雷提交了投诉 T-001，请尽快处理。"}}


def test_dingtalk_markdown(stub_server):
    stub = stub_server(dingtalk_stub())
    DingTalkConnector().send(MARKDOWN, ding_settings(stub))
    expected = {"msgtype": "markdown", "markdown": {"title": "新投诉", "text": MARKDOWN.params["markdown"]}}
    assert stub.requests[0].json() == expected


def test_dingtalk_wrong_secret_is_permanent(stub_server):
    stub = stub_server(dingtalk_stub())
    with pytest.raises(ConnectorError) as caught:
        DingTalkConnector().send(TEXT, ding_settings(stub, secret="SECwrong"))
    assert not caught.value.retryable and "310000" in str(caught.value)


@pytest.mark.parametrize("code", [130101, 410100])
def test_dingtalk_rate_limit_is_transient(stub_server, code):
    stub = stub_server(dingtalk_stub(code))
    with pytest.raises(TransientConnectorError) as caught:
        DingTalkConnector().send(TEXT, ding_settings(stub))
    assert caught.value.retry_after == 600  # DingTalk throttles for ten minutes


# ---------------------------------------------------------------------------- Feishu


def test_feishu_text_is_signed_in_the_body(stub_server):
    stub = stub_server(feishu_stub())
    FeishuConnector().send(TEXT, feishu_settings(stub))
    body = stub.requests[0].json()
    assert body["msg_type"] == "text" and body["content"] == {"text": "新投诉\n客户李雷提交了投诉 T-001，请尽快处理。"}
    assert stub.requests[0].query == {}  # nothing in the URL


def test_feishu_markdown_goes_as_a_card(stub_server):
    stub = stub_server(feishu_stub())
    FeishuConnector().send(MARKDOWN, feishu_settings(stub))
    body = stub.requests[0].json()
    assert body["msg_type"] == "interactive"
    assert body["card"]["elements"] == [{"tag": "markdown", "content": MARKDOWN.params["markdown"]}]
    assert body["card"]["header"]["title"]["content"] == "新投诉"


def test_feishu_wrong_secret_is_permanent(stub_server):
    stub = stub_server(feishu_stub())
    with pytest.raises(ConnectorError) as caught:
        FeishuConnector().send(TEXT, feishu_settings(stub, secret="nope"))
    assert not caught.value.retryable and "19021" in str(caught.value)


@pytest.mark.parametrize("code, status", [(9499, 200), (11232, 400)])
def test_feishu_rate_limit_is_transient_even_with_http_400(stub_server, code, status):
    stub = stub_server(feishu_stub(code, status))
    with pytest.raises(TransientConnectorError) as caught:
        FeishuConnector().send(TEXT, feishu_settings(stub))
    assert caught.value.retry_after == 60


# ---------------------------------------------------------------------------- WeCom


def test_wecom_text_and_markdown(stub_server):
    stub = stub_server(wecom_stub())
    WeComConnector().send(TEXT, wecom_settings(stub))
    WeComConnector().send(MARKDOWN, wecom_settings(stub))
    assert stub.requests[0].json() == {"msgtype": "text", "text": {"content": "新投诉\n客户李雷提交了投诉 T-001，请尽快处理。"}}
    assert stub.requests[1].json() == {"msgtype": "markdown", "markdown": {"content": MARKDOWN.params["markdown"]}}


def test_wecom_rate_limit_is_transient(stub_server):
    stub = stub_server(wecom_stub(45009))
    with pytest.raises(TransientConnectorError) as caught:
        WeComConnector().send(TEXT, wecom_settings(stub))
    assert caught.value.retry_after == 60


def test_wecom_wrong_key_is_permanent(stub_server):
    stub = stub_server(wecom_stub())
    with pytest.raises(ConnectorError) as caught:
        WeComConnector().send(TEXT, wecom_settings(stub, webhook_url=f"{stub.url}/cgi-bin/webhook/send?key=other"))
    assert not caught.value.retryable and "93000" in str(caught.value)


def test_wecom_text_over_the_limit_is_refused_without_a_request(stub_server):
    stub = stub_server(wecom_stub())
    long = Message("k", "x", {"text": "长" * 700})  # 2100 bytes in UTF-8
    with pytest.raises(ConnectorError):
        WeComConnector().send(long, wecom_settings(stub))
    assert stub.requests == []


# ---------------------------------------------------------------------------- all three


ROBOTS = [(WeComConnector, wecom_settings), (DingTalkConnector, ding_settings), (FeishuConnector, feishu_settings)]


@pytest.mark.parametrize("connector, make_settings", ROBOTS)
def test_server_errors_are_transient(stub_server, connector, make_settings):
    stub = stub_server(lambda request: StubReply(502, b"<html>bad gateway</html>"))
    with pytest.raises(TransientConnectorError):
        connector().send(TEXT, make_settings(stub))


@pytest.mark.parametrize("connector, make_settings", ROBOTS)
def test_timeouts_are_ambiguous_and_bounded(stub_server, connector, make_settings):
    stub = stub_server(lambda request: StubReply(200, {"errcode": 0}, delay=5))
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError):
        connector().send(TEXT, make_settings(stub, timeout=1))
    assert time.monotonic() - started < 3
    assert not connector.idempotent  # a lost answer must not be resent blindly to the group


@pytest.mark.parametrize("connector, make_settings", ROBOTS)
def test_a_non_json_answer_is_an_error(stub_server, connector, make_settings):
    stub = stub_server(lambda request: StubReply(200, b"<html>login page</html>"))
    with pytest.raises(ConnectorError) as caught:
        connector().send(TEXT, make_settings(stub))
    assert not caught.value.retryable


@pytest.mark.parametrize("connector, make_settings", ROBOTS)
def test_private_addresses_need_the_admin_opt_in(stub_server, connector, make_settings):
    stub = stub_server(lambda request: StubReply(200, {"errcode": 0, "code": 0}))
    settings = make_settings(stub, allow_private=False)
    with pytest.raises(ValueError):
        connector().check_settings(settings)
    with pytest.raises(ConnectorError):
        connector().send(TEXT, settings)
    assert stub.requests == []


@pytest.mark.parametrize("connector", [WeComConnector, DingTalkConnector, FeishuConnector])
def test_empty_message_is_refused(connector):
    with pytest.raises(ConnectorError):
        connector().send(Message("k", "x", {"text": "  "}), {"webhook_url": "https://example.com/x"})


MENTION = Message("task:7:reminder_before:1:chen:im", "x", {"subject": "任务即将到期", "text": "打开任务：https://care.example.com/tasks/7",
                                                            "mention": ["chen01"]})


def test_mentions_as_each_vendor_documents_them(stub_server):
    ding, wecom, feishu = stub_server(dingtalk_stub()), stub_server(wecom_stub()), stub_server(feishu_stub())
    DingTalkConnector().send(MENTION, ding_settings(ding))
    WeComConnector().send(MENTION, wecom_settings(wecom))
    FeishuConnector().send(MENTION, feishu_settings(feishu))
    body = ding.requests[0].json()
    assert body["at"] == {"atUserIds": ["chen01"]} and body["text"]["content"].endswith("\n@chen01")
    assert wecom.requests[0].json()["text"]["mentioned_list"] == ["chen01"]
    assert feishu.requests[0].json()["content"]["text"].endswith('\n<at user_id="chen01"></at>')


@pytest.mark.parametrize("connector, make_stub, make_settings", [
    (WeComConnector, wecom_stub, wecom_settings), (DingTalkConnector, dingtalk_stub, ding_settings),
    (FeishuConnector, feishu_stub, feishu_settings)])
@pytest.mark.parametrize("person", ["x> [click](https://evil.example)", 'a"></at><at id="all', "@all <@everyone>", "陈"])
def test_a_mention_that_is_not_an_im_id_is_refused_before_any_request(stub_server, connector, make_stub, make_settings,
                                                                      person):
    stub = stub_server(make_stub())
    markdown = Message("k", "x", {"subject": "提醒", "markdown": "**任务**", "mention": [person]})
    for message in (markdown, Message("k", "x", {**MENTION.params, "mention": ["chen01", person]})):
        with pytest.raises(ConnectorError, match="is not an IM id") as refused:
            connector().send(message, make_settings(stub))
        assert not refused.value.retryable and person[:20] in str(refused.value)
    assert stub.requests == []
