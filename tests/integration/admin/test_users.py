"""Users, roles and tokens: create and edit with field errors, a token shown once and revoked, audit."""

from __future__ import annotations

import re

from engine.core import Careflow


def test_create_and_edit_a_user(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in()
    admin.text("/admin/users")
    response = admin.post("/admin/users", {"username": "sun", "display_name": "客服 孙丽", "roles": ["service_agent"],
                                           "custom_roles": "qa_reviewer", "team": "service", "password": "long-enough-pw"})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/users/sun"
    assert cf.user("sun")["roles"] == ["service_agent", "qa_reviewer"]
    page = admin.text("/admin/users/sun")
    assert 'id="role-qa_reviewer"' in page and "User sun created." in page
    admin.post("/admin/users/sun", {"display_name": "客服 孙丽", "roles": ["service_lead"], "team": "service", "language": "en"})
    user = cf.user("sun")
    assert user["roles"] == ["service_lead"] and user["active"] is False and user["language"] == "en"
    entries, _ = cf.audit_entries(action="user.update", target_id="sun")
    assert set(entries[0]["data"]["changed"]) >= {"roles", "active", "language"}


def test_user_errors_are_in_the_page_language(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in(lang="zh")
    admin.text("/admin/users")
    response = admin.post("/admin/users", {"username": "Bad Name", "password": "short"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="err-username"' in html and 'id="err-password"' in html and "密码" in html
    taken = admin.post("/admin/users", {"username": "wang"})
    assert taken.status_code == 422 and 'id="err-username"' in taken.get_data(as_text=True)
    # an admin cannot lock themselves out
    admin.text("/admin/users/admin")
    me = admin.post("/admin/users/admin", {"display_name": "系统管理员", "roles": ["admin"]})
    assert me.status_code == 422 and cf.user("admin")["active"] is True


def test_token_is_shown_once_works_and_is_revoked(cf: Careflow, signed_in, app) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in()
    admin.text("/admin/tokens")
    response = admin.post("/admin/tokens", {"user": "wang", "name": "crm-sync", "scopes": ["read"], "expires_in_days": "30"})
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    token = re.search(r'id="token-text" value="([^"]+)"', response.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    api = app.test_client()
    assert api.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listing = admin.text("/admin/tokens")
    assert token not in listing and "crm-sync" in listing
    token_id = next(t["id"] for t in cf.list_tokens("wang"))
    admin.post(f"/admin/tokens/{token_id}/revoke", {"user": "wang"})
    assert api.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert [e["action"] for e in cf.audit_entries(action="token.")[0]] == ["token.revoke", "token.create"]


def test_token_form_errors(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in()
    admin.text("/admin/tokens")
    response = admin.post("/admin/tokens", {"user": "wang", "name": "", "expires_in_days": "0"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert all(f'id="err-{f}"' in html for f in ("name", "scopes", "expires_in_days"))
    assert cf.list_tokens("wang") == []


def test_users_tokens_and_audit_are_admin_only(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    zhao = signed_in("zhao")
    for path in ("/admin/users", "/admin/users/wang", "/admin/tokens", "/admin/audit"):
        assert zhao.get(path).status_code == 403, path
    zhao.text("/admin/instances")
    assert zhao.post("/admin/tokens", {"user": "zhao", "name": "x", "scopes": ["admin"]}).status_code == 403
    assert cf.list_tokens("zhao") == []


def test_audit_log_filters(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    cf.create_customer({"name": "周杰", "owner": "wang"}, actor="wang")
    admin = signed_in()
    html = admin.text("/admin/audit?action=customer.")
    assert "customer.create" in html and "login.ok" not in html
    by_actor = admin.text("/admin/audit?actor=admin&action=login.ok")
    assert "login.ok" in by_actor and "customer.create" not in by_actor
    future = admin.text("/admin/audit?since=2030-01-01")
    assert "No entry matches." in future
    bad = admin.get("/admin/audit?since=yesterday")
    assert bad.status_code == 422 and "Enter a date like 2026-11-24." in bad.get_data(as_text=True)
