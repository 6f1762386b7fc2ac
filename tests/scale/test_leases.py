"""Claims, leases and fencing of the distributed mode, in one process, on SQLite and PostgreSQL.

RELIABILITY T08 (SKIP LOCKED claims), T09 (compare-and-set on SQLite), T11 (lease expiry and
fencing: a worker whose lease was taken over commits nothing), T04 (publish after commit: a
failed publish hands the claims back and loses nothing).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from engine.clock import FixedClock
from engine.core import Careflow
from engine.scale import (
    Scheduler,
    Settings,
    claim_messages,
    claim_timers,
    reclaim_messages,
    run_message,
    run_timer,
    wall_now,
)
from engine.store.instances import start_instance
from engine.store.models import Instance, OutboxMessage, StepExecution, Timer
from tests.conftest import START
from tests.scale.support import FLOW_ID, FLOWS, LoggingProvider, ledger_counts, registry

LEASE = timedelta(seconds=30)
DUE = START + timedelta(days=1, minutes=1)


@pytest.fixture
def cf(database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    engine = Careflow(database_url, clock=FixedClock(START), registry=registry())
    engine.deploy([FLOWS])
    yield engine
    engine.close()


def start(cf: Careflow, n: int) -> list[int]:
    with cf.transition() as s:
        return [start_instance(s, cf.runtime(), FLOW_ID, trigger={"type": "manual"}).id for _ in range(n)]


def claim(cf: Careflow, kind: str, wall: Any, limit: int = 100) -> list[tuple[int, int]]:
    fn = claim_timers if kind == "timer" else claim_messages
    with cf.sessions.begin() as s:
        return fn(s, cf.clock.now(), wall, LEASE, limit)


def executions(cf: Careflow, kind: str) -> list[tuple[int, int]]:
    with cf.sessions() as s:
        return list(s.execute(select(StepExecution.ref_id, StepExecution.attempt).where(StepExecution.kind == kind)).all())


def test_a_claim_holds_until_its_lease_ends_then_the_next_claim_fences_the_first(cf: Careflow) -> None:
    start(cf, 3)
    wall = wall_now()
    assert claim(cf, "timer", wall) == []  # nothing due yet: the engine clock decides what is due
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    first = claim(cf, "timer", wall)
    assert [a for _, a in first] == [1, 1, 1]
    assert claim(cf, "timer", wall + LEASE / 2) == []  # leased: nobody else gets them
    second = claim(cf, "timer", wall + LEASE + timedelta(seconds=1))  # the lease ran out (a lost task)
    assert [(t, a) for t, a in second] == [(t, 2) for t, _ in first]

    timer_id = first[0][0]
    assert run_timer(cf, timer_id, 1) == "stale"  # the worker whose lease was taken over commits nothing
    with cf.sessions() as s:
        assert s.get(Timer, timer_id).status == "pending"  # type: ignore[union-attr]
    assert run_timer(cf, timer_id, 2) == "fired"
    assert run_timer(cf, timer_id, 2) == "stale"  # the broker delivers the task again: nothing happens
    assert executions(cf, "timer") == [(timer_id, 2)]


def test_the_worker_that_fires_a_timer_sends_its_step_s_message_under_a_claim_of_its_own(cf: Careflow, tmp_path: Any) -> None:
    start(cf, 2)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    [(first, a1), (second, a2)] = claim(cf, "timer", wall_now())
    assert run_timer(cf, first, a1) == "fired"
    with cf.sessions() as s:
        assert sorted(s.scalars(select(OutboxMessage.status))) == ["sent"]  # only the fired instance's message
        assert sorted(s.scalars(select(Instance.status))) == ["completed", "running"]
    assert [a for _, a in executions(cf, "message")] == [1]
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 1


def test_a_message_is_sent_only_under_the_current_claim(cf: Careflow, tmp_path: Any) -> None:
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    start(cf, 1)
    cf.clock.set(DUE + timedelta(days=1))  # type: ignore[attr-defined]
    [(timer_id, attempt)] = claim(cf, "timer", wall_now())
    assert run_timer(cf, timer_id, attempt, chain=False) == "fired"  # the message is left to a scheduler
    wall = wall_now()
    [(mid, first)] = claim(cf, "message", wall)
    later = wall + LEASE + timedelta(seconds=1)
    with cf.sessions.begin() as s:
        assert reclaim_messages(s, cf.resolve, cf.clock.now(), later) == 1
    [(same, second)] = claim(cf, "message", later)
    assert (same, second) == (mid, first + 1)

    run_message(cf, mid, first, LEASE)  # stale: the provider is not called
    assert ledger_counts(tmp_path / "ledger.tsv") == {}
    run_message(cf, mid, second, LEASE)
    run_message(cf, mid, second, LEASE)  # redelivered: already sent
    with cf.sessions() as s:
        row = s.get(OutboxMessage, mid)
        assert row is not None and row.status == "sent"
        assert s.scalars(select(Instance.status)).all() == ["completed"]
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 1
    assert executions(cf, "message") == [(mid, second)]


def test_an_expired_sending_claim_of_a_provider_without_keys_becomes_unknown_not_a_resend(
        cf: Careflow, monkeypatch: pytest.MonkeyPatch) -> None:
    cf.clock.set(DUE + timedelta(days=1))  # type: ignore[attr-defined]
    start(cf, 1)
    cf.clock.set(DUE + timedelta(days=3))  # type: ignore[attr-defined]
    [(timer_id, attempt)] = claim(cf, "timer", wall_now())
    run_timer(cf, timer_id, attempt, chain=False)
    wall = wall_now()
    [(mid, _attempt)] = claim(cf, "message", wall)
    with cf.sessions.begin() as s:
        s.get(OutboxMessage, mid).status = "sending"  # type: ignore[union-attr]  # died after calling the provider
    monkeypatch.setattr(LoggingProvider, "idempotent", False)
    with cf.sessions.begin() as s:
        assert reclaim_messages(s, cf.resolve, cf.clock.now(), wall + LEASE + timedelta(seconds=1)) == 1
    with cf.sessions() as s:
        assert s.get(OutboxMessage, mid).status == "unknown"  # type: ignore[union-attr]


class Broker:
    """Stands in for Celery in-process; ``down`` makes publishing fail like a stopped broker."""

    def __init__(self) -> None:
        self.down = False
        self.timers: list[tuple[int, int]] = []
        self.messages: list[tuple[int, int]] = []

    def fire_timers(self, claims: list[tuple[int, int]]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.timers.extend(claims)

    def deliver_messages(self, claims: list[tuple[int, int]]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.messages.extend(claims)


def test_when_the_broker_is_down_the_claims_are_handed_back_and_published_when_it_returns(cf: Careflow) -> None:
    start(cf, 5)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    broker = Broker()
    scheduler = Scheduler(cf, broker, Settings(lease=LEASE))
    broker.down = True
    report = scheduler.tick()
    assert report.publish_failed == 5 and report.timers_published == 0
    with cf.sessions() as s:
        assert s.scalars(select(Timer.lease_until)).all() == [None] * 5  # due again at once, not after the lease
    broker.down = False
    assert scheduler.tick().timers_published == 5
    assert scheduler.tick().timers_published == 0  # published once: the lease stands
    for timer_id, attempt in broker.timers:
        assert run_timer(cf, timer_id, attempt, chain=False) == "fired"
    assert scheduler.tick().messages_published == 5
    for mid, attempt in broker.messages:
        run_message(cf, mid, attempt, LEASE)
    with cf.sessions() as s:
        assert s.scalars(select(Instance.status)).all() == ["completed"] * 5


def test_two_schedulers_claim_disjoint_rows_while_both_transactions_are_open(pg_schema_url: str) -> None:
    # PostgreSQL only: on SQLite a writer waits for the other (BEGIN IMMEDIATE), there is no overlap to test.
    cf = Careflow(pg_schema_url, clock=FixedClock(START), registry=registry())
    cf.deploy([FLOWS])
    start(cf, 10)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    wall = wall_now()
    with cf.sessions.begin() as a, cf.sessions.begin() as b:
        mine = claim_timers(a, DUE, wall, LEASE, 4)
        theirs = claim_timers(b, DUE, wall, LEASE, 100)  # SKIP LOCKED: does not wait for a, skips its rows
        assert len(mine) == 4 and len(theirs) == 6
        assert not {t for t, _ in mine} & {t for t, _ in theirs}
    cf.close()


def test_the_scheduler_with_the_inline_executor_runs_every_instance_to_its_end(cf: Careflow, tmp_path: Any) -> None:
    from engine.app import create_app
    from engine.executors import InlinePublisher, publisher_for

    app = create_app({"TESTING": True, "SECRET_KEY": "x"}, engine=cf)
    assert "celery" not in app.extensions  # no broker URL: embedded, nothing published anywhere
    publisher = publisher_for(app)
    assert isinstance(publisher, InlinePublisher)
    start(cf, 7)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    scheduler = Scheduler(cf, publisher, Settings(lease=LEASE, batch=3))
    for _ in range(3):
        scheduler.tick()
    with cf.sessions() as s:
        assert s.scalars(select(Instance.status)).all() == ["completed"] * 7
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 7
    assert sorted(a for _, a in executions(cf, "timer")) == [1] * 7


def test_work_is_published_only_by_the_scheduler_after_its_claim_commits_and_never_with_an_eta() -> None:
    """RELIABILITY T04 and T06 as a lint: one publish path, outside any transaction, and no ETA/countdown."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    publishing: list[str] = []
    for path in sorted((root / "engine").rglob("*.py")) + sorted((root / "connectors").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("delay", "apply_async", "send_task"):
                    publishing.append(f"{path.relative_to(root)}:{node.func.attr}")
                assert not any(k.arg in ("eta", "countdown") for k in node.keywords), f"{path}:{node.lineno} uses an ETA"
    assert sorted(set(publishing)) == ["engine/executors.py:send_task"]
    source = (root / "engine" / "scale.py").read_text(encoding="utf-8")
    tick = source[source.index("    def publish_due"):source.index("    def _publish")]
    # The claim's transaction is closed (the ``with`` block ends) before ``_publish`` is called.
    claim_block_end = tick.index("            if not timers and not messages:")
    assert tick.index("self._publish(") > claim_block_end


def test_a_batch_of_timers_fires_in_one_transaction_fenced_per_timer_and_sends_each_message_once(
        cf: Careflow, tmp_path: Any) -> None:
    from engine.scale import run_timers

    start(cf, 5)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    wall = wall_now()
    first = claim(cf, "timer", wall)
    taken = claim(cf, "timer", wall + LEASE + timedelta(seconds=1), limit=1)  # one claim was taken over meanwhile
    outcomes = run_timers(cf, first, settings=Settings(lease=LEASE))
    assert outcomes == ["stale", "fired", "fired", "fired", "fired"]
    assert run_timers(cf, first) == ["stale"] * 5  # the broker delivers the batch again: nothing happens
    assert run_timers(cf, taken) == ["fired"]
    with cf.sessions() as s:
        assert s.scalars(select(Instance.status)).all() == ["completed"] * 5
        assert sorted(s.scalars(select(OutboxMessage.status))) == ["sent"] * 5
    assert sorted(executions(cf, "timer")) == sorted([*first[1:], *taken])
    assert [a for _, a in executions(cf, "message")] == [1] * 5
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 5


TWO_WAITS = """
id: two_waits
name: {zh: 两个等待, en: Two waits}
triggers:
  - type: manual
enrollment:
  concurrent: unlimited
  reenroll: always
steps:
  - id: fan_out
    type: parallel
    branches: [wait_a, wait_b]
  - id: wait_a
    type: wait
    duration: {days: 1}
    next: meet
  - id: wait_b
    type: wait
    duration: {days: 1}
    next: meet
  - id: meet
    type: join
    next: done
  - id: done
    type: end
"""


def test_a_batch_with_two_timers_of_one_instance_fires_both_and_the_join_completes_it(cf: Careflow, tmp_path: Any) -> None:
    from engine.scale import run_timers

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "two_waits.yaml").write_text(TWO_WAITS, encoding="utf-8")
    cf.deploy([flows])
    with cf.transition() as s:
        instance_id = start_instance(s, cf.runtime(), "two_waits", trigger={"type": "manual"}).id
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    claims = claim(cf, "timer", wall_now())
    assert len(claims) == 2
    # The second timer must see the join state the first one left: not one transaction for both.
    assert run_timers(cf, claims, settings=Settings(lease=LEASE)) == ["fired", "fired"]
    with cf.sessions() as s:
        assert s.get(Instance, instance_id).status == "completed"  # type: ignore[union-attr]
    assert sorted(executions(cf, "timer")) == sorted(claims)


class _WatchingProvider(LoggingProvider):
    """Logs like the scale provider, and reads every message's status (on a connection of its own)
    at the moment it is called: what a crash right then would leave behind."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import sqlalchemy as sa

        self.db = sa.create_engine(url)
        self.seen: list[list[str]] = []

    def send(self, message: Any, settings: Any) -> Any:
        with self.db.connect() as conn:
            self.seen.append(list(conn.scalars(select(OutboxMessage.status).order_by(OutboxMessage.id))))
        return super().send(message, settings)


class _WatchingProviderWithoutKeys(_WatchingProvider):
    idempotent = False


@pytest.mark.parametrize(("provider_cls", "expected_commits"), [(_WatchingProvider, 3), (_WatchingProviderWithoutKeys, 11)])
def test_a_task_sends_a_group_through_a_provider_with_keys_and_one_message_at_a_time_without(
        database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, provider_cls: type[_WatchingProvider],
        expected_commits: int) -> None:
    from sqlalchemy import event

    from connectors.registry import Registry
    from engine.scale import run_timers

    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    provider = provider_cls(database_url)
    reg = Registry()
    reg.register(provider, "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    try:
        cf.deploy([FLOWS])
        start(cf, 5)
        cf.clock.set(DUE)  # type: ignore[attr-defined]
        claims = claim(cf, "timer", wall_now())
        commits = []
        event.listen(cf.db, "commit", lambda _conn: commits.append(1))
        assert run_timers(cf, claims, settings=Settings(lease=LEASE)) == ["fired"] * 5
    finally:
        provider.db.dispose()
        cf.close()
    if provider.idempotent:
        # A provider that recognises a repeat: the five messages were marked in one commit, before
        # the first call, and their results recorded in one more: the batch fired, marked, recorded
        # in three commits. A crash in between leaves all five in doubt, each resent with its key.
        assert provider.seen == [["sending"] * 5] * 5
    else:
        # Each provider call found exactly one message marked as being sent (its own), every
        # earlier one already recorded: a crash at any call leaves one message in doubt, and one
        # without keys ends ``unknown``. Marking and recording apart: 1 + 2 × 5 commits (a crash
        # between the mark and the call must not leave an unsent message in doubt there).
        assert provider.seen == [["sent"] * i + ["sending"] + ["claimed"] * (4 - i) for i in range(5)]
    assert len(commits) == expected_commits
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 5


class _ProviderWithoutKeys(LoggingProvider):
    name = "scale_log_nokeys"
    idempotent = False


def test_a_result_through_a_provider_without_keys_commits_before_the_next_message_is_prepared(
        database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """RELIABILITY T01: a crash at ``before_provider_call`` of the next message (or anywhere while
    it is routed and capped) must not leave a message sent through a provider without keys in doubt:
    the reclaim would make it ``unknown`` with an incident. Only a result that a resend with its key
    repairs may wait for the next message's commit."""
    import sqlalchemy as sa

    import engine.outbox as outbox
    from connectors.registry import Registry
    from engine.scale import run_messages

    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    reg = Registry()
    reg.register(LoggingProvider(), "scale_log")
    reg.register(_ProviderWithoutKeys(), "scale_log_nokeys")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    watcher = sa.create_engine(database_url)
    left: list[list[tuple[str, str]]] = []  # what a crash at each ``before_provider_call`` leaves

    def snapshot(name: str) -> None:
        if name == "before_provider_call":
            with watcher.connect() as conn:
                left.append([(r.connector, r.status) for r in conn.execute(
                    select(OutboxMessage.connector, OutboxMessage.status).order_by(OutboxMessage.id))])

    try:
        cf.deploy([FLOWS])
        start(cf, 3)
        cf.clock.set(DUE)  # type: ignore[attr-defined]
        timers = claim(cf, "timer", wall_now())
        assert run_timers_unchained(cf, timers) == ["fired"] * 3
        with cf.sessions.begin() as s:  # the first two through a provider that cannot recognise a repeat
            first_two = list(s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id).limit(2)))
            s.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(first_two)).values(connector="scale_log_nokeys"))
        claims = claim(cf, "message", wall_now())
        monkeypatch.setattr(outbox, "crash_point", snapshot)
        run_messages(cf, claims, LEASE)
        with cf.sessions() as s:
            assert list(s.scalars(select(OutboxMessage.status).order_by(OutboxMessage.id))) == ["sent"] * 3
    finally:
        watcher.dispose()
        cf.close()
    nokeys, keys = "scale_log_nokeys", "scale_log"
    assert left == [
        [(nokeys, "claimed"), (nokeys, "claimed"), (keys, "claimed")],
        [(nokeys, "sent"), (nokeys, "claimed"), (keys, "claimed")],
        # The second was once still "sending" here: an incident after a crash. The last goes as a
        # group (of one) through a provider with keys, marked in the commit before its call.
        [(nokeys, "sent"), (nokeys, "sent"), (keys, "sending")],
    ]


def run_timers_unchained(cf: Careflow, claims: list[tuple[int, int]]) -> list[str]:
    from engine.scale import run_timers

    return run_timers(cf, claims, chain=False, settings=Settings(lease=LEASE))


def test_recording_a_chained_message_s_result_starts_from_the_instance_its_timer_left(cf: Careflow) -> None:
    from sqlalchemy import event

    from engine.scale import run_timers

    start(cf, 5)
    cf.clock.set(DUE)  # type: ignore[attr-defined]
    claims = claim(cf, "timer", wall_now())
    reads: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM instance" in statement:
            reads.append(statement)

    event.listen(cf.db, "before_cursor_execute", watch)
    try:
        assert run_timers(cf, claims, settings=Settings(lease=LEASE)) == ["fired"] * 5
    finally:
        event.remove(cf.db, "before_cursor_execute", watch)
    assert len(reads) == 1  # the batch's instances, read once by the transaction that fired the timers
    with cf.sessions() as s:
        assert s.scalars(select(Instance.status)).all() == ["completed"] * 5
        assert s.scalars(select(Instance.revision)).all() == [4] * 5  # started, fired, sent: no write lost
    assert [a for _, a in executions(cf, "message")] == [1] * 5


class _MeddlingProvider(LoggingProvider):
    """Sends, and meanwhile someone else changes the message's instance (on a connection of its own)."""

    db: Any = None  # the engine's database: another of its pooled connections

    def send(self, message: Any, settings: Any) -> Any:
        import sqlalchemy as sa

        with self.db.begin() as conn:
            instance_id = conn.scalar(select(OutboxMessage.instance_id).where(OutboxMessage.effect_key == message.effect_key))
            conn.execute(sa.update(Instance).where(Instance.id == instance_id)
                         .values(revision=Instance.revision + 1, started_by="meddler"))
        return super().send(message, settings)


def test_an_instance_changed_after_its_timer_fired_is_read_again_to_record_the_result(
        database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.registry import Registry
    from engine.scale import run_timers

    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    provider = _MeddlingProvider()
    reg = Registry()
    reg.register(provider, "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    provider.db = cf.db
    try:
        cf.deploy([FLOWS])
        start(cf, 3)
        cf.clock.set(DUE)  # type: ignore[attr-defined]
        claims = claim(cf, "timer", wall_now())
        assert run_timers(cf, claims, settings=Settings(lease=LEASE)) == ["fired"] * 3
        with cf.sessions() as s:
            rows = s.execute(select(Instance.status, Instance.started_by, Instance.revision)).all()
            assert sorted(s.scalars(select(OutboxMessage.status))) == ["sent"] * 3
        assert [a for _, a in executions(cf, "message")] == [1] * 3
    finally:
        cf.close()
    # The copy the worker kept was stale: the result was recorded on the instance as the other
    # transaction left it, and kept that transaction's change.
    assert [tuple(r) for r in rows] == [("completed", "meddler", 5)] * 3
    assert sum(ledger_counts(tmp_path / "ledger.tsv").values()) == 3
