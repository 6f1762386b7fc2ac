"""The minimal web app: health, login (no open redirect), the status page."""

from __future__ import annotations

import pytest

from engine.app import create_app


@pytest.fixture
def client(cf_sqlite):  # type: ignore[no-untyped-def]
    app = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite)
    return app.test_client()


def test_health_answers_without_login(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_pages_need_login(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_wrong_password_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/login", data={"username": "admin", "password": "nope"})
    assert response.status_code == 401
    assert "用户名或密码错误" in response.get_data(as_text=True)


def test_login_shows_the_deployed_flows(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/login", data={"username": "admin", "password": "careflow-demo"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    for name in ("新客户欢迎", "定期回访", "投诉处理", "生日关怀", "流失挽回"):
        assert name in page


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\\\evil.example"])
def test_login_never_redirects_off_site(client, target: str) -> None:  # type: ignore[no-untyped-def]
    response = client.post(f"/login?next={target}", data={"username": "admin", "password": "careflow-demo"})
    assert response.status_code == 302
    assert "evil.example" not in response.headers["Location"]


def test_session_cookie_is_httponly_and_samesite(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/login", data={"username": "admin", "password": "careflow-demo"})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_instance_api_gives_json_errors(client, cf_sqlite) -> None:  # type: ignore[no-untyped-def]
    client.post("/login", data={"username": "admin", "password": "careflow-demo"})
    response = client.get("/api/instances/999")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
