"""Attached connectors: validated settings, encrypted and masked secrets, rotation, routing, caps."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from engine.errors import SubmissionInvalid
from engine.core import Careflow
from engine.secrets import SecretBox
from engine.store.models import OutboxMessage
from tests.support.fakes import SecretProvider

KEY = "sk-live-0123456789"


@pytest.fixture
def mail(cf):  # type: ignore[no-untyped-def]
    provider = SecretProvider()
    cf.registry.register(provider)
    cf.save_connector("mail-main", "fakemail", {"api_key": KEY, "from_address": "care@example.com"}, by="admin")
    cf.save_connector("email", "email", {"provider": "mail-main", "marketing_per_week": 2}, by="admin")
    return provider


def raw_rows(cf) -> str:  # type: ignore[no-untyped-def]
    with cf.db.connect() as conn:
        return json.dumps([list(map(str, r)) for r in conn.execute(text("select * from connector_config"))])


def test_secrets_are_encrypted_at_rest_and_masked_when_shown(cf, mail):
    assert KEY not in raw_rows(cf)
    shown = {c["name"]: c for c in cf.connectors()}
    assert shown["mail-main"]["settings"] == {"from_address": "care@example.com", "api_key": "••••6789"}
    assert shown["email"]["settings"] == {"provider": "mail-main", "marketing_per_week": 2}


def test_settings_are_validated_against_the_connector_schema(cf, mail):
    with pytest.raises(SubmissionInvalid) as exc:
        cf.save_connector("mail-2", "fakemail", {"api_key": "short", "from_address": "nope"})
    assert {e.field for e in exc.value.errors} == {"api_key", "from_address"}
    with pytest.raises(SubmissionInvalid, match="No connector by the name 'fax'"):
        cf.save_connector("fax-1", "fax", {})


def test_updating_without_the_secret_keeps_it(cf, mail):
    cf.save_connector("mail-main", "fakemail", {"from_address": "service@example.com"})
    assert cf.test_send("mail-main", "a@example.com", "hello")["status"] == "sent"
    assert mail.sent[-1]["to"] == "a@example.com"


def test_test_send_reports_the_provider_error(cf, mail):
    cf.save_connector("mail-main", "fakemail", {"api_key": "sk-wrong-00000", "from_address": "care@example.com"})
    result = cf.test_send("email", "a@example.com", "hello")
    assert result["status"] == "failed" and "bad api key" in result["error"]


def restarted(cf, keys: list[bytes]) -> Careflow:  # type: ignore[no-untyped-def]
    """The same database opened again by a process started with other CAREFLOW_SECRET_KEYS."""
    return Careflow(cf.url, clock=cf.clock, registry=cf.registry, secrets=SecretBox(keys))


def test_rotation_re_encrypts_under_the_new_key(cf, mail):
    old = cf.secrets.keys
    new = Fernet.generate_key()
    both = restarted(cf, [new, *old])
    assert both.rotate_secrets() == 1
    only_new = restarted(cf, [new])  # the old key retired
    assert only_new.test_send("mail-main", "a@example.com", "after rotation")["status"] == "sent"
    only_old = restarted(cf, old)
    result = only_old.test_send("mail-main", "a@example.com", "old key")
    assert result["status"] == "failed" and "cannot be decrypted" in result["error"]
    for engine in (both, only_new, only_old):
        engine.close()


def test_a_disabled_connector_fails_clearly(cf, mail):
    cf.set_connector_enabled("mail-main", False)
    result = cf.test_send("email", "a@example.com", "hello")
    assert result["status"] == "failed" and "disabled" in result["error"]


def test_marketing_messages_respect_the_weekly_cap(cf, clock, mail):
    from tests.support.flowtest import later

    cid = cf.create_customer({"name": "张伟", "email": "z@example.com", "owner": "wang", "preferred_channel": "email"},
                             fire_triggers=False)
    with cf.sessions.begin() as s:
        for i in range(3):
            s.add(OutboxMessage(effect_key=f"m{i}", connector="email", payload={"text": f"offer {i}"},
                                customer_id=cid, category="marketing", status="pending", attempts=0, max_attempts=1,
                                backoff_seconds=0, next_attempt_at=clock.now(), created_at=clock.now()))
    cf.tick()
    with cf.session() as s:
        statuses = [(m.status, m.last_error) for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert statuses == [("sent", None), ("sent", None), ("suppressed", "frequency_cap")]
    later(cf, clock, days=8)
    assert cf.test_send("email", "z@example.com", "service message")["status"] == "sent"
