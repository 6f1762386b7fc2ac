"""The audit log: one entry per audited action, in the same transaction, readable by admins only,
and append-only in the database itself."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.exc import DatabaseError

from engine.auth import audit
from engine.core import Careflow
from engine.store.models import AuditEntry
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api
from tests.integration.api.test_endpoints import FLOW


def last(cf: Careflow, action: str) -> dict[str, Any]:
    entries, _total = cf.audit_entries(action=action, limit=1)
    assert entries, f"no {action} entry"
    return entries[0]


def test_every_audited_action_leaves_an_entry(api: Api, cf: Careflow) -> None:
    api.post("/api/flows", data=FLOW, content_type="text/yaml")
    entry = last(cf, "flow.deploy")
    assert (entry["actor"], entry["target_id"], entry["data"]["version"]) == ("admin", "api_demo", 1)

    created = api.post("/api/customers", as_="wang", json={"name": "审计", "phone": wd.phone()}).get_json()
    assert last(cf, "customer.create")["target_id"] == str(created["id"])
    api.patch(f"/api/customers/{created['id']}", as_="wang", json={"region": "苏州"})
    update_entry = last(cf, "customer.update")
    assert update_entry["actor"] == "wang" and update_entry["data"] == {"changed": ["region"], "values": {"region": "苏州"}}

    task = wd.open_task(cf, wd.complaint(cf))
    api.post(f"/api/tasks/{task}/claim", as_="chen")
    assert last(cf, "task.claim")["actor"] == "chen"
    api.post(f"/api/tasks/{task}/hand-over", as_="chen", json={"to": "liu", "comment": "交接"})
    assert last(cf, "task.hand_over")["data"]["to"] == "liu"
    api.post(f"/api/tasks/{task}/complete", as_="liu", json={"data": wd.TRIAGE})
    completion = last(cf, "task.complete")
    assert completion["actor"] == "liu" and completion["data"]["data"] == wd.TRIAGE
    resolve = wd.open_task(cf, completion["data"]["instance_id"])
    api.post(f"/api/tasks/{resolve}/send-back", as_="chen", json={"to_step": "triage", "comment": "再看看"})
    assert last(cf, "task.send_back")["data"]["comment"] == "再看看"

    iid = wd.complaint(cf)
    api.post(f"/api/instances/{iid}/cancel", json={"reason": "重复"})
    assert last(cf, "instance.cancel")["target_id"] == str(iid)

    api.post("/api/users", json={"username": "zhou", "roles": ["designer"], "password": "a-long-password"})
    user_entry = last(cf, "user.create")
    assert user_entry["target_id"] == "zhou" and "a-long-password" not in str(user_entry)
    api.patch("/api/users/zhou", json={"roles": ["designer", "admin"], "password": "another-long-one"})
    changed = last(cf, "user.update")
    assert changed["data"]["changed"] == ["roles", "password"] and "another-long-one" not in str(changed)

    token = api.post("/api/tokens", json={"user": "zhou", "scopes": ["read"]}).get_json()
    assert last(cf, "token.create")["target_id"] == str(token["id"]) and token["token"] not in str(last(cf, "token.create"))
    api.delete(f"/api/tokens/{token['id']}")
    assert last(cf, "token.revoke")["data"]["user"] == "zhou"

    api.delete(f"/api/customers/{created['id']}")
    assert last(cf, "customer.delete")["actor"] == "admin"

    cf.save_connector("mail", "fake", {"api_key": "super-secret-value"}, by="admin")
    connector = last(cf, "connector.save")
    assert connector["target_id"] == "mail" and "super-secret-value" not in str(connector)


def test_audit_is_admin_only_and_filterable(api: Api, cf: Careflow) -> None:
    api.post("/api/customers", as_="wang", json={"name": "甲", "phone": wd.phone()})
    api.post("/api/customers", as_="zhao", json={"name": "乙", "phone": wd.phone()})
    assert api.get("/api/audit", as_="wang").status_code == 403
    by_wang = api.get("/api/audit?actor=wang&action=customer.create").get_json()
    assert by_wang["total"] == 1 and by_wang["items"][0]["actor"] == "wang"
    prefix = api.get("/api/audit?action=customer.").get_json()
    assert prefix["total"] == 2
    since = api.get("/api/audit?since=2030-01-01T00:00:00Z").get_json()
    assert since["total"] == 0
    naive = api.get("/api/audit?until=2030-01-01T00:00:00").get_json()  # read as UTC
    assert naive["total"] >= 2
    assert api.get("/api/audit?since=yesterday").status_code == 422


def test_failed_actions_leave_no_entry(api: Api, cf: Careflow) -> None:
    task = wd.welcome_task(cf)
    before = cf.audit_entries(action="task.complete")[1]
    assert api.post(f"/api/tasks/{task}/complete", as_="wang", json={"data": {}}).status_code == 422
    assert cf.audit_entries(action="task.complete")[1] == before


def test_the_log_is_append_only(cf: Careflow) -> None:
    with cf.sessions.begin() as s:
        audit(s, "admin", "test.entry", "test", 1, {})
    for statement in (update(AuditEntry).values(actor="mallory"), delete(AuditEntry)):
        with pytest.raises(DatabaseError):
            with cf.sessions.begin() as s:
                s.execute(statement)
    assert cf.audit_entries(action="test.entry")[0][0]["actor"] == "admin"


def test_secrets_never_reach_the_log(cf: Careflow) -> None:
    with cf.sessions.begin() as s:
        audit(s, "admin", "test.secret", None, None, {"password": "p", "nested": {"token": "t", "ok": 1}})
    data = cf.audit_entries(action="test.secret")[0][0]["data"]
    assert data == {"password": "••••", "nested": {"token": "••••", "ok": 1}}
