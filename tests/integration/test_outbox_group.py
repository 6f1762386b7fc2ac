"""A group of messages through a provider that recognises a repeat (engine.outbox._send_group).

The group's results commit in one transaction when they can; when they cannot (a send failed, a
claim was taken over meanwhile), each result is recorded in a transaction of its own, exactly as
without a group: nothing is lost, nothing is recorded under a claim that is no longer the worker's.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event, select

from connectors.base import ConnectorError
from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.scale import Settings, claim_timers, run_timers, wall_now
from engine.store.instances import start_instance
from engine.store.models import Instance, OutboxMessage, StepExecution
from tests.conftest import START
from tests.scale.support import FLOW_ID, FLOWS, LoggingProvider, ledger_counts

LEASE = timedelta(seconds=30)
N = 5


class _ScriptedProvider(LoggingProvider):
    """Logs each request; ``on_send(n, message)`` runs before the n-th request (1-based) is logged."""

    def __init__(self, on_send: Any) -> None:
        super().__init__()
        self.on_send = on_send
        self.calls = 0

    def send(self, message: Any, settings: Any) -> Any:
        self.calls += 1
        self.on_send(self.calls, message)
        return super().send(message, settings)


def _run(database_url: str, provider: LoggingProvider, commits: list[int] | None = None) -> tuple[Careflow, list[str]]:
    reg = Registry()
    reg.register(provider, "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    cf.deploy([FLOWS])
    with cf.transition() as s:
        for _ in range(N):
            start_instance(s, cf.runtime(), FLOW_ID, trigger={"type": "manual"})
    cf.clock.set(START + timedelta(days=1, minutes=1))  # type: ignore[attr-defined]
    with cf.sessions.begin() as s:
        claims = claim_timers(s, cf.clock.now(), wall_now(), LEASE, 100)
    if commits is not None:
        event.listen(cf.db, "commit", lambda _conn: commits.append(1))
    return cf, run_timers(cf, claims, settings=Settings(lease=LEASE))


def _state(cf: Careflow) -> tuple[list[str], list[tuple[str, int]], Counter[int]]:
    with cf.sessions() as s:
        instances = list(s.scalars(select(Instance.status).order_by(Instance.id)))
        outbox = [(r.status, r.attempts) for r in s.execute(
            select(OutboxMessage.status, OutboxMessage.attempts).order_by(OutboxMessage.id))]
        logged = Counter(s.scalars(select(StepExecution.ref_id).where(StepExecution.kind == "message")))
    return instances, outbox, logged


@pytest.fixture
def ledger(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = tmp_path / "ledger.tsv"
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(path))
    return path


def test_a_group_s_results_commit_together_and_advance_every_instance(database_url: str, ledger: Any) -> None:
    commits: list[int] = []
    cf, outcomes = _run(database_url, LoggingProvider(), commits)
    try:
        assert outcomes == ["fired"] * N
        instances, outbox, logged = _state(cf)
        with cf.sessions() as s:
            revisions = list(s.scalars(select(Instance.revision)))
    finally:
        cf.close()
    assert len(commits) == 3  # the timers fired; the group marked; the group's results recorded
    assert instances == ["completed"] * N
    assert outbox == [("sent", 1)] * N
    assert sorted(logged.values()) == [1] * N
    assert revisions == [4] * N  # started, fired, result recorded, ended: no write lost or doubled
    assert sum(ledger_counts(ledger).values()) == N


def test_a_failed_send_in_a_group_records_each_result_on_its_own(database_url: str, ledger: Any) -> None:
    def fail_third(n: int, _message: Any) -> None:
        if n == 3:
            raise ConnectorError("the provider is busy", retryable=True)

    cf, outcomes = _run(database_url, _ScriptedProvider(fail_third))
    try:
        assert outcomes == ["fired"] * N
        instances, outbox, logged = _state(cf)
    finally:
        cf.close()
    assert instances == ["completed", "completed", "running", "completed", "completed"]
    assert [status for status, _attempts in outbox] == ["sent", "sent", "pending", "sent", "sent"]  # 3rd: retried later
    assert sum(logged.values()) == N and max(logged.values()) == 1
    assert sum(ledger_counts(ledger).values()) == N - 1


def test_a_claim_taken_over_mid_group_is_not_recorded_by_the_worker_that_lost_it(database_url: str, ledger: Any) -> None:
    taken: list[int] = []

    def take_over_the_fourth(n: int, message: Any) -> None:
        if n == 2:  # meanwhile a scheduler reclaimed the fourth message and another worker claimed it
            with other.begin() as conn:
                fourth = conn.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id).offset(3).limit(1))
                conn.execute(sa.update(OutboxMessage).where(OutboxMessage.id == fourth)
                             .values(status="claimed", attempts=OutboxMessage.attempts + 1))
            taken.append(fourth)

    other = sa.create_engine(database_url)
    try:
        cf, outcomes = _run(database_url, _ScriptedProvider(take_over_the_fourth))
        try:
            assert outcomes == ["fired"] * N
            instances, outbox, logged = _state(cf)
        finally:
            cf.close()
    finally:
        other.dispose()
    assert len(taken) == 1
    assert instances == ["completed", "completed", "completed", "running", "completed"]
    # The fourth is the newer claim's to record: this worker's result for it (its request went out
    # under the old claim, with the message's key, before the heartbeat noticed) was not recorded,
    # and the newer claim sends it again with the same key, which the provider drops.
    assert outbox == [("sent", 1)] * 3 + [("claimed", 2), ("sent", 1)]
    assert taken[0] not in logged and sorted(logged.values()) == [1] * (N - 1)
    assert max(ledger_counts(ledger).values()) == 1 and sum(ledger_counts(ledger).values()) == N


def test_two_results_of_one_instance_are_not_delivered_together(database_url: str, ledger: Any) -> None:
    """The second result must see what the first one did: ``deliver_results`` refuses, changing
    nothing, and the group's results are then recorded one per transaction."""
    from engine.runtime import events as ev
    from engine.store.batch_results import Result, deliver_results
    from engine.store.instances import Writes

    reg = Registry()
    reg.register(LoggingProvider(), "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    try:
        cf.deploy([FLOWS])
        with cf.transition() as s:
            instance_id = start_instance(s, cf.runtime(), FLOW_ID, trigger={"type": "manual"}).id
        with cf.sessions() as s:
            before = s.scalar(select(Instance.revision).where(Instance.id == instance_id))
        with cf.sessions.begin() as s:
            writes = Writes(s, batch=True)
            event_ = ev.ActionDone("t", 0, {})
            assert not deliver_results(s, cf.runtime(), [Result(instance_id, event_), Result(instance_id, event_)], writes)
            writes.flush()
        with cf.sessions() as s:
            assert s.scalar(select(Instance.revision).where(Instance.id == instance_id)) == before
    finally:
        cf.close()


def test_a_marketing_cap_counts_the_group_s_messages_not_yet_recorded(database_url: str, ledger: Any) -> None:
    """All of a group is prepared before any result commits: the cap must count the group's own
    sends, or every message of the group would pass a cap that only counts recorded ones."""
    from engine.scale import claim_messages, run_messages

    reg = Registry()
    reg.register(LoggingProvider(), "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg,
                  connector_settings={"scale_log": {"marketing_per_week": 2}})
    try:
        cid = cf.create_customer({"name": "张伟", "email": "z@example.com", "owner": "wang", "preferred_channel": "email"},
                                 fire_triggers=False)
        with cf.sessions.begin() as s:
            for i in range(3):
                s.add(OutboxMessage(effect_key=f"offer-{i}", connector="scale_log", payload={"text": f"offer {i}"},
                                    customer_id=cid, category="marketing", status="pending", attempts=0,
                                    max_attempts=1, backoff_seconds=0, next_attempt_at=START, created_at=START))
        with cf.sessions.begin() as s:
            claims = claim_messages(s, cf.clock.now(), wall_now(), LEASE, 100)
        run_messages(cf, claims, LEASE)
        with cf.sessions() as s:
            statuses = [(m.status, m.last_error) for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    finally:
        cf.close()
    assert statuses == [("sent", None), ("sent", None), ("suppressed", "frequency_cap")]
    assert sum(ledger_counts(ledger).values()) == 2
