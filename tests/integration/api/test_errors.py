"""One error shape for everything, in the caller's language, and never a 500 for bad input."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.integration.api.conftest import Api


def error(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert response.mimetype == "application/json"
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


def test_http_errors_share_the_shape(api: Api) -> None:
    assert error(api.get("/api/nothing-here"))["code"] == "not_found"
    not_allowed = api.request("PUT", "/api/customers")
    assert not_allowed.status_code == 405 and error(not_allowed)["code"] == "method_not_allowed"
    assert "GET" in not_allowed.headers["Allow"]
    unauthorized = api.get("/api/customers", as_=None)
    assert unauthorized.status_code == 401 and error(unauthorized)["code"] == "unauthorized"
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")


def test_too_large_is_413(api: Api) -> None:
    response = api.post("/api/customers", data="x" * (3 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413 and error(response)["code"] == "too_large"


def test_validation_errors_list_each_field(api: Api) -> None:
    response = api.post("/api/customers", json={"name": "", "grade": "Q", "unknown": 1})
    assert response.status_code == 422
    fields = {d["field"]: d for d in error(response)["details"]}
    assert set(fields) == {"name", "grade", "unknown"}
    assert fields["grade"]["path"] == "$.grade" and fields["grade"]["message"]


def test_messages_follow_accept_language(api: Api) -> None:
    zh = api.get("/api/customers/999999", lang="zh-CN,zh;q=0.9,en;q=0.8")
    en = api.get("/api/customers/999999", lang="en-US,en;q=0.9")
    assert error(zh)["message"] == "未找到客户 999999"
    assert error(en)["message"] == "No customer by the id 999999 was found"
    assert re.search(r"[\u4e00-\u9fff]", error(api.get("/api/customers/999999", lang=""))["message"])  # Chinese by default


@pytest.mark.parametrize("body", [
    '{"name": NaN}', '{"name": Infinity}', '{"expected_value": 1e999}', "[" * 100_000 + "]" * 100_000,
    '{"name": "a"', "\xff\xfe",
])
def test_malformed_json_is_400(api: Api, body: str) -> None:
    response = api.post("/api/customers", data=body.encode("utf-8", "surrogatepass"), content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert error(response)["code"] == "bad_json"


@pytest.mark.parametrize(("body", "path"), [
    ('{"name": "\\u0000"}', "$.name"), ('{"name": "\\ud800"}', "$.name"),
    ('{"name": "x", "attributes": {"k\\u0000": 1}}', "$.attributes"),
    ('{"flow": "complaint", "data": {"a": ["ok", "\\u0000"]}}', "$.data.a[1]"),
])
def test_text_that_cannot_be_stored_is_422_with_its_path(api: Api, body: str, path: str) -> None:
    response = api.post("/api/customers", data=body, content_type="application/json")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert error(response)["details"][0]["path"] == path


@pytest.mark.parametrize("url", [
    "/api/customers?q=%00", "/api/customers?%00=1", "/api/tasks?assignee=a%00b",
])
def test_nul_in_query_is_422(api: Api, url: str) -> None:
    response = api.get(url)
    assert response.status_code == 422 and error(response)["details"][0]["location"] == "query"


@pytest.mark.parametrize("body", ['{"active": 1}', '{"active": "true"}', '{"display_name": 5}'])
def test_json_types_are_strict(api: Api, body: str) -> None:
    assert api.patch("/api/users/li", data=body, content_type="application/json").status_code == 422


@pytest.mark.parametrize("url", [
    "/api/customers/99999999999999999999", "/api/customers/9223372036854775808", "/api/customers/-1",
    "/api/flows/%00/versions", "/api/users/%E2%80%AE", "/api/tasks/0",
])
def test_odd_ids_are_404(api: Api, url: str) -> None:
    assert api.get(url).status_code == 404


def test_deep_data_inside_an_object_is_refused(api: Api) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    response = api.post("/api/instances", json={"flow": "complaint", "data": deep})
    assert response.status_code == 422


def test_the_api_ignores_the_session_cookie(app: Any) -> None:
    """Signed in on the web, with no Bearer token: the API answers 401, so CSRF cannot reach it."""
    import re as _re

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = _re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"username": "admin", "password": "careflow-demo", "csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 200
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/customers", json={"name": "跨站"}).status_code == 401


def test_api_posts_need_no_csrf_token(api: Api) -> None:
    assert api.post("/api/customers", json={"name": "无需令牌", "phone": "+8613900000001"}).status_code == 201


def test_wrong_scheme_or_garbage_token_is_401(api: Api) -> None:
    for header in ("Basic YWRtaW46eA==", "Bearer", "Bearer cf_" + "x" * 43, "Bearer " + "y" * 500, "Token abc"):
        response = api.client.get("/api/me", headers={"Authorization": header})
        assert response.status_code == 401, header
