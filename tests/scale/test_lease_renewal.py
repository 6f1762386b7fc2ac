"""Lease renewal (engine/lease_renewal.py): work that outlasts its lease keeps its claim, and a
claim taken over meanwhile is noticed (RELIABILITY §0.3, T11).

The in-process tests move the heartbeat's wall clock by hand (no sleeping, no timed assertions),
on SQLite and PostgreSQL. The last test runs real ``careflow worker`` and ``careflow scheduler``
processes on PostgreSQL and Redis with a provider whose every answer takes longer than the lease:
without renewal a scheduler would hand the message still being sent to another worker, which would
send it again.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from engine.clock import FixedClock
from engine.core import Careflow
from engine.lease_renewal import Heartbeat
from engine.scale import claim_messages, claim_timers, reclaim_messages, run_timer, wall_now
from engine.store.instances import start_instance
from engine.store.models import OutboxMessage, Timer
from tests.conftest import START
from tests.scale.cluster import REDIS_URL, Cluster, redis_up
from tests.scale.support import FLOW_ID, FLOWS, ledger_counts, registry

LEASE = timedelta(seconds=30)
DUE = START + timedelta(days=1, minutes=1)


@pytest.fixture
def cf(database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    engine = Careflow(database_url, clock=FixedClock(START), registry=registry())
    engine.deploy([FLOWS])
    with engine.transition() as s:
        for _ in range(2):
            start_instance(s, engine.runtime(), FLOW_ID, trigger={"type": "manual"})
    engine.clock.set(DUE)  # type: ignore[attr-defined]
    yield engine
    engine.close()


def claim(cf: Careflow, kind: str, wall: Any) -> list[tuple[int, int]]:
    fn = claim_timers if kind == "timer" else claim_messages
    with cf.sessions.begin() as s:
        return fn(s, cf.clock.now(), wall, LEASE, 100)


def test_a_renewed_claim_is_not_handed_out_when_its_first_lease_ends(cf: Careflow) -> None:
    wall = wall_now()
    claims = claim(cf, "timer", wall)
    beats = {"wall": wall + LEASE / 2}
    heartbeat = Heartbeat(cf.sessions, LEASE, lambda: beats["wall"])
    heartbeat.hold_timers(claims)
    heartbeat.renew()  # half-way through the lease: it now ends at 1.5 leases
    assert claim(cf, "timer", wall + LEASE + timedelta(seconds=1)) == []  # the first lease is over: still held
    heartbeat.release_timer(claims[0][0])  # its work is done: no longer renewed
    beats["wall"] = wall + LEASE
    heartbeat.renew()
    # The released claim ran out at 1.5 leases; the one still held was renewed to 2 leases.
    later = claim(cf, "timer", wall + LEASE * 1.5 + timedelta(seconds=1))
    assert later == [(claims[0][0], 2)]
    assert not heartbeat.lost_timer(claims[1][0])


def test_a_claim_taken_over_is_lost_is_not_renewed_and_its_work_commits_nothing(cf: Careflow) -> None:
    wall = wall_now()
    [first, other] = claim(cf, "timer", wall)
    taken = claim(cf, "timer", wall + LEASE + timedelta(seconds=1))  # the worker stalled past its lease
    assert taken == [(first[0], 2), (other[0], 2)]
    heartbeat = Heartbeat(cf.sessions, LEASE, lambda: wall + LEASE * 3)
    heartbeat.hold_timers([first])
    heartbeat.renew()
    assert heartbeat.lost_timer(first[0])
    with cf.sessions() as s:
        # The renewal did not extend the newer claim's lease (it ends 2 leases after `wall`, not 4).
        assert s.get(Timer, first[0]).lease_until < wall + LEASE * 3  # type: ignore[operator,union-attr]
    assert run_timer(cf, *first) == "stale"
    assert run_timer(cf, *taken[0]) == "fired"


def test_a_message_handed_back_by_a_reclaim_counts_as_lost(cf: Careflow) -> None:
    for timer_id, attempt in claim(cf, "timer", wall_now()):
        assert run_timer(cf, timer_id, attempt, chain=False) == "fired"
    wall = wall_now()
    [kept, reclaimed] = claim(cf, "message", wall)
    heartbeat = Heartbeat(cf.sessions, LEASE, lambda: wall + LEASE / 2)
    heartbeat.hold_messages([kept])
    heartbeat.renew()
    heartbeat.hold_messages([reclaimed])
    with cf.sessions.begin() as s:
        # Only the message nobody renewed is handed back when the first lease ends.
        assert reclaim_messages(s, cf.resolve, cf.clock.now(), wall + LEASE + timedelta(seconds=1)) == 1
        assert s.get(OutboxMessage, reclaimed[0]).status == "pending"  # type: ignore[union-attr]
    heartbeat.renew()
    assert heartbeat.lost_message(reclaimed[0]) and not heartbeat.lost_message(kept[0])


def test_a_delivery_slower_than_its_lease_is_sent_once_and_executed_once(pg_schema_url: str, tmp_path: Any) -> None:
    if not redis_up():
        if os.environ.get("CAREFLOW_REQUIRE_SCALE") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required (CAREFLOW_REQUIRE_SCALE=1) but not reachable")
        pytest.skip(f"Redis at {REDIS_URL} not reachable")
    n = 3
    # Every provider answer takes 4 s, more than twice the 1.5 s lease; one claim per task, so the
    # three messages are sent by the two workers at once and a reclaim would find an idle worker.
    cluster = Cluster(pg_schema_url, REDIS_URL, tmp_path / "cluster", START, lease_seconds=1.5, scheduler_interval=0.1,
                      extra_env={"CAREFLOW_SCALE_SLOW_SECONDS": "4", "CAREFLOW_TASK_BATCH": "1"})
    try:
        cluster.start_instances(n)
        for _ in range(2):
            cluster.start_worker()
        cluster.start_scheduler()
        cluster.wait_workers()
        cluster.advance(DUE)
        cluster.wait_completed(n, 120)
        assert cluster.dead() == [], cluster.logs()
        report = cluster.report()
    finally:
        cluster.stop()
    assert report["instances"] == {"completed": n}, report
    assert report["outbox"] == {"sent": n}, report
    assert report["executions"] == {"timer": n, "message": n}, report
    assert report["duplicate_steps"] == 0, report
    # One request per message: not even a resend with the same key (which a reclaim would cause).
    assert report["provider_requests"] == n and report["resends"] == 0, report
    assert sorted(attempt for _key, attempt in ledger_counts(cluster.ledger)) == [1] * n
    assert report["incidents"] == 0, report
