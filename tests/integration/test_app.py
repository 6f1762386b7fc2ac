"""The web app: health, sign-in with CSRF, cookie flags, session rotation, lockout, sign-out."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from engine.app import create_app
from engine.auth import lockout

PASSWORD = "careflow-demo"


@pytest.fixture
def app(cf_sqlite):  # type: ignore[no-untyped-def]
    return create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite)


@pytest.fixture
def client(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    return app.test_client()


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def sign_in(client: FlaskClient, username: str = "admin", password: str = PASSWORD, next_: str = "",
            ip: str = "127.0.0.1") -> object:
    token = csrf_token(client)
    url = f"/login?next={next_}" if next_ else "/login"
    return client.post(url, data={"username": username, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": ip})


def session_cookie(response: object) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]  # type: ignore[attr-defined]
    assert cookies, "no session cookie was set"
    return cookies[-1]


def test_health_answers_without_login(client: FlaskClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_pages_need_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_wrong_password_is_refused(client: FlaskClient) -> None:
    response = sign_in(client, password="nope")
    assert response.status_code == 401
    assert "用户名或密码错误" in response.get_data(as_text=True)


def test_login_shows_the_deployed_flows(client: FlaskClient) -> None:
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    for name in ("新客户欢迎", "定期回访", "投诉处理", "生日关怀", "流失挽回"):
        assert name in page


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\\\evil.example", "/\\evil.example"])
def test_login_never_redirects_off_site(client: FlaskClient, target: str) -> None:
    response = sign_in(client, next_=target)
    assert response.status_code == 302
    assert "evil.example" not in response.headers["Location"]


def test_login_keeps_a_same_site_next(client: FlaskClient) -> None:
    response = sign_in(client, next_="/?tab=tasks")
    assert response.headers["Location"] == "/?tab=tasks"


def test_session_cookie_is_httponly_and_samesite(client: FlaskClient) -> None:
    cookie = session_cookie(sign_in(client))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_session_cookie_is_secure_when_configured(cf_sqlite) -> None:  # type: ignore[no-untyped-def]
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "SESSION_COOKIE_SECURE": "true"}, engine=cf_sqlite)
    client = app.test_client()
    assert "Secure" in session_cookie(sign_in(client))


def test_session_cookie_is_secure_by_default_except_on_loopback_http(cf_sqlite) -> None:  # type: ignore[no-untyped-def]
    app = create_app({"SECRET_KEY": "test"}, engine=cf_sqlite)
    local = app.test_client()
    assert "Secure" not in session_cookie(local.get("/login", base_url="http://127.0.0.1:5000"))
    remote = app.test_client()
    assert "Secure" in session_cookie(remote.get("/login", base_url="http://care.example.com"))
    assert "Secure" in session_cookie(app.test_client().get("/login", base_url="https://care.example.com"))


def test_login_without_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 400
    assert "页面已过期" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not signed in


def test_csrf_token_of_another_session_is_refused(app) -> None:  # type: ignore[no-untyped-def]
    other = app.test_client()
    token = csrf_token(other)
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 400


def test_logout_needs_csrf_token(client: FlaskClient) -> None:
    sign_in(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
    token = csrf_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_every_cookie_form_route_is_csrf_protected(app, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    """Every state-changing route outside /api (which takes no cookies) refuses a token-less request."""
    client.get("/login")
    checked = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/static")):
            continue
        for method in sorted((rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}):
            path = re.sub(r"<(?:int|id):[^>]+>", "1", rule.rule)
            path = re.sub(r"<any\(([^,)]+)[^>]*>", r"\1", path)  # the first of the allowed words
            path = re.sub(r"<[^>]+>", "x", path)
            response = client.open(path, method=method, data={})
            assert response.status_code == 400, (method, rule.rule, response.status_code)
            checked.append((method, rule.rule))
    assert ("POST", "/login") in checked and ("POST", "/logout") in checked and ("POST", "/l/<path:token>") in checked


def test_session_is_rotated_at_login(client: FlaskClient) -> None:
    before = session_cookie(client.get("/login"))
    after = session_cookie(sign_in(client))
    assert before.split(";")[0] != after.split(";")[0]


def test_a_stolen_cookie_stops_working_after_logout(app, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    token = csrf_token(client, "/")
    client.post("/logout", data={"csrf_token": token})
    thief = app.test_client()
    thief.set_cookie("session", cookie.value)
    assert thief.get("/").status_code == 302


def test_deactivated_user_loses_the_session(cf_sqlite, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "wang")
    assert client.get("/").status_code == 200
    cf_sqlite.update_user("wang", {"active": False}, actor="admin")
    assert client.get("/").status_code == 302


def test_lockout_after_repeated_failures(cf_sqlite, client: FlaskClient, clock) -> None:  # type: ignore[no-untyped-def]
    for _ in range(lockout.MAX_FAILURES):
        assert sign_in(client, "wang", "wrong-password").status_code == 401
    locked = sign_in(client, "wang", PASSWORD)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    # The same user from another address, and another user, are not locked out by these failures.
    assert sign_in(client.application.test_client(), "wang", PASSWORD, ip="10.1.2.3").status_code == 302
    assert sign_in(client.application.test_client(), "li", PASSWORD).status_code == 302
    clock.set(clock.now() + lockout.LOCK_FOR + timedelta(seconds=1))
    assert sign_in(client, "wang", PASSWORD).status_code == 302
    actions = [e["action"] for e in cf_sqlite.audit_entries(actor="wang")[0]]
    assert actions.count("login.failed") == lockout.MAX_FAILURES
    assert "login.locked" in actions and "login.ok" in actions


def test_lockout_holds_across_processes(cf_sqlite, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    """The attempts are rows: a second app on the same database sees them."""
    for _ in range(lockout.MAX_FAILURES):
        sign_in(client, "wang", "wrong-password")
    second = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite).test_client()
    assert sign_in(second, "wang", PASSWORD).status_code == 429


def test_unknown_user_costs_like_a_wrong_password(client: FlaskClient) -> None:
    assert sign_in(client, "nobody", "whatever-1234").status_code == 401


def test_passwords_are_stored_as_scrypt(cf_sqlite) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from engine.store.models import User

    cf_sqlite.create_user({"username": "newbie", "roles": ["service_agent"], "password": "a-long-password"}, actor="admin")
    with cf_sqlite.session() as s:
        stored = s.scalars(select(User.password_hash).where(User.username == "newbie")).one()
    assert stored is not None and stored.startswith("scrypt:")
