"""Each API area end to end: the happy path and its error paths, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from engine.core import Careflow
from engine.store.models import Customer, Instance, OutboxMessage, Task, TimelineEntry
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api

FLOW = """\
id: api_demo
name: {zh: 接口演示, en: API demo}
triggers:
  - type: manual
steps:
  - id: wait_reply
    type: wait
    event: customer_replied
    timeout: {days: 3}
    on_timeout: silent
    next: done
  - id: done
    type: end
    outcome: replied
  - id: silent
    type: end
    outcome: silent
"""


def error(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


# ----- flows ----------------------------------------------------------------------------------


def test_deploy_flow_as_yaml_then_list_and_versions(api: Api) -> None:
    first = api.post("/api/flows", data=FLOW, content_type="text/yaml")
    assert first.status_code == 201 and first.get_json() == {"kind": "flow", "id": "api_demo", "version": 1, "changed": True}
    again = api.post("/api/flows", data=FLOW, content_type="text/yaml")
    assert again.status_code == 200 and again.get_json()["changed"] is False
    second = api.post("/api/flows", json={"source": FLOW.replace("3}", "5}"), "filename": "api_demo.yaml"})
    assert second.status_code == 201 and second.get_json()["version"] == 2
    assert "api_demo" in {f["id"] for f in api.get("/api/flows").get_json()}
    versions = api.get("/api/flows/api_demo/versions").get_json()
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["deployed_by"] == "admin"
    assert "5}" in api.get("/api/flows/api_demo").get_json()["source"]


def test_a_bad_flow_gives_located_problems(api: Api) -> None:
    bad = FLOW.replace("next: done", "next: dnoe")
    response = api.post("/api/flows", data=bad, content_type="application/yaml")
    assert response.status_code == 422
    err = error(response)
    assert err["code"] == "flow_invalid"
    problem = err["details"][0]
    assert problem["line"] == 11 and problem["column"] > 0 and "dnoe" in problem["message"]
    assert problem["message"] == "unknown step 'dnoe'; did you mean 'done'?"
    # The problems follow the request's language, like the API's other messages.
    chinese = error(api.post("/api/flows", data=bad, content_type="application/yaml", lang="zh-CN"))
    assert chinese["message"] == "定义有错误"
    assert chinese["details"][0]["message"] == "未知的步骤 'dnoe'；是不是想写 'done'？"
    assert {k: v for k, v in chinese["details"][0].items() if k != "message"} == \
        {k: v for k, v in problem.items() if k != "message"}


@pytest.mark.parametrize("body", ["!!python/object/apply:os.system ['touch /tmp/pwned']", "a: [", "- 1\n- 2", "\x00\x01"])
def test_hostile_yaml_is_a_422_not_a_crash(api: Api, body: str) -> None:
    response = api.post("/api/flows", data=body.encode("utf-8"), content_type="text/yaml")
    assert response.status_code == 422 and error(response)["details"]


def test_deploy_needs_yaml_or_json(api: Api) -> None:
    response = api.post("/api/flows", data="id: x", content_type="text/html")
    assert response.status_code == 415 and error(response)["code"] == "unsupported_media_type"
    response = api.post("/api/flows", json={"filename": "x.yaml"})
    assert response.status_code == 422 and error(response)["details"][0]["field"] == "source"


def test_unknown_flow_versions_is_404(api: Api) -> None:
    assert api.get("/api/flows/nope/versions").status_code == 404
    assert api.get("/api/flows/nope").status_code == 404
    assert api.get("/api/flows/-bad-").status_code == 404


# ----- instances --------------------------------------------------------------------------------


def test_start_list_get_event_and_cancel(api: Api, cf: Careflow) -> None:
    api.post("/api/flows", data=FLOW, content_type="text/yaml")
    cid = wd.new_customer(cf, "wang")
    started = api.post("/api/instances", as_="wang", json={"flow": "api_demo", "customer_id": cid, "data": {"source": "api"}})
    assert started.status_code == 201
    instance = started.get_json()
    assert instance["current_steps"] == ["wait_reply"] and instance["started_by"] == "wang"
    listed = api.get(f"/api/instances?flow=api_demo&status=running&customer_id={cid}", as_="wang").get_json()
    assert [i["id"] for i in listed["items"]] == [instance["id"]] and listed["total"] == 1
    detail = api.get(f"/api/instances/{instance['id']}", as_="wang").get_json()
    assert detail["variables"] == {"source": "api"} and detail["history"]
    not_waiting = api.post(f"/api/instances/{instance['id']}/events", as_="wang", json={"event": "order_paid"})
    assert not_waiting.status_code == 409 and error(not_waiting)["code"] == "not_waiting"
    delivered = api.post(f"/api/instances/{instance['id']}/events", as_="wang", json={"event": "customer_replied", "data": {"text": "好"}})
    assert delivered.status_code == 200 and delivered.get_json()["outcome"] == "replied"
    ended = api.post(f"/api/instances/{instance['id']}/cancel", as_="wang", json={"reason": "test"})
    assert ended.status_code == 409


def test_cancel_stops_tasks(api: Api, cf: Careflow) -> None:
    iid = wd.complaint(cf)
    response = api.post(f"/api/instances/{iid}/cancel", json={"reason": "duplicate"})
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    with cf.session() as s:
        assert s.scalars(select(Task.status).where(Task.instance_id == iid)).all() == ["cancelled"]


def test_instance_errors(api: Api) -> None:
    no_flow = api.post("/api/instances", json={"flow": "nope"})
    assert no_flow.status_code == 422 and error(no_flow)["details"][0]["field"] == "flow"
    no_customer = api.post("/api/instances", json={"flow": "complaint", "customer_id": 99999})
    assert no_customer.status_code == 422 and error(no_customer)["details"][0]["field"] == "customer_id"
    bad = api.post("/api/instances", json={"flow": "bad flow id", "data": []})
    assert bad.status_code == 422 and {d["field"] for d in error(bad)["details"]} == {"flow", "data"}
    assert api.get("/api/instances/99999").status_code == 404
    assert api.get("/api/instances/99999999999999999999").status_code == 404
    assert api.get("/api/instances?status=weird").status_code == 422
    assert api.get("/api/instances?page=0").status_code == 422


def test_onboarding_enrolls_once(api: Api, cf: Careflow) -> None:
    cid = wd.new_customer(cf, "wang")
    again = api.post("/api/instances", json={"flow": "onboarding", "customer_id": cid})
    assert again.status_code == 409 and error(again)["code"] == "not_enrolled"


# ----- tasks ---------------------------------------------------------------------------------------


def test_complete_with_field_errors_then_success_then_409(api: Api, cf: Careflow) -> None:
    task = wd.welcome_task(cf)
    bad = api.post(f"/api/tasks/{task}/complete", as_="wang", json={"data": {"reached": "maybe"}})
    assert bad.status_code == 422
    details = {d["field"]: d for d in error(bad)["details"]}
    assert set(details) == {"reached", "call_notes"}
    assert details["call_notes"]["code"] == "required" and details["call_notes"]["path"] == "$.call_notes"
    zh = api.post(f"/api/tasks/{task}/complete", as_="wang", lang="zh-CN", json={"data": {}})
    assert "必填" in zh.get_data(as_text=True) or "填写" in zh.get_data(as_text=True)
    done = api.post(f"/api/tasks/{task}/complete", as_="wang", json={"data": wd.WELCOME})
    assert done.status_code == 200 and done.get_json()["status"] == "completed"
    assert done.get_json()["data"]["call_notes"] == wd.WELCOME["call_notes"]
    twice = api.post(f"/api/tasks/{task}/complete", as_="wang", json={"data": wd.WELCOME})
    assert twice.status_code == 409 and "wang" in error(twice)["message"]


def test_double_submit_completes_once(api: Api, cf: Careflow) -> None:
    """Two completions at the same moment: exactly one wins, the other gets 409, never a 500."""
    task = wd.welcome_task(cf)
    results: list[int] = []
    barrier = threading.Barrier(2)

    def submit() -> None:
        client = api.client.application.test_client()
        barrier.wait()
        response = client.post(f"/api/tasks/{task}/complete", json={"data": wd.WELCOME},
                               headers={"Authorization": f"Bearer {api.tokens['wang']}"})
        results.append(response.status_code)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    audits = cf.audit_entries(action="task.complete", target_id=str(task))[0]
    assert len(audits) == 1
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Task).where(Task.id == task, Task.status == "completed")) == 1


def test_claim_hand_over_comments(api: Api, cf: Careflow) -> None:
    iid = wd.complaint(cf)
    task = wd.open_task(cf, iid)
    inbox = api.get("/api/tasks", as_="chen").get_json()
    assert task in {t["id"] for t in inbox["items"]}
    claimed = api.post(f"/api/tasks/{task}/claim", as_="chen")
    assert claimed.status_code == 200 and claimed.get_json()["assignee"] == "chen"
    assert api.post(f"/api/tasks/{task}/claim", as_="liu").status_code == 409
    handed = api.post(f"/api/tasks/{task}/hand-over", as_="chen", json={"to": "liu", "comment": "请主管处理"})
    assert handed.status_code == 200 and handed.get_json()["assignee"] == "liu"
    wrong_role = api.post(f"/api/tasks/{task}/hand-over", as_="liu", json={"to": "wang"})
    assert wrong_role.status_code == 403
    assert api.post(f"/api/tasks/{task}/comments", as_="liu", json={"body": "   "}).status_code == 422
    added = api.post(f"/api/tasks/{task}/comments", as_="liu", json={"body": "已致电客户"})
    assert added.status_code == 201 and added.get_json()["author"] == "liu"
    kinds = [c["kind"] for c in api.get(f"/api/tasks/{task}/comments", as_="liu").get_json()]
    assert kinds == ["claim", "handover", "comment"]


def test_send_back_to_an_allowed_step_only(api: Api, cf: Careflow) -> None:
    task = wd.resolve_task(cf)
    no_comment = api.post(f"/api/tasks/{task}/send-back", as_="chen", json={"to_step": "triage", "comment": ""})
    assert no_comment.status_code == 422
    wrong_step = api.post(f"/api/tasks/{task}/send-back", as_="chen", json={"to_step": "ticket", "comment": "x"})
    assert wrong_step.status_code == 409
    sent = api.post(f"/api/tasks/{task}/send-back", as_="chen", json={"to_step": "triage", "comment": "分类错误"})
    assert sent.status_code == 200 and sent.get_json()["status"] == "cancelled"


def test_task_list_filters(api: Api, cf: Careflow) -> None:
    wd.welcome_task(cf)
    iid = wd.complaint(cf)
    listed = api.get(f"/api/tasks?view=all&role=service_agent&instance_id={iid}").get_json()
    assert listed["total"] == 1 and listed["items"][0]["instance_id"] == iid
    assert api.get("/api/tasks?view=all&assignee=wang").get_json()["total"] == 1
    assert api.get("/api/tasks?view=all&status=completed").get_json()["total"] == 0
    assert api.get("/api/tasks?view=everything").status_code == 422
    assert api.get("/api/tasks/424242").status_code == 404


# ----- forms -----------------------------------------------------------------------------------------


def test_forms_list_schema_and_submit(api: Api, cf: Careflow) -> None:
    forms = {f["id"]: f for f in api.get("/api/forms").get_json()}
    assert {"new_customer", "complaint_intake", "satisfaction_survey"} <= set(forms)
    survey = api.get("/api/forms/satisfaction_survey").get_json()
    assert survey["schema"]["required"] == ["score"]
    assert [f["name"] for f in survey["fields"]] == ["score", "nps", "comment"]
    assert survey["fields"][0]["label"] == {"zh": "满意度", "en": "Satisfaction"}
    submitted = api.post("/api/forms/new_customer/submissions", as_="wang",
                         json={"data": {"name": "赵六", "phone": "13900139000", "region": "上海"}})
    assert submitted.status_code == 201
    result = submitted.get_json()
    assert result["customer_id"] and len(result["instances"]) == 1
    invalid = api.post("/api/forms/new_customer/submissions", as_="wang", json={"data": {"name": "", "email": "nope"}})
    assert invalid.status_code == 422 and {d["field"] for d in error(invalid)["details"]} >= {"name", "email"}
    assert api.post("/api/forms/nope/submissions", as_="wang", json={"data": {}}).status_code == 404
    assert api.get("/api/forms/nope").status_code == 404


# ----- customers ------------------------------------------------------------------------------------


def test_customer_crud_search_and_timeline(api: Api, cf: Careflow) -> None:
    created = api.post("/api/customers", as_="wang", json={
        "name": "孙七", "phone": "139 0013 9001", "email": "SunQi@Example.com", "grade": "B", "region": "杭州",
        "tags": ["vip"], "consent": {"email": True}, "attributes": {"industry": "零售"}})
    assert created.status_code == 201
    c = created.get_json()
    assert (c["phone"], c["email"], c["owner"], c["attributes"]) == ("+8613900139001", "sunqi@example.com", "wang", {"industry": "零售"})
    cid = c["id"]
    assert api.get(f"/api/customers/{cid}", as_="wang").get_json()["name"] == "孙七"
    # Onboarding graded the customer from the expected value (none: C).
    found = api.get("/api/customers?q=sunqi&grade=C&region=杭州&owner=wang", as_="wang").get_json()
    assert [x["id"] for x in found["items"]] == [cid]
    assert api.get("/api/customers?q=%25", as_="wang").get_json()["total"] == 0  # LIKE wildcards are literal
    patched = api.patch(f"/api/customers/{cid}", as_="wang", json={"grade": "A", "attributes": {"industry": "制造"}})
    assert patched.status_code == 200 and patched.get_json()["grade"] == "A"
    assert patched.get_json()["attributes"] == {"industry": "制造"}
    timeline = api.get(f"/api/customers/{cid}/timeline", as_="wang").get_json()
    assert timeline["total"] >= 1 and timeline["items"][0]["at"]


def test_customer_validation_and_conflicts(api: Api) -> None:
    first = api.post("/api/customers", json={"name": "甲", "phone": "13900139002"})
    assert first.status_code == 201
    dup = api.post("/api/customers", json={"name": "乙", "phone": "+86 139 0013 9002"})
    assert dup.status_code == 409 and error(dup)["code"] == "conflict"
    bad = api.post("/api/customers", json={"name": "丙", "phone": "12345", "grade": "Z", "email": "x"})
    assert bad.status_code == 422
    assert {d["field"] for d in error(bad)["details"]} == {"grade"}  # schema errors first
    bad = api.post("/api/customers", json={"name": "丙", "phone": "12345", "email": "x"})
    assert bad.status_code == 422 and {d["field"] for d in error(bad)["details"]} == {"phone", "email"}
    reserved = api.post("/api/customers", json={"name": "丁", "attributes": {"phone": "1"}})
    assert reserved.status_code == 422
    not_a_user = api.post("/api/customers", json={"name": "戊", "owner": "ghost"})
    assert not_a_user.status_code == 422
    other_team = api.post("/api/customers", as_="wang", json={"name": "己", "owner": "li"})
    assert other_team.status_code == 403
    team_member = api.post("/api/customers", as_="zhao", json={"name": "庚", "owner": "wang"})
    assert team_member.status_code == 201


def test_deleting_a_customer_cancels_instances_and_erases_personal_data(api: Api, cf: Careflow) -> None:
    cid = wd.new_customer(cf, "wang", email="delete.me@example.com")
    iid = wd.instance_of(cf, cid)
    done = wd.complaint(cf, cid)
    cf.cancel(done)
    response = api.delete(f"/api/customers/{cid}")
    assert response.status_code == 200
    assert response.get_json()["cancelled_instances"] == [iid]
    assert api.get(f"/api/customers/{cid}").status_code == 404
    assert api.delete(f"/api/customers/{cid}").status_code == 404
    assert api.patch(f"/api/customers/{cid}", json={"region": "x"}).status_code == 404
    assert cid not in {c["id"] for c in api.get("/api/customers?per_page=200").get_json()["items"]}
    # History is kept, still pointing at the customer id.
    detail = api.get(f"/api/instances/{iid}").get_json()
    assert detail["customer_id"] == cid and detail["status"] == "cancelled" and detail["outcome"] == "customer_deleted"
    with cf.session() as s:
        row = s.get(Customer, cid)
        assert row is not None and (row.phone, row.email, row.attributes) == (None, None, {})
        assert s.scalar(select(func.count()).select_from(TimelineEntry).where(TimelineEntry.customer_id == cid)) == 0
        assert not s.scalars(select(OutboxMessage).where(OutboxMessage.customer_id == cid, OutboxMessage.status == "pending")).all()
        assert s.scalars(select(Instance.status).where(Instance.id == done)).one() == "cancelled"
    # The phone and e-mail are free again.
    again = api.post("/api/customers", json={"name": "新", "email": "delete.me@example.com"})
    assert again.status_code == 201


def test_customer_paging(api: Api, cf: Careflow) -> None:
    for _ in range(5):
        wd.new_customer(cf, "li")
    first = api.get("/api/customers?per_page=2&page=1&owner=li").get_json()
    last = api.get("/api/customers?per_page=2&page=3&owner=li").get_json()
    assert (first["total"], len(first["items"]), len(last["items"])) == (5, 2, 1)
    assert api.get("/api/customers?per_page=500").status_code == 422


# ----- users, tokens, incidents --------------------------------------------------------------------


def test_users_admin(api: Api, cf: Careflow) -> None:
    created = api.post("/api/users", json={"username": "sun", "display_name": "客服 孙丽", "roles": ["service_agent", "vip_care"],
                                           "team": "service", "password": "a-long-password"})
    assert created.status_code == 201
    user = created.get_json()
    assert user["roles"] == ["service_agent", "vip_care"] and user["has_password"] and "password" not in user
    assert api.post("/api/users", json={"username": "sun"}).status_code == 409
    assert api.post("/api/users", json={"username": "Bad Name"}).status_code == 422
    assert api.post("/api/users", json={"username": "x", "password": "short"}).status_code == 422
    assert api.get("/api/users/sun").get_json()["team"] == "service"
    assert api.patch("/api/users/sun", json={"active": False}).get_json()["active"] is False
    assert api.get("/api/users/ghost").status_code == 404
    assert api.patch("/api/users/admin", json={"active": False}).status_code == 409
    assert api.patch("/api/users/admin", json={"roles": ["designer"]}).status_code == 409
    assert {u["username"] for u in api.get("/api/users").get_json()} >= {"admin", "sun", "wang"}


def test_tokens_admin(api: Api, cf: Careflow) -> None:
    created = api.post("/api/tokens", json={"user": "li", "scopes": ["read"], "name": "报表", "expires_in_days": 30})
    assert created.status_code == 201
    token = created.get_json()
    assert token["token"].startswith("cf_") and token["prefix"] == token["token"][:10] and token["expires_at"]
    api.tokens["li_report"] = token["token"]
    assert api.get("/api/me", as_="li_report").get_json()["scopes"] == ["read"]
    listed = api.get("/api/tokens?user=li").get_json()
    assert token["id"] in {t["id"] for t in listed} and all("token" not in t for t in listed)
    assert next(t for t in listed if t["id"] == token["id"])["last_used_at"] is not None
    revoked = api.delete(f"/api/tokens/{token['id']}")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert api.get("/api/me", as_="li_report").status_code == 401
    assert api.post("/api/tokens", json={"user": "li", "scopes": ["admin"]}).status_code == 422
    assert api.post("/api/tokens", json={"user": "ghost", "scopes": ["read"]}).status_code == 422
    assert api.delete("/api/tokens/999999").status_code == 404
    own = next(t for t in api.get("/api/tokens?user=admin").get_json())
    assert api.delete(f"/api/tokens/{own['id']}").status_code == 409


def test_expired_token_and_deactivated_user_are_refused(api: Api, cf: Careflow, clock: Any) -> None:
    from datetime import timedelta

    info, secret = cf.create_token("li", ["read"], actor="admin", expires_at=clock.now() + timedelta(days=1))
    api.tokens["short"] = secret
    assert api.get("/api/me", as_="short").status_code == 200
    clock.set(clock.now() + timedelta(days=2))
    assert api.get("/api/me", as_="short").status_code == 401
    cf.update_user("wang", {"active": False}, actor="admin")
    assert api.get("/api/me", as_="wang").status_code == 401


def test_incidents_admin(api: Api, cf: Careflow) -> None:
    from tests.integration.api.test_scope_matrix import incident

    row = incident(cf)
    listed = api.get("/api/incidents").get_json()
    assert row in {i["id"] for i in listed["items"]}
    skipped = api.post(f"/api/incidents/{row}/skip")
    assert skipped.status_code == 200
    assert api.post(f"/api/incidents/{row}/retry").status_code in (200, 409)
    assert api.post("/api/incidents/999999/retry").status_code == 404
    assert api.get("/api/incidents?status=all").get_json()["total"] >= 1
