"""``careflow users``, ``careflow tokens``, ``careflow audit`` and ``careflow webhooks``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from engine.app import create_app
from engine.cli import main
from engine.core import Careflow


@pytest.fixture
def run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CAREFLOW_SECRET_KEYS", Fernet.generate_key().decode())

    def invoke(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(main, ["--database", url, "--now", "2026-11-24T09:00+08:00", *args],
                                  input=input, catch_exceptions=False)

    invoke.url = url  # type: ignore[attr-defined]
    return invoke


def test_users_create_update_list(run: Any) -> None:
    created = run("users", "create", "wu", "--name", "客户经理 吴刚", "--role", "account_manager", "--role", "vip_care",
                  "--team", "south", "--region", "广州", "--password-stdin", "--by", "root", input="a-long-password\n")
    assert created.exit_code == 0, created.output
    listed = run("--json", "users", "list")
    user = next(u for u in json.loads(listed.output) if u["username"] == "wu")
    assert user["roles"] == ["account_manager", "vip_care"] and user["has_password"]
    assert run("users", "update", "wu", "--inactive").exit_code == 0
    assert "inactive" in run("users", "list").output
    short = run("users", "create", "xu", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "password" in short.output


def test_users_language_and_reminder_channel(run: Any) -> None:
    import sqlalchemy as sa

    from engine.store.db import make_engine

    def stored() -> tuple[Any, ...]:
        engine = make_engine(run.url)
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT language, notify, im_id FROM app_user WHERE username = 'wu'")).one()
        engine.dispose()
        return tuple(row)

    assert run("users", "create", "wu", "--notify", "both", "--im-id", "wu.gang").exit_code == 0
    assert stored() == (None, "both", "wu.gang")
    assert run("users", "update", "wu", "--language", "en", "--notify", "im").exit_code == 0
    assert stored() == ("en", "im", "wu.gang")
    assert run("users", "update", "wu", "--language", "browser", "--im-id", "").exit_code == 0
    assert stored() == (None, "im", None)
    injected = run("users", "update", "wu", "--im-id", "x>[link](http://evil)")
    assert injected.exit_code == 1 and "im_id" in injected.output
    assert stored() == (None, "im", None)


def test_tokens_create_prints_once_and_works(run: Any) -> None:
    run("users", "create", "api-bot", "--role", "admin")
    created = run("tokens", "create", "api-bot", "--scope", "read", "--scope", "write", "--name", "ERP", "--by", "root")
    assert created.exit_code == 0, created.output
    token = created.output.strip()
    assert token.startswith("cf_") and len(token) > 40
    listed = run("tokens", "list")
    assert "api-bot" in listed.output and token not in listed.output and token[:10] in listed.output
    engine = Careflow(run.url)
    try:
        client = create_app({"TESTING": True, "SECRET_KEY": "x"}, engine=engine).test_client()
        me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.get_json()["scopes"] == ["read", "write"]
        token_id = json.loads(run("--json", "tokens", "list").output)[0]["id"]
        assert run("tokens", "revoke", str(token_id)).exit_code == 0
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        engine.close()
    assert "REVOKED" in run("tokens", "list", "--all").output
    assert run("tokens", "create", "ghost", "--scope", "read").exit_code == 1
    assert run("tokens", "create", "api-bot", "--scope", "root").exit_code == 2


def test_audit_lists_the_changes(run: Any) -> None:
    run("users", "create", "wu", "--role", "designer", "--by", "root")
    run("tokens", "create", "wu", "--scope", "read", "--by", "root")
    out = run("audit").output
    assert "user.create" in out and "token.create" in out
    only = json.loads(run("--json", "audit", "--action", "token.").output)
    assert [e["action"] for e in only] == ["token.create"]


def test_webhooks_create_list_delete(run: Any) -> None:
    created = run("webhooks", "create", "shop", "--flow", "complaint", "--event", "order_paid")
    assert created.exit_code == 0 and created.output.startswith("whsec_")
    assert "flows=complaint" in run("webhooks", "list").output
    assert run("webhooks", "create", "shop").exit_code == 1
    assert run("webhooks", "delete", "shop").exit_code == 0
    assert "no webhooks" in run("webhooks", "list").output
