"""The OpenAPI 3.1 document matches the code: every /api route is in it, and responses to a broad
set of calls (successes and errors) validate against the schema it gives for their status."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from engine.core import Careflow
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api
from tests.integration.api.test_endpoints import FLOW


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", rule)


@pytest.fixture
def spec(client: Any) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


def test_document_is_openapi_3_1_with_bearer_auth(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["securitySchemes"]["BearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["BearerAuth"]["description"]}
    Draft202012Validator.check_schema(spec["components"]["schemas"]["Error"])


def test_every_api_route_is_documented(app: Any, spec: dict[str, Any]) -> None:
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule == "/api/openapi.json":
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []


def test_every_documented_operation_exists(app: Any, spec: dict[str, Any]) -> None:
    routes = {(openapi_path(r.rule), m.lower()) for r in app.url_map.iter_rules() for m in (r.methods or ())}
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert documented <= routes


def test_every_error_response_uses_the_error_schema(spec: dict[str, Any]) -> None:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)


class ResponseChecker:
    """Validates a response against the schema the document gives for its operation and status."""

    def __init__(self, app: Any, spec: dict[str, Any]):
        self.spec = spec
        self.adapter = app.url_map.bind("localhost")
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource("urn:careflow-api", resource)
        self.checked: set[tuple[str, str, str]] = set()

    def __call__(self, response: Any, method: str, url: str) -> Any:
        path = url.split("?")[0]
        rule, _args = self.adapter.match(path, method=method, return_rule=True)
        api_path = openapi_path(rule.rule)
        status = str(response.status_code)
        responses = self.spec["paths"][api_path][method.lower()]["responses"]
        assert status in responses, f"{method} {api_path} answered {status}, which is not documented"
        content = responses[status].get("content")
        if response.status_code == 204 or not content:
            assert not response.get_data(), f"{method} {api_path} {status} has an undocumented body"
            return response
        assert response.mimetype == "application/json"
        pointer = "/".join(
            part.replace("~", "~0").replace("/", "~1")
            for part in ("paths", api_path, method.lower(), "responses", status, "content", "application/json", "schema")
        )
        validator = Draft202012Validator({"$ref": f"urn:careflow-api#/{pointer}"}, registry=self.registry,
                                         format_checker=FormatChecker())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.get_json())]
        assert not errors, f"{method} {api_path} {status}: {errors[:5]}"
        self.checked.add((method, api_path, status))
        return response


def test_responses_validate_against_the_document(app: Any, api: Api, cf: Careflow, spec: dict[str, Any]) -> None:
    check = ResponseChecker(app, spec)

    def call(method: str, url: str, **kw: Any) -> Any:
        return check(api.request(method, url, **kw), method, url)

    w = wd.build(cf)
    api.tokens["qa"] = cf.create_token("qa", ["read", "write"], actor="admin")[1]
    call("GET", "/api/health", as_=None)
    call("GET", "/api/me")
    call("GET", "/api/me", as_=None)
    call("GET", "/api/flows")
    call("POST", "/api/flows", data=FLOW, content_type="text/yaml")
    call("POST", "/api/flows", json={"source": FLOW})
    call("POST", "/api/flows", data="steps: [", content_type="text/yaml")
    call("POST", "/api/flows", data="x", content_type="text/plain")
    call("GET", "/api/flows/api_demo")
    call("GET", "/api/flows/api_demo/versions")
    call("GET", "/api/flows/nothing/versions")
    call("GET", "/api/forms")
    call("GET", "/api/forms/new_customer")
    call("GET", "/api/forms/nothing")
    call("POST", "/api/forms/complaint_intake/submissions", json={"data": wd.COMPLAINT})
    call("POST", "/api/forms/complaint_intake/submissions", json={"data": {}})
    call("POST", "/api/forms/complaint_intake/submissions", json={"data": {}}, as_="ops")
    started = call("POST", "/api/instances", json={"flow": "api_demo", "customer_id": w.c_wang}).get_json()
    call("POST", "/api/instances", json={"flow": "nothing"})
    call("POST", "/api/instances", json={"flow": 5})
    call("GET", "/api/instances?flow=onboarding&status=running&page=1&per_page=5")
    call("GET", f"/api/instances/{w.onboarding_wang}")
    call("GET", f"/api/instances/{w.onboarding_wang}", as_="chen")
    call("POST", f"/api/instances/{started['id']}/events", json={"event": "nothing"})
    call("POST", f"/api/instances/{started['id']}/links", json={"form": "complaint_confirmation", "event": "customer_replied"})
    call("POST", f"/api/instances/{started['id']}/events", json={"event": "customer_replied", "data": {"a": 1}})
    call("POST", f"/api/instances/{started['id']}/cancel", json={})
    call("POST", f"/api/instances/{wd.complaint(cf)}/cancel", json={"reason": "test"})
    call("GET", "/api/tasks?view=all&status=open")
    call("GET", f"/api/tasks/{w.welcome_wang}")
    call("POST", f"/api/tasks/{w.welcome_wang}/complete", json={"data": {}}, as_="wang")
    call("POST", f"/api/tasks/{w.welcome_wang}/comments", json={"body": "好"}, as_="wang")
    call("GET", f"/api/tasks/{w.welcome_wang}/comments", as_="wang")
    call("POST", f"/api/tasks/{w.welcome_wang}/hand-over", json={"to": "zhao"}, as_="zhao")
    call("POST", f"/api/tasks/{w.welcome_wang}/complete", json={"data": wd.WELCOME}, as_="wang")
    call("POST", f"/api/tasks/{w.welcome_wang}/complete", json={"data": wd.WELCOME}, as_="wang")
    call("POST", f"/api/tasks/{w.triage_li}/claim", as_="chen")
    call("POST", f"/api/tasks/{w.triage_li}/claim", as_="liu")
    call("POST", f"/api/tasks/{wd.resolve_task(cf)}/send-back", json={"to_step": "triage", "comment": "再分诊"}, as_="chen")
    call("GET", "/api/tasks/123456")
    created = call("POST", "/api/customers", json={"name": "校验", "phone": wd.phone(), "attributes": {"vip": True}}).get_json()
    call("POST", "/api/customers", json={"name": "校验", "phone": created["phone"]})
    call("GET", "/api/customers?q=校&per_page=3")
    call("GET", f"/api/customers/{created['id']}")
    call("PATCH", f"/api/customers/{created['id']}", json={"tags": ["a"], "birthday": "1990-02-03"})
    call("PATCH", f"/api/customers/{created['id']}", json={"birthday": "1990-02-30"})
    call("GET", f"/api/customers/{created['id']}/timeline")
    call("DELETE", f"/api/customers/{created['id']}")
    call("GET", f"/api/customers/{created['id']}")
    call("GET", "/api/customers", as_="ops")
    upload = {"file": (io.BytesIO(f"姓名,手机,生日\n导入,{wd.phone()},2023-02-30\n".encode()), "c.csv")}
    imported = call("POST", "/api/customers/imports", data=upload, content_type="multipart/form-data").get_json()
    call("GET", f"/api/customers/imports/{imported['id']}")
    call("POST", f"/api/customers/imports/{imported['id']}/commit")
    call("POST", f"/api/customers/imports/{imported['id']}/commit")
    call("POST", "/api/customers/imports", data={"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")}, content_type="multipart/form-data")
    call("POST", "/api/customers/order-imports", content_type="multipart/form-data",
         data={"file": (io.BytesIO("订单号,手机,下单时间,金额\nO-1,13800138000,2026-11-01,10\n".encode()), "o.csv")})
    call("GET", "/api/customers/merges?per_page=5")
    call("GET", "/api/users")
    call("POST", "/api/users", json={"username": "openapi", "roles": ["service_agent"]})
    call("GET", "/api/users/openapi")
    call("PATCH", "/api/users/openapi", json={"team": "service"})
    token = call("POST", "/api/tokens", json={"user": "openapi", "scopes": ["read"]}).get_json()
    call("GET", "/api/tokens")
    call("DELETE", f"/api/tokens/{token['id']}")
    call("GET", "/api/audit?action=task.&per_page=5")
    call("GET", "/api/incidents")
    call("POST", "/api/incidents/9999/retry")
    call("POST", "/api/webhooks", json={"name": "crm", "events": ["customer_replied"]})
    call("GET", "/api/webhooks")
    call("GET", "/api/webhooks/crm")
    call("POST", "/api/hooks/crm", json={"action": "start", "flow": "complaint"}, as_=None)
    call("POST", "/api/hooks/nothing", json={}, as_=None)
    call("DELETE", "/api/webhooks/crm")
    assert {s for _m, _p, s in check.checked} >= {"200", "201", "401", "403", "404", "409", "415", "422"}
    assert len({(m, p) for m, p, _s in check.checked}) >= 40
