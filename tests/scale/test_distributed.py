"""Distributed mode against the real services: PostgreSQL, Redis or RabbitMQ, and real processes.

4 ``careflow worker`` and 2 ``careflow scheduler`` processes run N instances of a flow that waits a
day (a timer row) and then sends through a provider that logs every request (tests/scale/support.py).
The clock file jumps a day so that every timer falls due at once. Checks (RELIABILITY T01, T04,
T05, T08, T11): every instance completes, the execution log has one row per timer and per
message, the provider's log has one request per message and claim (no two workers ever send
under one claim), no incident. Only a worker killed between the provider call and recording it
may cause a resend, with the same idempotency key (the provider de-duplicates it; T01 b).

N is ``CAREFLOW_SCALE_N`` (500 by default; ``make scale`` runs 10,000). The services are skipped when
missing, except with ``CAREFLOW_REQUIRE_SCALE=1`` (CI), where a missing service fails the test.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from typing import Any

import pytest

from engine.outbox import GROUP_LIMIT
from tests.conftest import START
from tests.scale.cluster import AMQP_URL, REDIS_URL, Cluster, redis_up, start_redis, stop_redis

N = int(os.environ.get("CAREFLOW_SCALE_N", "500"))
REQUIRED = os.environ.get("CAREFLOW_REQUIRE_SCALE") == "1"
DUE = START + timedelta(days=1, minutes=1)
#: Generous: on two shared cores the reduced run takes seconds, the 10,000 one a few minutes.
TIMEOUT = 120 + N * 0.1


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} is required (CAREFLOW_REQUIRE_SCALE=1) but not reachable")
    pytest.skip(f"{what} not reachable")


@pytest.fixture
def redis_broker() -> Any:
    if not redis_up():
        _missing(f"Redis at {REDIS_URL}")
    yield REDIS_URL
    start_redis()  # whatever happened, leave Redis running for everyone else


@pytest.fixture
def amqp_broker() -> str:
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        _missing(f"RabbitMQ at {AMQP_URL}")
    return AMQP_URL


def run(cluster: Cluster, n: int, chaos: Any = None) -> dict[str, Any]:
    cluster.start_instances(n)
    for _ in range(4):
        cluster.start_worker()
    for _ in range(2):
        cluster.start_scheduler()
    cluster.advance(DUE)
    cluster.wait_completed(n, TIMEOUT, on_progress=chaos)
    time.sleep(1.5)  # a late duplicate (a redelivered task, a stale worker) would land now
    report = cluster.report()
    assert cluster.dead() == [], cluster.logs()
    return report


def assert_exactly_once(report: dict[str, Any], n: int, workers_killed: int = 0) -> None:
    assert report["instances"] == {"completed": n}, report
    assert report["outbox"] == {"sent": n}, report
    assert report["timers"] == {"fired": n}, report
    assert report["executions"] == {"timer": n, "message": n}, report
    assert report["duplicate_steps"] == 0, report
    assert report["unsent"] == 0, report
    assert report["duplicate_sends"] == 0, report
    # A solo worker holds at most one group of messages through a provider that recognises a
    # repeat between their provider calls and their record (engine.outbox._send_group): a worker
    # killed then leaves them to be resent, with their keys.
    assert report["resends"] <= workers_killed * GROUP_LIMIT, report
    assert report["provider_requests"] == n + report["resends"], report
    assert report["incidents"] == 0, report


def test_redis_four_workers_two_schedulers_run_everything_once(pg_schema_url: str, redis_broker: str, tmp_path: Any) -> None:
    cluster = Cluster(pg_schema_url, redis_broker, tmp_path / "cluster", START)
    try:
        assert_exactly_once(run(cluster, N), N)
    finally:
        cluster.stop()


class Chaos:
    """Kill -9 a worker and a scheduler at 15% done (restarted a second later); then at 40% either
    stop Redis for 10 s, or freeze a worker (SIGSTOP) past its lease and let it go on (T11)."""

    #: Each provider call takes this long in the chaos runs (the provider's own latency): the faults
    #: are set off by progress, and without it the cluster may finish the rest of the run while the
    #: first fault is dealt with, so the second would land after the work, testing nothing.
    PROVIDER_SECONDS = "0.02"

    def __init__(self, cluster: Cluster, n: int, *, stop_broker: bool = False, freeze_worker: bool = False):
        self.cluster, self.n, self.stop_broker, self.freeze_worker = cluster, n, stop_broker, freeze_worker
        self.killed_at: int | None = None
        self.broker_stopped_at: int | None = None
        self.frozen_at: int | None = None

    def __call__(self, done: int) -> None:
        c = self.cluster
        if self.killed_at is None and done >= self.n * 0.15:
            self.killed_at = done
            c.kill9(c.workers[0])
            c.kill9(c.schedulers[0])
            time.sleep(1.0)
            c.start_worker(0)
            c.start_scheduler(0)
        elif self.stop_broker and self.killed_at is not None and self.broker_stopped_at is None and done >= self.n * 0.4:
            self.broker_stopped_at = done
            stop_redis()
            try:
                assert not redis_up()
                time.sleep(10)
            finally:
                start_redis()
        elif self.freeze_worker and self.killed_at is not None and self.frozen_at is None and done >= self.n * 0.4:
            self.frozen_at = done
            worker = c.workers[1]
            os.killpg(worker.pid, signal.SIGSTOP)
            try:
                time.sleep(c.lease_seconds + 3)  # its claims run out and are handed to the others
            finally:
                os.killpg(worker.pid, signal.SIGCONT)


def test_redis_kill9_worker_and_scheduler_and_stop_redis_lose_nothing(pg_schema_url: str, redis_broker: str, tmp_path: Any) -> None:
    cluster = Cluster(pg_schema_url, redis_broker, tmp_path / "cluster", START,
                      extra_env={"CAREFLOW_SCALE_SLOW_SECONDS": Chaos.PROVIDER_SECONDS})
    chaos = Chaos(cluster, N, stop_broker=True)
    try:
        report = run(cluster, N, chaos)
    finally:
        cluster.stop()
    # The faults landed mid-run, not after the work was done.
    assert chaos.killed_at is not None and chaos.killed_at < N
    assert chaos.broker_stopped_at is not None and chaos.broker_stopped_at < N
    assert_exactly_once(report, N, workers_killed=1)


def test_rabbitmq_kill9_and_a_frozen_worker_past_its_lease_lose_nothing_and_commit_nothing_stale(
        pg_schema_url: str, amqp_broker: str, tmp_path: Any) -> None:
    cluster = Cluster(pg_schema_url, amqp_broker, tmp_path / "cluster", START,
                      extra_env={"CAREFLOW_SCALE_SLOW_SECONDS": Chaos.PROVIDER_SECONDS})
    chaos = Chaos(cluster, N, freeze_worker=True)
    try:
        report = run(cluster, N, chaos)
    finally:
        cluster.stop()
    assert chaos.killed_at is not None and chaos.killed_at < N
    assert chaos.frozen_at is not None and chaos.frozen_at < N
    # The frozen worker may have been between marking a message sending and calling the provider:
    # it then calls with the same key after its claim was handed on (a resend the provider drops).
    assert_exactly_once(report, N, workers_killed=2)
