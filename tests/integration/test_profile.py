"""A user's own language and reminder settings: "My profile", the language switch, the admins' user page."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from engine.app import create_app
from tests.integration.test_app import PASSWORD, csrf_token, sign_in
from tests.support.pagetext import untranslated

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture
def app(cf_sqlite):  # type: ignore[no-untyped-def]
    return create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite)


@pytest.fixture
def client(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    return app.test_client()


def html_lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match
    return match.group(1)


def token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_the_users_language_wins_over_the_browser_after_sign_in(cf_sqlite, client: FlaskClient) -> None:
    cf_sqlite.update_user("chen", {"language": "en"})
    assert html_lang(client.get("/login", headers=ZH).get_data(as_text=True)) == "zh-CN"  # signed out: the browser
    sign_in(client, "chen")
    assert html_lang(client.get("/inbox", headers=ZH).get_data(as_text=True)) == "en"
    # A user who chose nothing follows the browser.
    other = client.application.test_client()
    sign_in(other, "wang")
    assert html_lang(other.get("/inbox", headers=EN).get_data(as_text=True)) == "en"
    assert html_lang(other.get("/inbox", headers=ZH).get_data(as_text=True)) == "zh-CN"


def test_the_switch_persists_the_users_choice_for_the_next_sign_in(cf_sqlite, client: FlaskClient) -> None:
    sign_in(client, "wang")
    token = token_of(client.get("/inbox", headers=ZH).get_data(as_text=True))
    client.post("/lang", data={"lang": "en", "next": "/inbox", "csrf_token": token}, headers=ZH)
    assert cf_sqlite.user("wang")["language"] == "en"
    fresh = client.application.test_client()
    sign_in(fresh, "wang")
    assert html_lang(fresh.get("/inbox", headers=ZH).get_data(as_text=True)) == "en"
    # Signed out, the switch only changes the session.
    anonymous = client.application.test_client()
    anonymous.post("/lang", data={"lang": "zh", "csrf_token": csrf_token(anonymous)})
    assert cf_sqlite.user("wang")["language"] == "en"


def test_my_profile_changes_language_reminders_and_im_id(cf_sqlite, client: FlaskClient) -> None:
    sign_in(client, "chen")
    page = client.get("/profile", headers=ZH).get_data(as_text=True)
    assert "个人设置" in page and 'name="notify"' in page
    saved = client.post("/profile", data={"csrf_token": token_of(page), "language": "en", "notify": "im",
                                          "im_id": "ou_chen"}, headers=ZH)
    assert saved.status_code == 302 and saved.headers["Location"] == "/profile"
    user = cf_sqlite.user("chen")
    assert (user["language"], user["notify"], user["im_id"]) == ("en", "im", "ou_chen")
    html = client.get("/profile", headers=ZH).get_data(as_text=True)
    assert html_lang(html) == "en" and "Your settings are saved." in html
    bad = client.post("/profile", data={"csrf_token": token_of(html), "language": "fr", "notify": "pigeon",
                                        "im_id": "has space"})
    assert bad.status_code == 422
    assert 'id="err-im_id"' in bad.get_data(as_text=True)
    assert cf_sqlite.user("chen")["notify"] == "im"
    # Only these fields: the profile cannot grant roles.
    client.post("/profile", data={"csrf_token": token_of(html), "notify": "none", "roles": "admin"})
    assert cf_sqlite.user("chen")["roles"] == ["service_agent"] and cf_sqlite.user("chen")["notify"] == "none"
    audit, _total = cf_sqlite.audit_entries(action="user.profile")
    assert audit and audit[0]["actor"] == "chen"


def test_an_admin_sets_a_users_reminders_on_the_user_page(cf_sqlite, client: FlaskClient) -> None:
    sign_in(client, "admin")
    page = client.get("/admin/users/wang", headers=EN).get_data(as_text=True)
    assert 'name="notify"' in page and 'name="im_id"' in page
    form = {"csrf_token": token_of(page), "display_name": "王伟", "roles": ["account_manager"], "active": "true",
            "language": "", "notify": "both", "im_id": "wangwei"}
    response = client.post("/admin/users/wang", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)
    user = cf_sqlite.user("wang")
    assert (user["language"], user["notify"], user["im_id"]) == (None, "both", "wangwei")


@pytest.mark.parametrize("headers", [ZH, EN])
def test_the_profile_page_is_translated(client: FlaskClient, headers: dict[str, str]) -> None:
    sign_in(client, "chen")
    lang = "zh" if headers is ZH else "en"
    html = client.get("/profile", headers=headers).get_data(as_text=True)
    assert untranslated(html, lang) == []
    assert 'href="/profile"' in html  # in the navigation


def test_signing_in_keeps_the_password_rules(client: FlaskClient) -> None:
    """The deep link's sign-in is the ordinary one: a wrong password still fails."""
    token = csrf_token(client)
    response = client.post("/login?next=/tasks/1", data={"username": "chen", "password": PASSWORD + "x", "csrf_token": token})
    assert response.status_code == 401


@pytest.mark.parametrize("headers, words", [
    (ZH, ("语言：不支持“fr”", "任务提醒：“pigeon”不是可选项", "IM 用户 ID：“[x](https://evil.example)”无效")),
    (EN, ("Language: “fr” is not offered", "Task reminders: “pigeon” is not a choice",
          "IM user ID: “[x](https://evil.example)” is not valid")),
])
def test_every_bad_reminder_field_is_named_with_its_value(cf_sqlite, client: FlaskClient, headers: dict[str, str],
                                                          words: tuple[str, ...]) -> None:
    sign_in(client, "chen")
    page = client.get("/profile", headers=headers).get_data(as_text=True)
    bad = client.post("/profile", data={"csrf_token": token_of(page), "language": "fr", "notify": "pigeon",
                                        "im_id": "[x](https://evil.example)"}, headers=headers)
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    for field in ("language", "notify", "im_id"):
        assert f'id="err-{field}"' in html
    for text in words:
        assert text.replace("“", "&#8220;") in html or text in html, text


@pytest.mark.parametrize("im_id", ["<@all>", "[x](https://evil.example)", "a b", "陈", "x" * 65, '"><at id=all>'])
def test_an_im_id_is_only_letters_digits_and_a_few_signs_everywhere(cf_sqlite, client: FlaskClient, im_id: str) -> None:
    from engine.errors import SubmissionInvalid

    with pytest.raises(SubmissionInvalid) as refused:  # what the users API and both pages call
        cf_sqlite.update_user("wang", {"im_id": im_id})
    assert refused.value.errors[0].field == "im_id" and im_id[:60] in refused.value.errors[0].message
    cf_sqlite.update_user("wang", {"im_id": "wang.wei-01@corp_x"})  # all the signs an IM id may have
    sign_in(client, "admin")
    page = client.get("/admin/users/wang", headers=EN).get_data(as_text=True)
    form = {"csrf_token": token_of(page), "display_name": "王伟", "roles": ["account_manager"], "active": "true",
            "language": "", "notify": "im", "im_id": im_id}
    response = client.post("/admin/users/wang", data=form, headers=EN)
    assert response.status_code == 422 and 'id="err-im_id"' in response.get_data(as_text=True)
    assert "IM user ID: “" in response.get_data(as_text=True)
    assert cf_sqlite.user("wang")["im_id"] == "wang.wei-01@corp_x"
