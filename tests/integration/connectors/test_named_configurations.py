"""Flows address named configurations (``feishu/care-team``): two robots of one type, two groups.

Each Feishu stub checks the signature with its own secret, the way Feishu documents it, so a
message signed with the other group's secret (or sent to the other group) would be refused.
Runs on SQLite and PostgreSQL through the ``cf`` fixture.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from engine.errors import DefinitionInvalid
from engine.store.models import Incident, OutboxMessage, TimelineEntry
from tests.integration.connectors.conftest import StubReply, StubRequest

CARE_SECRET = "care-team-signing-secret"
VIP_SECRET = "vip-desk-signing-secret"

FLOW = """
id: notify_groups
name: {zh: 通知两个群, en: Notify two groups}
steps:
  - id: tell_care
    type: action
    connector: feishu/care-team
    params:
      subject: {zh: "新客户", en: "New customer"}
      text: {zh: "{{ customer.name }} 已建档", en: "{{ customer.name }} was registered"}
    next: tell_vip
  - id: tell_vip
    type: action
    connector: feishu/vip-desk
    params:
      markdown: "**{{ customer.name }}** 是 A 类客户"
    next: done
  - id: done
    type: end
"""


def feishu_group(secret: str, script: list[StubReply] | None = None):
    """A Feishu robot that accepts only bodies signed with ``secret``; ``script`` answers first."""
    pending = list(script or [])

    def respond(request: StubRequest) -> StubReply:
        body = request.json()
        ts, sign = body.get("timestamp"), body.get("sign")
        digest = hmac.new(f"{ts}\n{secret}".encode(), b"", hashlib.sha256).digest()
        if not ts or abs(time.time() - int(ts)) > 3600 or sign != base64.b64encode(digest).decode():
            return StubReply(200, {"code": 19021, "msg": "sign match fail"})
        if pending:
            return pending.pop(0)
        return StubReply(200, {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})

    return respond


def attach(cf, name, stub, secret, **extra):  # type: ignore[no-untyped-def]
    cf.save_connector(name, "feishu", {"webhook_url": f"{stub.url}/open-apis/bot/v2/hook/{name}", "secret": secret,
                                       "allow_private": True, "timeout": 5, **extra}, by="admin")


def start(cf):  # type: ignore[no-untyped-def]
    cid = cf.create_customer({"name": "李雷", "phone": "+8613800138000", "region": "上海", "owner": "wang"},
                             fire_triggers=False)
    return cid, cf.start("notify_groups", customer_id=cid)


def outbox(cf):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return {m.step_id: m for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))}


def open_incidents(cf):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.scalars(select(Incident).where(Incident.status == "open").order_by(Incident.id)))


def test_two_configurations_of_one_type_reach_their_own_groups(cf, stub_server):
    care, vip = stub_server(feishu_group(CARE_SECRET)), stub_server(feishu_group(VIP_SECRET))
    attach(cf, "care-team", care, CARE_SECRET)
    attach(cf, "vip-desk", vip, VIP_SECRET)
    cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")
    cid, _iid = start(cf)
    report = cf.tick()
    assert report["outbox"]["sent"] == 2, cf.delivery_log()
    [to_care] = care.requests
    [to_vip] = vip.requests
    assert to_care.path == "/open-apis/bot/v2/hook/care-team"
    assert to_care.json()["content"] == {"text": "新客户\n李雷 已建档"}
    assert to_vip.path == "/open-apis/bot/v2/hook/vip-desk"
    assert to_vip.json()["card"]["elements"] == [{"tag": "markdown", "content": "**李雷** 是 A 类客户"}]
    rows = outbox(cf)
    assert {step: (m.connector, m.status) for step, m in rows.items()} == {
        "tell_care": ("feishu/care-team", "sent"), "tell_vip": ("feishu/vip-desk", "sent")}
    with cf.session() as s:
        entries = list(s.scalars(select(TimelineEntry).where(TimelineEntry.customer_id == cid,
                                                             TimelineEntry.kind == "message_sent")))
    assert sorted(e.data["connector"] for e in entries) == ["feishu/care-team", "feishu/vip-desk"]
    assert {e.data["status"] for e in entries} == {"sent"}


def test_a_missing_configuration_is_an_incident_naming_it_and_retryable_once_attached(cf, stub_server):
    care, vip = stub_server(feishu_group(CARE_SECRET)), stub_server(feishu_group(VIP_SECRET))
    attach(cf, "care-team", care, CARE_SECRET)
    cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")  # vip-desk not attached yet: deploy accepts it
    start(cf)
    cf.tick()
    rows = outbox(cf)
    assert rows["tell_care"].status == "sent" and rows["tell_vip"].status == "failed"
    [incident] = open_incidents(cf)
    assert incident.step_id == "tell_vip" and incident.kind == "delivery_failed"
    assert "'feishu/vip-desk'" in incident.message and "no connector configuration named 'vip-desk'" in incident.message
    assert vip.requests == []

    attach(cf, "vip-desk", vip, VIP_SECRET)
    cf.resolve_incident(incident.id, "retry", "admin")
    cf.tick()
    assert outbox(cf)["tell_vip"].status == "sent"
    assert len(vip.requests) == 1 and len(care.requests) == 1
    assert open_incidents(cf) == []


def test_a_disabled_configuration_is_an_incident_until_enabled(cf, stub_server):
    care, vip = stub_server(feishu_group(CARE_SECRET)), stub_server(feishu_group(VIP_SECRET))
    attach(cf, "care-team", care, CARE_SECRET)
    attach(cf, "vip-desk", vip, VIP_SECRET)
    cf.set_connector_enabled("vip-desk", False)
    cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")
    start(cf)
    cf.tick()
    [incident] = open_incidents(cf)
    assert "'vip-desk' is disabled" in incident.message
    cf.set_connector_enabled("vip-desk", True)
    cf.resolve_incident(incident.id, "retry", "admin")
    cf.tick()
    assert outbox(cf)["tell_vip"].status == "sent" and len(vip.requests) == 1


def test_deploy_refuses_a_configuration_of_another_type(cf, stub_server):
    stub = stub_server(feishu_group(CARE_SECRET))
    cf.save_connector("vip-desk", "wecom", {"webhook_url": f"{stub.url}/cgi-bin/webhook/send?key=k",
                                             "allow_private": True})
    with pytest.raises(DefinitionInvalid) as caught:
        cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (14, 16)  # the connector of tell_vip
    assert "'vip-desk' is a wecom connector, not feishu; did you mean 'wecom/vip-desk'?" in problem.message


def test_rate_limit_waits_for_retry_after_and_other_4xx_are_not_retried(cf, clock, stub_server):
    limited = StubReply(429, b"slow down", {"Retry-After": "120"})
    care = stub_server(feishu_group(CARE_SECRET, [limited]))
    vip = stub_server(feishu_group(VIP_SECRET, [StubReply(400, b"bad request")]))
    attach(cf, "care-team", care, CARE_SECRET)
    attach(cf, "vip-desk", vip, VIP_SECRET)
    cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")
    start(cf)
    report = cf.tick()
    assert (report["outbox"]["retried"], report["outbox"]["failed"]) == (1, 1)
    rows = outbox(cf)
    assert rows["tell_care"].status == "pending"
    assert rows["tell_care"].next_attempt_at - clock.now() == timedelta(seconds=120)  # the provider's wait, no jitter
    assert rows["tell_vip"].status == "failed" and "HTTP 400" in (rows["tell_vip"].last_error or "")
    assert len(vip.requests) == 1  # a 400 is not retried

    clock.set(clock.now() + timedelta(seconds=119))
    cf.tick()
    assert len(care.requests) == 1
    clock.set(clock.now() + timedelta(seconds=1))
    cf.tick()
    assert outbox(cf)["tell_care"].status == "sent" and len(care.requests) == 2
    assert len(vip.requests) == 1


def test_retry_after_zero_does_not_burn_every_attempt_in_one_tick(cf, clock, stub_server):
    care = stub_server(feishu_group(CARE_SECRET, [StubReply(503, b"busy", {"Retry-After": "0"})] * 3))
    vip = stub_server(feishu_group(VIP_SECRET))
    attach(cf, "care-team", care, CARE_SECRET)
    attach(cf, "vip-desk", vip, VIP_SECRET)
    cf.deploy_flow_text(FLOW, "notify_groups.yaml", by="ops")
    start(cf)
    cf.tick()
    assert len(care.requests) == 1 and outbox(cf)["tell_care"].attempts == 1


CHANNEL_FLOW = """
id: two_mail_routes
name: {zh: 两条邮件线路, en: Two mail routes}
steps:
  - id: receipt
    type: action
    connector: email
    params: {subject: 回执, text: 已收到您的申请。}
    next: offer
  - id: offer
    type: action
    connector: email/marketing
    params: {subject: 会员优惠, text: 本周会员 8 折。, category: marketing}
    next: done
  - id: done
    type: end
"""


def test_a_named_channel_configuration_routes_through_its_own_provider(cf, smtp_server):
    service, marketing = smtp_server("none"), smtp_server("none")
    cf.save_connector("smtp-service", "smtp", service.settings(), by="admin")
    cf.save_connector("smtp-marketing", "smtp", marketing.settings(from_address="offers@example.com"), by="admin")
    cf.save_connector("email", "email", {"provider": "smtp-service"})
    cf.save_connector("marketing", "email", {"provider": "smtp-marketing", "marketing_per_week": 1})
    cf.deploy_flow_text(CHANNEL_FLOW, "two_mail_routes.yaml", by="ops")
    cid = cf.create_customer({"name": "韩梅梅", "email": "meimei@example.com", "region": "北京", "owner": "li"},
                             fire_triggers=False)
    for _ in range(2):
        cf.start("two_mail_routes", customer_id=cid)
    cf.tick()
    assert [m.rcpt_tos for m in service.handler.messages] == [["meimei@example.com"]] * 2
    assert [m.mail_from for m in marketing.handler.messages] == ["offers@example.com"]  # the cap of 1 a week
    statuses = sorted((m.step_id, m.status) for m in outbox_rows(cf))
    assert statuses == [("offer", "sent"), ("offer", "suppressed"), ("receipt", "sent"), ("receipt", "sent")]


def outbox_rows(cf):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.scalars(select(OutboxMessage)))


def test_the_longest_configuration_name_fits_the_outbox(cf, stub_server):
    name = "c" + "x" * 63
    care = stub_server(feishu_group(CARE_SECRET))
    attach(cf, name, care, CARE_SECRET)
    flow = FLOW.replace("feishu/care-team", f"feishu/{name}").replace("connector: feishu/vip-desk", "connector: timeline") \
        .replace('markdown: "**{{ customer.name }}** 是 A 类客户"', 'text: "已通知"')
    cf.deploy_flow_text(flow, "notify_groups.yaml", by="ops")
    start(cf)
    cf.tick()
    assert outbox(cf)["tell_care"].status == "sent" and len(care.requests) == 1


def test_a_type_named_without_any_configuration_says_what_to_attach(cf):
    flow = FLOW.replace("connector: feishu/care-team", "connector: feishu")
    cf.deploy_flow_text(flow, "notify_groups.yaml", by="ops")
    start(cf)
    cf.tick()
    messages = sorted(i.message for i in open_incidents(cf))
    assert messages[0].startswith("no connector configuration named 'feishu' is attached")
    assert "'feishu/vip-desk'" in messages[1]
