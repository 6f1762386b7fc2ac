"""What every web page shares: language choice, catalogs from several folders, layout, CSP, CSRF."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from flask.testing import FlaskClient

from engine.app import create_app
from engine.i18n import TRANSLATION_DIRECTORIES, when
from tests.integration.test_app import csrf_token, sign_in
from tests.support.pagetext import untranslated


@pytest.fixture
def app(cf_sqlite):  # type: ignore[no-untyped-def]
    return create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite)


@pytest.fixture
def client(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    return app.test_client()


def heading(html: str) -> str:
    match = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    assert match, html
    return match.group(1).strip()


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "登录 Careflow"),
    ("zh-CN,zh;q=0.9", "登录 Careflow"),
    ("zh-TW", "登录 Careflow"),
    ("en-US,en;q=0.8", "Sign in to Careflow"),
    ("fr-FR,en;q=0.5", "Sign in to Careflow"),
    ("fr-FR", "登录 Careflow"),
])
def test_language_follows_the_browser_and_defaults_to_chinese(client: FlaskClient, accept: str | None, expected: str) -> None:
    headers = {"Accept-Language": accept} if accept else {}
    html = client.get("/login", headers=headers).get_data(as_text=True)
    assert heading(html) == expected
    assert ('lang="en"' if "Sign" in expected else 'lang="zh-CN"') in html.split("\n", 2)[1]


def test_language_switch_is_remembered_and_returns_to_the_page(client: FlaskClient) -> None:
    token = csrf_token(client)
    response = client.post("/lang", data={"lang": "en", "next": "/login?x=1", "csrf_token": token},
                           headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 302 and response.headers["Location"] == "/login?x=1"
    assert heading(client.get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)) == "Sign in to Careflow"
    # ?lang= still wins for one page (customer links carry it)
    assert heading(client.get("/login?lang=zh").get_data(as_text=True)) == "登录 Careflow"


def test_language_switch_needs_csrf_and_refuses_foreign_targets(client: FlaskClient) -> None:
    assert client.post("/lang", data={"lang": "en"}).status_code == 400
    token = csrf_token(client)
    response = client.post("/lang", data={"lang": "en", "next": "//evil.example/", "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_sign_in_errors_are_in_the_page_language(client: FlaskClient) -> None:
    english = client.application.test_client()
    token = csrf_token(english)
    response = english.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": token},
                            headers={"Accept-Language": "en"})
    assert response.status_code == 401 and "Wrong user name or password." in response.get_data(as_text=True)
    assert "用户名或密码错误" in sign_in(client, password="wrong").get_data(as_text=True)  # type: ignore[attr-defined]


def test_catalogs_from_several_folders_are_merged(cf_sqlite, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    extra = tmp_path / "admin-translations"
    catalog = Catalog(locale="zh_Hans_CN", fuzzy=False)
    catalog.add("Dashboard-only string", "仪表盘专用")
    target = extra / "zh_Hans_CN" / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (target / "messages.mo").open("wb") as handle:
        write_mo(handle, catalog)
    folders = ";".join([str(TRANSLATION_DIRECTORIES[0]), str(extra)])
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "BABEL_TRANSLATION_DIRECTORIES": folders}, engine=cf_sqlite)
    from flask_babel import gettext

    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert gettext("Dashboard-only string") == "仪表盘专用"
        assert gettext("Sign out") == "退出"
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert gettext("Dashboard-only string") == "Dashboard-only string"


def test_the_default_folders_include_the_admin_catalogs(app) -> None:  # type: ignore[no-untyped-def]
    folders = app.config["BABEL_TRANSLATION_DIRECTORIES"].split(";")
    assert [Path(f).parent.name + "/" + Path(f).name for f in folders] == ["engine/translations", "admin/translations"]


def test_dates_are_shown_in_shanghai_time_in_the_page_language(app) -> None:  # type: ignore[no-untyped-def]
    moment = datetime(2026, 11, 24, 1, 0, tzinfo=ZoneInfo("UTC"))
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert when(moment) == "2026年11月24日 09:00:00"
        assert when("2026-11-24T01:00:00+00:00") == "2026年11月24日 09:00:00"
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert when(moment) == "Nov 24, 2026, 9:00:00\u202fAM"
        assert when("2026-12-01") == "Dec 1, 2026"


def test_pages_carry_a_csp_without_inline_scripts(client: FlaskClient) -> None:
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script on the page"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler on the page"
    assert 'hx-headers:inherited=\'{"X-CSRFToken": "' in html


def test_htmx_requests_pass_csrf_with_the_header(client: FlaskClient) -> None:
    token = csrf_token(client)
    response = client.post("/lang", data={"lang": "en"}, headers={"X-CSRFToken": token})
    assert response.status_code == 302


def test_vendored_assets_are_served(client: FlaskClient) -> None:
    html = client.get("/login").get_data(as_text=True)
    for path in re.findall(r'(?:href|src)="(/static/[^"]+)"', html):
        response = client.get(path)
        response.close()
        assert response.status_code == 200, path


@pytest.mark.parametrize(("user", "shown", "hidden"), [
    ("wang", ["/inbox"], []),
    ("admin", ["/inbox", "/"], []),
])
def test_navigation_shows_the_pages_of_the_users_roles(client: FlaskClient, user: str, shown: list[str], hidden: list[str]) -> None:
    sign_in(client, user)
    html = client.get("/").get_data(as_text=True)
    nav = html.split('id="nav-main"', 1)[1].split("</nav>", 1)[0]
    for path in shown:
        assert f'href="{path}"' in nav
    for path in hidden:
        assert f'href="{path}"' not in nav
    assert "Sign out" not in nav and "退出" in nav


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_layout_pages_have_no_untranslated_text(client: FlaskClient, lang: str) -> None:
    headers = {"Accept-Language": lang}
    assert untranslated(client.get("/login", headers=headers).get_data(as_text=True), lang) == []
    sign_in(client, "admin")
    for path in ("/", "/inbox"):
        html = client.get(path, headers=headers).get_data(as_text=True)
        assert untranslated(html, lang) == [], path
