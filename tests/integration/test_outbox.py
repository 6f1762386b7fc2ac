"""The outbox: retries with backoff, permanent failures as incidents, no blind resend after a crash."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sqlalchemy import select, update

from engine.errors import Conflict
from engine.store.models import Incident, OutboxMessage
from tests.support.flowtest import later

CUSTOMER = {"name": "张伟", "phone": "+8613800138000", "email": "zhangwei@example.com", "region": "上海",
            "owner": "wang", "preferred_channel": "email"}


def rows(cf):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def incidents(cf):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.scalars(select(Incident).order_by(Incident.id)))


def start_winback(cf):  # type: ignore[no-untyped-def]
    cid = cf.create_customer(CUSTOMER, fire_triggers=False)
    return cf.start("winback", customer_id=cid)


def test_transient_failures_are_retried_with_backoff_then_sent_once(cf, clock, provider):
    start_winback(cf)
    provider.fail_next("transient", "transient")
    report = cf.tick()
    assert report["outbox"]["retried"] == 1
    [row] = rows(cf)
    assert row.status == "pending" and row.attempts == 1
    # The first retry waits backoff·(0.5–1.5): between 30 and 90 seconds for a 60 s backoff.
    assert timedelta(seconds=30) <= row.next_attempt_at - clock.now() <= timedelta(seconds=90)
    later(cf, clock, seconds=91)
    later(cf, clock, seconds=181)
    [row] = rows(cf)
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(provider.sent) == 1
    assert incidents(cf) == []


def test_a_permanent_failure_becomes_an_incident_an_admin_can_retry(cf, provider):
    iid = start_winback(cf)
    provider.fail_next("permanent")
    cf.tick()
    [row] = rows(cf)
    assert row.status == "failed" and "invalid recipient" in (row.last_error or "")
    [incident] = incidents(cf)
    assert (incident.kind, incident.instance_id, incident.step_id) == ("delivery_failed", iid, "offer")
    cf.resolve_incident(incident.id, "retry", "admin")
    cf.tick()
    assert [r.status for r in rows(cf)] == ["sent"]
    assert len(provider.sent) == 1
    assert incidents(cf)[0].status == "resolved"


def test_retries_stop_after_max_attempts(cf, clock, provider):
    start_winback(cf)
    provider.fail_next(*["transient"] * 10)
    for _ in range(6):
        later(cf, clock, hours=1)
    [row] = rows(cf)
    assert (row.status, row.attempts) == ("failed", 5)
    assert [i.kind for i in incidents(cf)] == ["delivery_failed"]
    assert provider.sent == []


def test_a_send_interrupted_after_the_provider_call_is_not_resent_blindly(cf, clock, provider):
    start_winback(cf)
    with cf.sessions.begin() as s:
        # As if a dispatcher claimed the message, called the provider, and died before recording it.
        s.execute(update(OutboxMessage).values(status="sending", attempts=1, lease_until=clock.now() + timedelta(minutes=2)))
    cf.tick()
    assert rows(cf)[0].status == "sending"  # the lease still runs: maybe another dispatcher is on it
    later(cf, clock, minutes=3)
    [row] = rows(cf)
    assert row.status == "unknown"
    assert [i.kind for i in incidents(cf)] == ["delivery_unknown"]
    assert provider.sent == []


def test_an_idempotent_connector_is_resent_after_an_interruption(cf, clock):
    from tests.integration.test_time import DATA

    cf.deploy([DATA / "burst.yaml"])
    iid = cf.start("burst")
    later(cf, clock, hours=1)
    assert cf.describe(iid)["status"] == "completed"
    with cf.sessions.begin() as s:
        s.execute(update(OutboxMessage).values(status="sending", lease_until=clock.now() - timedelta(seconds=1)))
    cf.tick()
    assert [r.status for r in rows(cf)] == ["sent"]


def test_no_provider_attached_is_a_clear_incident(cf, provider):
    cf.connector_settings.pop("sms")
    cid = cf.create_customer({**CUSTOMER, "preferred_channel": "sms"}, fire_triggers=False)
    cf.start("winback", customer_id=cid)
    cf.tick()
    [incident] = incidents(cf)
    assert "no provider is attached to the sms channel" in incident.message


def test_a_claimed_message_that_never_reached_the_provider_is_sent_after_a_crash(cf, clock, provider):
    start_winback(cf)
    with cf.sessions.begin() as s:
        # As if a dispatcher claimed a batch and died before calling the provider for this one.
        s.execute(update(OutboxMessage).values(status="claimed", attempts=1, lease_until=clock.now() + timedelta(minutes=2)))
    later(cf, clock, minutes=3)
    assert [r.status for r in rows(cf)] == ["sent"]
    assert len(provider.sent) == 1 and incidents(cf) == []


def test_no_answer_from_the_provider_is_unknown_not_retried(cf, clock, provider):
    start_winback(cf)
    provider.fail_next("ambiguous")
    report = cf.tick()
    assert report["outbox"]["unknown"] == 1
    [row] = rows(cf)
    assert row.status == "unknown" and "not resent" in (row.last_error or "")
    later(cf, clock, hours=1)
    assert provider.sent == [] and [i.kind for i in incidents(cf)] == ["delivery_unknown"]


def test_an_unknown_send_can_be_confirmed_or_skipped_by_an_admin(cf, clock, provider):
    start_winback(cf)
    provider.fail_next("ambiguous")
    cf.tick()
    [incident] = incidents(cf)
    cf.resolve_incident(incident.id, "confirm", "admin")
    [row] = rows(cf)
    assert row.status == "sent" and provider.sent == []
    assert incidents(cf)[0].resolution == "confirmed"
    with pytest.raises(Conflict, match="already resolved"):
        cf.resolve_incident(incident.id, "skip", "admin")


def test_a_failed_send_can_be_skipped(cf, provider):
    start_winback(cf)
    provider.fail_next("permanent")
    cf.tick()
    [incident] = incidents(cf)
    cf.resolve_incident(incident.id, "skip", "admin")
    assert [r.status for r in rows(cf)] == ["skipped"]
    with pytest.raises(ValueError, match="unknown incident action"):
        cf.resolve_incident(incident.id, "ignore", "admin")
