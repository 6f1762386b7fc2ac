"""Every role × every API operation → the documented status (docs/api.md, "Roles and record scope").

2xx: allowed; 403: the role (or the token's scope) does not allow the operation; 404: the
record the URL names is outside the caller's scope, or does not exist, which look the same on
purpose; 422: the same for a record the request body names (a customer to start a flow for).
Operations that change something get a fresh target per call, so the order does not matter.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from engine.core import Careflow
from engine.imports import Importer
from engine.store.models import Incident
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api

#: user -> the role it stands for in the matrix
ROLES = {
    "admin": "admin",
    "ops": "designer",
    "wang": "account_manager",
    "zhao": "team_lead",
    "chen": "service_agent",
    "liu": "service_lead",
    "qa": "custom role",
}
USERS = list(ROLES)

FLOW = """\
id: matrix_{user}
name: {{zh: 矩阵, en: Matrix}}
triggers:
  - type: manual
steps:
  - id: done
    type: end
    outcome: done
"""


def incident(cf: Careflow) -> int:
    iid = wd.complaint(cf)
    with cf.sessions.begin() as s:
        row = Incident(instance_id=iid, token="t0", step_id="triage", kind="step_failed", message="boom",
                       status="open", created_at=cf.clock.now())
        s.add(row)
        s.flush()
        return row.id


ORDERS = "订单号,手机,下单时间,金额\nM-1,13800138000,2026-11-01,10\n"


def upload(text: str | None = None) -> tuple[io.BytesIO, str]:
    return io.BytesIO((text or f"姓名,手机\n导入,{wd.phone()}\n").encode()), "customers.csv"


def planned(cf: Careflow) -> int:
    return int(Importer(cf).plan(upload()[0].getvalue(), "customers.csv")["id"])


Op = Callable[[Api, Careflow, wd.World, str], Any]

#: (operation, request, expected status per user in USERS order)
#:            admin ops  wang zhao chen liu  qa
MATRIX: list[tuple[str, Op, tuple[int, ...]]] = [
    ("GET /api/health", lambda a, cf, w, u: a.get("/api/health", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/me", lambda a, cf, w, u: a.get("/api/me", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/flows", lambda a, cf, w, u: a.get("/api/flows", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/flows/{id}", lambda a, cf, w, u: a.get("/api/flows/onboarding", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/flows/{id}/versions", lambda a, cf, w, u: a.get("/api/flows/onboarding/versions", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("POST /api/flows", lambda a, cf, w, u: a.post("/api/flows", as_=u, data=FLOW.format(user=u), content_type="text/yaml"),
     (201, 201, 403, 403, 403, 403, 403)),
    ("GET /api/forms", lambda a, cf, w, u: a.get("/api/forms", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/forms/{id}", lambda a, cf, w, u: a.get("/api/forms/complaint_intake", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("POST /api/forms/{id}/submissions", lambda a, cf, w, u: a.post(
        "/api/forms/complaint_intake/submissions", as_=u, json={"data": wd.COMPLAINT}),
     (201, 403, 201, 201, 201, 201, 403)),
    ("POST /api/instances (own customer)", lambda a, cf, w, u: a.post(
        "/api/instances", as_=u, json={"flow": "complaint", "customer_id": wd.new_customer(cf, "wang"), "data": {"complaint_intake": wd.COMPLAINT}}),
     (201, 422, 201, 201, 422, 422, 403)),
    ("POST /api/instances (no customer)", lambda a, cf, w, u: a.post(
        "/api/instances", as_=u, json={"flow": "complaint", "data": {"complaint_intake": wd.COMPLAINT}}),
     (201, 201, 201, 201, 201, 201, 403)),
    ("GET /api/instances", lambda a, cf, w, u: a.get("/api/instances", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/instances/{onboarding of c_wang}", lambda a, cf, w, u: a.get(f"/api/instances/{w.onboarding_wang}", as_=u),
     (200, 404, 200, 200, 404, 404, 404)),
    ("GET /api/instances/{complaint of c_li}", lambda a, cf, w, u: a.get(f"/api/instances/{w.complaint_li}", as_=u),
     (200, 404, 404, 404, 200, 200, 404)),
    ("POST /api/instances/{id}/cancel", lambda a, cf, w, u: a.post(
        f"/api/instances/{wd.complaint(cf, wd.new_customer(cf, 'wang'))}/cancel", as_=u, json={}),
     (200, 404, 200, 200, 403, 403, 403)),
    ("POST /api/instances/{id}/cancel (started by the caller)", lambda a, cf, w, u: a.post(
        f"/api/instances/{wd.complaint(cf, by=u)}/cancel", as_=u, json={}),
     (200, 200, 200, 200, 200, 200, 403)),
    ("POST /api/instances/{id}/events", lambda a, cf, w, u: a.post(
        f"/api/instances/{wd.complaint(cf, wd.new_customer(cf, 'wang'))}/events", as_=u, json={"event": "complaint_withdrawn"}),
     (200, 404, 200, 200, 403, 403, 403)),
    ("POST /api/instances/{id}/links", lambda a, cf, w, u: a.post(
        f"/api/instances/{wd.complaint(cf, wd.new_customer(cf, 'wang'))}/links", as_=u,
        json={"form": "complaint_confirmation", "event": "complaint_confirmation"}),
     (201, 404, 201, 201, 403, 403, 403)),
    ("GET /api/tasks", lambda a, cf, w, u: a.get("/api/tasks", as_=u),
     (200, 200, 200, 200, 200, 200, 200)),
    ("GET /api/tasks/{welcome call of c_wang}", lambda a, cf, w, u: a.get(f"/api/tasks/{w.welcome_wang}", as_=u),
     (200, 404, 200, 200, 404, 404, 404)),
    ("GET /api/tasks/{triage of c_li}", lambda a, cf, w, u: a.get(f"/api/tasks/{w.triage_li}", as_=u),
     (200, 404, 404, 404, 200, 200, 404)),
    ("POST /api/tasks/{triage}/claim", lambda a, cf, w, u: a.post(
        f"/api/tasks/{wd.open_task(cf, wd.complaint(cf))}/claim", as_=u),
     (200, 404, 404, 404, 200, 200, 404)),
    ("POST /api/tasks/{welcome call}/complete", lambda a, cf, w, u: a.post(
        f"/api/tasks/{wd.welcome_task(cf)}/complete", as_=u, json={"data": wd.WELCOME}),
     (200, 404, 200, 403, 404, 404, 404)),
    ("POST /api/tasks/{welcome call}/hand-over", lambda a, cf, w, u: a.post(
        f"/api/tasks/{wd.welcome_task(cf)}/hand-over", as_=u, json={"to": "zhao", "comment": "休假"}),
     (200, 404, 200, 403, 404, 404, 404)),
    ("POST /api/tasks/{resolve}/send-back", lambda a, cf, w, u: a.post(
        f"/api/tasks/{wd.resolve_task(cf)}/send-back", as_=u, json={"to_step": "triage", "comment": "分类有误"}),
     (200, 404, 404, 404, 200, 200, 404)),
    ("GET /api/tasks/{id}/comments", lambda a, cf, w, u: a.get(f"/api/tasks/{w.welcome_wang}/comments", as_=u),
     (200, 404, 200, 200, 404, 404, 404)),
    ("POST /api/tasks/{id}/comments", lambda a, cf, w, u: a.post(
        f"/api/tasks/{w.welcome_wang}/comments", as_=u, json={"body": "已联系"}),
     (201, 404, 201, 201, 404, 404, 404)),
    ("POST /api/customers", lambda a, cf, w, u: a.post("/api/customers", as_=u, json={"name": "新客户", "phone": wd.phone()}),
     (201, 403, 201, 201, 201, 201, 403)),
    ("GET /api/customers", lambda a, cf, w, u: a.get("/api/customers", as_=u),
     (200, 403, 200, 200, 200, 200, 403)),
    ("GET /api/customers/{c_wang}", lambda a, cf, w, u: a.get(f"/api/customers/{w.c_wang}", as_=u),
     (200, 403, 200, 200, 404, 404, 403)),
    ("GET /api/customers/{c_li}", lambda a, cf, w, u: a.get(f"/api/customers/{w.c_li}", as_=u),
     (200, 403, 404, 404, 200, 200, 403)),
    ("PATCH /api/customers/{c_wang}", lambda a, cf, w, u: a.patch(f"/api/customers/{w.c_wang}", as_=u, json={"region": "杭州"}),
     (200, 403, 200, 200, 404, 404, 403)),
    ("PATCH /api/customers/{c_li}", lambda a, cf, w, u: a.patch(f"/api/customers/{w.c_li}", as_=u, json={"region": "天津"}),
     (200, 403, 404, 404, 403, 403, 403)),
    ("DELETE /api/customers/{id}", lambda a, cf, w, u: a.delete(f"/api/customers/{wd.new_customer(cf, 'wang')}", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/customers/{c_wang}/timeline", lambda a, cf, w, u: a.get(f"/api/customers/{w.c_wang}/timeline", as_=u),
     (200, 403, 200, 200, 404, 404, 403)),
    ("POST /api/customers/imports", lambda a, cf, w, u: a.post(
        "/api/customers/imports", as_=u, data={"file": upload()}, content_type="multipart/form-data"),
     (201, 403, 403, 403, 403, 403, 403)),
    ("POST /api/customers/order-imports", lambda a, cf, w, u: a.post(
        "/api/customers/order-imports", as_=u, data={"file": upload(ORDERS)}, content_type="multipart/form-data"),
     (201, 403, 403, 403, 403, 403, 403)),
    ("GET /api/customers/imports/{id}", lambda a, cf, w, u: a.get(f"/api/customers/imports/{planned(cf)}", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/customers/imports/{id}/commit", lambda a, cf, w, u: a.post(f"/api/customers/imports/{planned(cf)}/commit", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/customers/imports/{id}/report.csv", lambda a, cf, w, u: a.get(
        f"/api/customers/imports/{planned(cf)}/report.csv", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/customers/merges", lambda a, cf, w, u: a.get("/api/customers/merges", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/users", lambda a, cf, w, u: a.get("/api/users", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/users", lambda a, cf, w, u: a.post("/api/users", as_=u, json={"username": f"new.{u}", "roles": ["service_agent"]}),
     (201, 403, 403, 403, 403, 403, 403)),
    ("GET /api/users/{name}", lambda a, cf, w, u: a.get("/api/users/wang", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("PATCH /api/users/{name}", lambda a, cf, w, u: a.patch("/api/users/li", as_=u, json={"region": "天津"}),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/tokens", lambda a, cf, w, u: a.get("/api/tokens", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/tokens", lambda a, cf, w, u: a.post("/api/tokens", as_=u, json={"user": "li", "scopes": ["read"]}),
     (201, 403, 403, 403, 403, 403, 403)),
    ("DELETE /api/tokens/{id}", lambda a, cf, w, u: a.delete(
        f"/api/tokens/{cf.create_token('li', ['read'], actor='admin')[0]['id']}", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/audit", lambda a, cf, w, u: a.get("/api/audit", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/incidents", lambda a, cf, w, u: a.get("/api/incidents", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/incidents/{id}/retry", lambda a, cf, w, u: a.post(f"/api/incidents/{incident(cf)}/retry", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/incidents/{id}/skip", lambda a, cf, w, u: a.post(f"/api/incidents/{incident(cf)}/skip", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/webhooks", lambda a, cf, w, u: a.get("/api/webhooks", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/webhooks", lambda a, cf, w, u: a.post("/api/webhooks", as_=u, json={"name": f"shop-{u}"}),
     (201, 403, 403, 403, 403, 403, 403)),
    ("GET /api/webhooks/{name}", lambda a, cf, w, u: a.get(
        f"/api/webhooks/{cf.create_webhook(f'get-{u}', actor='admin')[0]['name']}", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("DELETE /api/webhooks/{name}", lambda a, cf, w, u: a.delete(
        f"/api/webhooks/{cf.create_webhook(f'del-{u}', actor='admin')[0]['name']}", as_=u),
     (204, 403, 403, 403, 403, 403, 403)),
    ("GET /api/connectors", lambda a, cf, w, u: a.get("/api/connectors", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/connector-types", lambda a, cf, w, u: a.get("/api/connector-types", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/deliveries", lambda a, cf, w, u: a.get("/api/deliveries", as_=u),
     (200, 403, 403, 403, 403, 403, 403)),
    ("PUT /api/connectors/{name}", lambda a, cf, w, u: a.request(
        "PUT", f"/api/connectors/email-{u}", as_=u, json={"type": "email", "settings": {"provider": "smtp-main"}}),
     (200, 403, 403, 403, 403, 403, 403)),
    ("POST /api/connectors/{name}/test", lambda a, cf, w, u: a.post(
        "/api/connectors/timeline/test", as_=u, json={"to": "a@example.com"}),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/segments", lambda a, cf, w, u: a.get("/api/segments", as_=u),
     (200, 200, 200, 200, 200, 200, 403)),
    ("POST /api/segments", lambda a, cf, w, u: a.post(
        "/api/segments", as_=u, json={"name": f"new_{u}", "filter": {"grade": ["A"]}}),
     (201, 201, 403, 403, 403, 403, 403)),
    ("GET /api/segments/{name}", lambda a, cf, w, u: a.get("/api/segments/churn_risk", as_=u),
     (200, 200, 200, 200, 200, 200, 403)),
    ("PATCH /api/segments/{name}", lambda a, cf, w, u: a.patch(
        f"/api/segments/{cf.create_segment({'name': f'patch_{u}'})['name']}", as_=u, json={"filter": {"grade": ["B"]}}),
     (200, 200, 403, 403, 403, 403, 403)),
    ("DELETE /api/segments/{name}", lambda a, cf, w, u: a.delete(
        f"/api/segments/{cf.create_segment({'name': f'del_{u}'})['name']}", as_=u),
     (204, 204, 403, 403, 403, 403, 403)),
    ("GET /api/segments/{name}/members", lambda a, cf, w, u: a.get("/api/segments/grade_a/members", as_=u),
     (200, 403, 200, 200, 200, 200, 403)),
    ("POST /api/grading/recompute", lambda a, cf, w, u: a.post("/api/grading/recompute", as_=u, json={}),
     (200, 403, 403, 403, 403, 403, 403)),
    ("GET /api/reports/nps", lambda a, cf, w, u: a.get("/api/reports/nps?by=flow", as_=u),
     (200, 200, 200, 200, 200, 200, 403)),
]


@pytest.fixture
def world(cf: Careflow, api: Api) -> wd.World:
    w = wd.build(cf)
    api.tokens["qa"] = cf.create_token("qa", ["read", "write"], actor="admin")[1]
    return w


def test_the_matrix_covers_every_api_operation(app: Any) -> None:
    """Each operation of the OpenAPI document is in the matrix, except the signed webhook receiver."""
    import re

    spec = app.test_client().get("/api/openapi.json").get_json()
    documented = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    covered = {re.sub(r"\{[^}]*\}", "{}", name.split(" (")[0]) for name, _op, _expected in MATRIX}
    missing = {op for op in documented if re.sub(r"\{[^}]*\}", "{}", op) not in covered}
    assert missing == {"POST /api/hooks/{name}"}


@pytest.mark.parametrize("user", USERS)
def test_role_matrix(cf: Careflow, api: Api, world: wd.World, user: str) -> None:
    wrong = []
    for name, op, expected in MATRIX:
        want = expected[USERS.index(user)]
        response = op(api, cf, world, user)
        if response.status_code != want:
            wrong.append(f"{name}: expected {want}, got {response.status_code} {response.get_data(as_text=True)[:200]}")
    assert not wrong, f"{user} ({ROLES[user]}):\n" + "\n".join(wrong)


def test_scopes_limit_what_a_token_may_do(cf: Careflow, api: Api, world: wd.World) -> None:
    read_only = cf.create_token("admin", ["read"], actor="admin")[1]
    write_only = cf.create_token("admin", ["write"], actor="admin")[1]
    api.tokens.update(ro=read_only, wo=write_only)
    assert api.get("/api/customers", as_="ro").status_code == 200
    denied = api.post("/api/customers", as_="ro", json={"name": "x"})
    assert denied.status_code == 403 and "write" in denied.get_json()["error"]["message"]
    assert api.get("/api/users", as_="ro").status_code == 403
    assert api.get("/api/users", as_="wo").status_code == 403
    assert api.get("/api/customers", as_="wo").status_code == 403
    assert api.post("/api/customers", as_="wo", json={"name": "写入", "phone": wd.phone()}).status_code == 201


def test_lists_only_show_records_in_scope(cf: Careflow, api: Api, world: wd.World) -> None:
    def ids(path: str, user: str) -> set[int]:
        return {item["id"] for item in api.get(path, as_=user).get_json()["items"]}

    cf.update_customer(world.c_wang, {"expected_value": 500000})
    cf.update_customer(world.c_li, {"expected_value": 500000})
    cf.recompute_segments()
    assert ids("/api/segments/grade_a/members", "admin") == {world.c_wang, world.c_li}
    assert ids("/api/segments/grade_a/members", "wang") == {world.c_wang}
    assert ids("/api/segments/grade_a/members", "chen") == {world.c_li}

    assert ids("/api/customers", "wang") == {world.c_wang}
    assert ids("/api/customers", "zhao") == {world.c_wang}
    assert ids("/api/customers", "chen") == {world.c_li}
    assert ids("/api/customers", "admin") == {world.c_wang, world.c_li}
    assert ids("/api/instances", "wang") == {world.onboarding_wang}
    assert ids("/api/instances", "chen") == {world.complaint_li}
    assert ids("/api/instances", "ops") == set()
    assert ids("/api/tasks", "wang") == {world.welcome_wang}
    assert ids("/api/tasks", "zhao") == set()  # the inbox: nothing is assigned to zhao or his roles
    assert ids("/api/tasks?view=all", "zhao") == {world.welcome_wang}
    assert ids("/api/tasks", "chen") == {world.triage_li}
    assert ids("/api/tasks", "qa") == set()


def test_a_lead_sees_a_claimed_task_of_his_team(cf: Careflow, api: Api, world: wd.World) -> None:
    cf.claim(world.triage_li, "chen")
    assert api.get(f"/api/tasks/{world.triage_li}", as_="liu").status_code == 200
    assert world.triage_li not in {t["id"] for t in api.get("/api/tasks", as_="liu").get_json()["items"]}
    assert world.triage_li in {t["id"] for t in api.get("/api/tasks?view=all", as_="liu").get_json()["items"]}
    with cf.session() as s:
        assert s.scalars(select(Incident)).first() is None
