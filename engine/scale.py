"""Distributed mode: schedulers claim due work with leases and publish ids, workers do it, fenced.

The database decides who does what; the broker only carries ids (ARCHITECTURE principle 6,
RELIABILITY T04–T14, docs/decisions/0010-leases-and-fencing.md):

* A **scheduler** (``careflow scheduler``; any number may run) fires cron/date trigger
  occurrences (the unique ``(flow, trigger, scheduled_for)`` key lets one of them win), hands
  expired outbox claims back, then claims due timers and due outbox messages: on PostgreSQL with
  ``FOR UPDATE SKIP LOCKED`` (two schedulers never wait on or take the same rows), on SQLite with
  a compare-and-set per row. A claim bumps the row's attempt number (the fencing token) and sets
  a lease; the ids and attempt numbers are published only after the claim commits. If publishing
  fails (the broker is down) the claims are handed back at once, and in any case a claim whose
  lease runs out is claimable again: a lost message only delays work.
* A **worker** (``careflow worker``, Celery) gets a task with a batch of claims
  (``CAREFLOW_TASK_BATCH``). Its transactions check the attempt number first (``UPDATE … WHERE
  attempt = :fence``): a worker whose lease was taken over, or a task the broker delivered twice,
  changes nothing. The same transaction writes a ``step_execution`` row, the execution log the
  tests count duplicates in. A batch of timers fires in one transaction (every timer fenced,
  every instance's revision checked; on any failure one transaction per timer), which also claims
  the messages those steps produced (a claim like a scheduler's, with its own lease and attempt
  number); the worker then sends them itself, saving a scheduler round trip. Messages through a
  provider that recognises a repeat go as a group: marked ``sending`` in one commit, sent, and
  their results recorded in one transaction (``engine.outbox._send_group``,
  docs/decisions/0012-grouped-message-results.md); any other message in commits of its own. While it works, a heartbeat renews the leases of the claims it still holds
  (``engine.lease_renewal``), so a slow provider call is never handed to a second worker.

Leases run on the wall clock, never on the engine clock, which tests move by days.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.orm.util import identity_key

from engine.clock import SystemClock
from engine.crashpoints import crash_point
from engine.errors import EngineError
from engine.lease_renewal import Heartbeat
from engine.outbox import Claimed, DispatchReport, Outgoing, Resolve, _idempotent, _unknown, _Written, deliver_claimed
from engine.schedule import TickReport, TriggerMemo, fire_triggers
from engine.store.batch import _by_id, _Loader, fire_timers, timer_event
from engine.store.instances import Writes, deliver
from engine.store.models import Customer, Instance, OutboxMessage, StepExecution, Timer
from engine.store.rows import execute as execute_rows

if TYPE_CHECKING:
    from engine.core import Careflow

log = logging.getLogger(__name__)

#: How long a published claim stands before a scheduler may claim (and publish) the work again.
DEFAULT_LEASE = timedelta(seconds=60)
#: At most this many claims are out at once, so a backlog waits as rows, not as broker messages
#: whose leases would run out in the queue.
DEFAULT_MAX_IN_FLIGHT = 500
#: Rows claimed per statement.
DEFAULT_BATCH = 500
#: Claims per published task: one broker message (and one task's overhead on the worker) carries
#: this many timers or messages. In the benchmark's cluster 25 took about a third less CPU per
#: transition than 10, in the workers and in PostgreSQL, and a task of 25 still runs in well under
#: a tenth of a second.
DEFAULT_TASK_BATCH = 25
#: A timer whose instance another worker changed meanwhile is tried again this often at once.
FIRE_TRIES = 5

_wall = SystemClock()


def wall_now() -> datetime:
    """Leases use the real time: the engine clock may be a test's clock, moved by days."""
    return _wall.now()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    lease: timedelta = DEFAULT_LEASE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    batch: int = DEFAULT_BATCH
    task_batch: int = DEFAULT_TASK_BATCH

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """``CAREFLOW_LEASE_SECONDS``, ``CAREFLOW_MAX_IN_FLIGHT``, ``CAREFLOW_CLAIM_BATCH``, ``CAREFLOW_TASK_BATCH``."""
        env = os.environ if environ is None else environ
        try:
            return cls(
                lease=timedelta(seconds=float(env.get("CAREFLOW_LEASE_SECONDS", DEFAULT_LEASE.total_seconds()))),
                max_in_flight=int(env.get("CAREFLOW_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)),
                batch=int(env.get("CAREFLOW_CLAIM_BATCH", DEFAULT_BATCH)),
                task_batch=max(1, int(env.get("CAREFLOW_TASK_BATCH", DEFAULT_TASK_BATCH))),
            )
        except ValueError as exc:
            raise ValueError("CAREFLOW_LEASE_SECONDS, CAREFLOW_MAX_IN_FLIGHT, CAREFLOW_CLAIM_BATCH and CAREFLOW_TASK_BATCH "
                             f"must be numbers: {exc}") from exc


# ----- claiming ------------------------------------------------------------------------------------


def _skip_locked(session: Session) -> bool:
    # SQLAlchemy's SQLite dialect emits nothing for FOR UPDATE: there a compare-and-set decides.
    return session.get_bind().dialect.name == "postgresql"


def claim_timers(session: Session, now: datetime, wall: datetime, lease: timedelta, limit: int) -> list[tuple[int, int]]:
    """Claim up to ``limit`` timers due at ``now`` that nobody holds; returns ``(id, attempt)`` pairs."""
    if limit <= 0:
        return []
    free = or_(Timer.lease_until.is_(None), Timer.lease_until < wall)
    due = (select(Timer.id).where(Timer.status == "pending", Timer.due_at <= now, free)
           .order_by(Timer.due_at, Timer.id).limit(limit))
    if _skip_locked(session):
        rows = session.execute(
            update(Timer).where(Timer.id.in_(due.with_for_update(skip_locked=True).scalar_subquery()))
            .values(attempt=Timer.attempt + 1, lease_until=wall + lease)
            .returning(Timer.id, Timer.attempt).execution_options(synchronize_session=False)
        ).all()
        return sorted((int(i), int(a)) for i, a in rows)
    claimed = []
    for timer_id, attempt in session.execute(due.add_columns(Timer.attempt)).all():
        n = session.execute(
            update(Timer).where(Timer.id == timer_id, Timer.status == "pending", Timer.attempt == attempt)
            .values(attempt=attempt + 1, lease_until=wall + lease).execution_options(synchronize_session=False)
        ).rowcount
        if n == 1:
            claimed.append((int(timer_id), int(attempt) + 1))
    return claimed


def claim_messages(session: Session, now: datetime, wall: datetime, lease: timedelta, limit: int,
                   instance_id: int | Iterable[int] | None = None) -> list[tuple[int, int]]:
    """Claim up to ``limit`` outbox messages due at ``now`` (of these instances, if given); ``(id, attempt)`` pairs."""
    if limit <= 0:
        return []
    due = (select(OutboxMessage.id).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
           .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
    if isinstance(instance_id, int):
        due = due.where(OutboxMessage.instance_id == instance_id)
    elif instance_id is not None:
        due = due.where(OutboxMessage.instance_id.in_(list(instance_id)))
    values = {"status": "claimed", "lease_until": wall + lease, "attempts": OutboxMessage.attempts + 1}
    if _skip_locked(session):
        rows = session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(due.with_for_update(skip_locked=True).scalar_subquery()))
            .values(**values).returning(OutboxMessage.id, OutboxMessage.attempts)
            .execution_options(synchronize_session=False)
        ).all()
        return sorted((int(i), int(a)) for i, a in rows)
    claimed = []
    for (mid,) in session.execute(due).all():
        row = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == mid, OutboxMessage.status == "pending")
            .values(**values).returning(OutboxMessage.attempts).execution_options(synchronize_session=False)
        ).first()
        if row is not None:
            claimed.append((int(mid), int(row[0])))
    return claimed


def in_flight(session: Session, wall: datetime) -> int:
    """Claims published and not yet done whose lease still stands."""
    timers = select(func.count()).select_from(Timer).where(Timer.lease_until >= wall, Timer.status == "pending")
    messages = select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.status.in_(("claimed", "sending")), OutboxMessage.lease_until >= wall)
    counted = session.execute(select(timers.scalar_subquery(), messages.scalar_subquery())).one()  # one round trip
    return int(counted[0] or 0) + int(counted[1] or 0)


def reclaim_messages(session: Session, resolve: Resolve, now: datetime, wall: datetime) -> int:
    """Outbox claims whose lease ran out: due again if safe to resend, else ``unknown`` with an incident.

    Each row changes only if it is still exactly as read (status and attempt number), so a
    worker that records its result at the same moment is never overwritten.
    """
    stale = session.execute(
        select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts, OutboxMessage.connector)
        .where(OutboxMessage.status.in_(("claimed", "sending")), OutboxMessage.lease_until < wall)
    ).all()
    changed = 0
    for mid, status, attempts, connector in stale:
        unchanged = (OutboxMessage.id == mid, OutboxMessage.status == status, OutboxMessage.attempts == attempts,
                     OutboxMessage.lease_until < wall)
        if status == "claimed" or _idempotent(resolve, connector, session):
            n = session.execute(update(OutboxMessage).where(*unchanged)
                                .values(status="pending", next_attempt_at=now, lease_until=None)
                                .execution_options(synchronize_session=False)).rowcount
        else:
            n = session.execute(update(OutboxMessage).where(*unchanged).values(status="unknown")
                                .execution_options(synchronize_session=False)).rowcount
            if n == 1:
                row = session.get(OutboxMessage, mid)
                assert row is not None
                session.refresh(row)
                _unknown(session, row, now, "the worker stopped after calling the provider; whether it was delivered is unknown")
        changed += n
    return changed


def release(session: Session, timers: Iterable[tuple[int, int]], messages: Iterable[tuple[int, int]]) -> None:
    """Hand back claims that were never published, so the next tick claims them again at once."""
    for timer_id, attempt in timers:
        session.execute(update(Timer).where(Timer.id == timer_id, Timer.attempt == attempt, Timer.status == "pending")
                        .values(lease_until=None).execution_options(synchronize_session=False))
    for mid, attempt in messages:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == mid, OutboxMessage.attempts == attempt,
                                                    OutboxMessage.status == "claimed")
                        .values(status="pending", lease_until=None, attempts=attempt - 1)
                        .execution_options(synchronize_session=False))


# ----- the scheduler -----------------------------------------------------------------------------


class Publisher(Protocol):
    """Where claimed work goes: Celery in distributed mode (``engine.executors``); one call per batch."""

    def fire_timers(self, claims: list[tuple[int, int]]) -> None: ...

    def deliver_messages(self, claims: list[tuple[int, int]]) -> None: ...


@dataclass
class SchedulerReport:
    timers_published: int = 0
    messages_published: int = 0
    reclaimed: int = 0
    publish_failed: int = 0
    tick: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """One ``careflow scheduler`` process: ticks, claims, publishes after commit."""

    def __init__(self, cf: Careflow, publisher: Publisher, settings: Settings | None = None):
        self.cf = cf
        self.publisher = publisher
        self.settings = settings or Settings.from_env()
        self.triggers = TriggerMemo()

    def tick(self) -> SchedulerReport:
        report = SchedulerReport()
        ticked = TickReport()
        self.cf.load_calendar()  # another process may have changed the overrides
        fire_triggers(self.cf.sessions, self.cf.runtime, ticked, self.triggers)
        report.tick = ticked.as_dict()
        self.publish_due(report)
        return report

    def publish_due(self, report: SchedulerReport) -> None:
        s = self.settings
        reclaim = True
        while True:
            wall = wall_now()
            with self.cf.sessions.begin() as session:
                now = self.cf.clock.now()
                if reclaim:
                    # Once per tick, not per round of claims: a lease that ran out meanwhile is
                    # handed back by the next tick, a fraction of the lease later.
                    report.reclaimed += reclaim_messages(session, self.cf.resolve, now, wall)
                    reclaim = False
                flying = in_flight(session, wall)
                room = min(s.batch, s.max_in_flight - flying)
                if flying:
                    # Whole tasks only while others are out: refilling the room a few claims at a
                    # time would publish tasks of one or two claims, each paying a task's overhead
                    # on the worker. The rest waits a tick, until a task's worth is free.
                    room -= room % s.task_batch
                if room <= 0:
                    return
                # Messages first: they finish instances already under way.
                messages = claim_messages(session, now, wall, s.lease, room)
                timers = claim_timers(session, now, wall, s.lease, room - len(messages))
            if not timers and not messages:
                return
            crash_point("after_claim")
            sent_t, sent_m = self._publish(timers, messages)
            report.timers_published += sent_t
            report.messages_published += sent_m
            if sent_t < len(timers) or sent_m < len(messages):
                report.publish_failed += len(timers) + len(messages) - sent_t - sent_m
                return
            if len(timers) + len(messages) < room:
                return

    def _publish(self, timers: list[tuple[int, int]], messages: list[tuple[int, int]]) -> tuple[int, int]:
        done_t = done_m = 0
        size = self.settings.task_batch
        try:
            while done_t < len(timers):
                chunk = timers[done_t:done_t + size]
                self.publisher.fire_timers(chunk)
                done_t += len(chunk)
            while done_m < len(messages):
                chunk = messages[done_m:done_m + size]
                self.publisher.deliver_messages(chunk)
                done_m += len(chunk)
        except Exception as exc:  # the broker is down or refused: the rows stay due, nothing is lost
            log.warning("could not publish to the broker (%s); %d claims handed back", exc,
                        len(timers) - done_t + len(messages) - done_m)
            try:
                with self.cf.sessions.begin() as session:
                    release(session, timers[done_t:], messages[done_m:])
            except Exception:  # the leases run out by themselves
                log.exception("could not hand the claims back; they are claimable again when their lease ends")
        return done_t, done_m

    def run_forever(self, interval: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Tick every ``interval`` seconds; a failing tick (database or broker down) never stops the loop."""
        while not stop():
            started = time.monotonic()
            try:
                report = self.tick()
                if report.publish_failed:
                    time.sleep(min(5.0, interval * 5))
            except Exception:
                log.exception("scheduler tick failed; trying again")
                time.sleep(min(5.0, interval * 5))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


# ----- the work a worker does ---------------------------------------------------------------------


_LOG = insert(StepExecution)


def _log_row(kind: str, ref_id: int, attempt: int, instance_id: int | None, outcome: str = "done") -> dict[str, Any]:
    return {"kind": kind, "ref_id": ref_id, "attempt": attempt, "instance_id": instance_id, "worker": worker_name(),
            "outcome": outcome, "at": wall_now()}


def _log(session: Session, kind: str, ref_id: int, attempt: int, instance_id: int | None, outcome: str = "done") -> None:
    """One execution-log row, in the transaction of the work it logs (a Core insert: no object to track)."""
    execute_rows(session.connection(), _LOG, [_log_row(kind, ref_id, attempt, instance_id, outcome)])


#: A message a worker claimed when it fired a timer: id, attempt number, what sending it needs, and
#: its instance as that transaction committed it (``engine.outbox.Outgoing``).
Chained = tuple[int, int, Claimed, Instance | None]

#: A batch's timers and the messages its steps produced, each read with one Core query (``batch._by_id``:
#: the ORM's loading costs more per row than the rest of reading them).
_TIMERS = _Loader(Timer)
_MESSAGES = _Loader(OutboxMessage)

#: After firing a timer, a worker sends at most this many of the messages the step produced itself.
CHAINED_MESSAGES = 10


def run_timer(cf: Careflow, timer_id: int, attempt: int, *, chain: bool = True) -> str:
    """Fire one claimed timer; returns what happened (``fired``, ``stale``, ``retry``, ``error``)."""
    return run_timers(cf, [(timer_id, attempt)], chain=chain)[0]


def run_timers(cf: Careflow, claims: list[tuple[int, int]], *, chain: bool = True,
               settings: Settings | None = None) -> list[str]:
    """Fire a batch of claimed timers; what happened to each, in order.

    The batch fires in one transaction (``_fire_batch``), or, when that cannot be, each timer in
    its own. With ``chain``, the transaction that fires a timer also claims the messages its step
    produced (with a lease and a new attempt number, as a scheduler would) and this worker sends
    them at once: no scheduler round trip from due to done. While the batch runs, a heartbeat
    renews the leases of every claim not yet done (``engine.lease_renewal``), so the last timer of
    a batch, or a message to a slow provider, is not handed to another worker meanwhile.
    """
    settings = settings or Settings.from_env()
    chain_lease = settings.lease if chain else None
    outcomes = []
    with Task(cf, settings.lease) as task:
        task.heartbeat.hold_timers(claims)
        fired = _fire_batch(task, claims, chain_lease) if len(claims) > 1 else None
        if fired is not None:
            outcomes, messages = fired
            for timer_id, _attempt in claims:
                task.heartbeat.release_timer(timer_id)
            task.heartbeat.hold_messages((mid, a) for mid, a, *_ in messages)
            _send(task, messages)
            return outcomes
        for timer_id, attempt in claims:
            if task.heartbeat.lost_timer(timer_id):
                outcomes.append("stale")
                continue
            outcome, messages = _fire(task, timer_id, attempt, chain_lease)
            task.heartbeat.hold_messages((mid, a) for mid, a, *_ in messages)
            task.heartbeat.release_timer(timer_id)
            outcomes.append(outcome)
            _send(task, messages)
    return outcomes


class Task:
    """What one worker task shares: a database connection, connector lookups, a lease heartbeat.

    Every transaction of the task still commits on its own; they only run on one pooled
    connection, checked out (and pinged) once per task instead of once per transaction. The
    heartbeat has a connection of its own.
    """

    def __init__(self, cf: Careflow, lease: timedelta):
        self.cf = cf
        self.lease = lease
        self.resolve = TaskResolve(cf.resolve)
        self.heartbeat = Heartbeat(cf.sessions, lease, wall_now)
        self.report = DispatchReport()
        self._connection: Any = None

    def __enter__(self) -> Task:
        self._connection = self.cf.db.connect()
        self.sessions = sessionmaker(bind=self._connection, expire_on_commit=False, class_=_TaskSession)
        self.heartbeat.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.heartbeat.__exit__(*exc)
        finally:
            self._connection.close()

    @contextmanager
    def transition(self) -> Iterator[Session]:
        """``Careflow.transition`` on the task's connection: one step, committed whole or not at all."""
        with self.sessions.begin() as session:
            yield session
            crash_point("before_step_tx_commit")
        crash_point("after_step_tx_commit")


#: Session.info key: the instances a task's session loaded, held as long as the session (``_hold_instance``).
_HELD = "careflow.instances"


def _hold_instance(session: Session, obj: Any) -> None:
    """Keep every instance a task's transaction loads for as long as its session.

    A session holds unchanged objects weakly; the instances a step wrote behind the ORM's back
    (``Writes``) would be gone by the time its messages are claimed, and recording their results
    would read them again.
    """
    if isinstance(obj, Instance):
        session.info.setdefault(_HELD, []).append(obj)


class _TaskSession(Session):
    """A task's session: it holds the instances it loads (``_hold_instance``)."""


# Once, on the class: a listener per task's sessionmaker would stay registered after the task.
event.listen(_TaskSession, "loaded_as_persistent", _hold_instance)


def _claimed(session: Session, claims: list[tuple[int, int]]) -> list[Chained]:
    """The messages just claimed in this transaction, read once here so sending does not read them again,
    with their instances as this transaction leaves them (recording the results starts from those)."""
    if not claims:
        return []
    rows = _by_id(session, _MESSAGES, [m for m, _ in claims])
    # The step's customers are loaded already (one query for the batch): these are lookups.
    customer_ids = {r.customer_id for r in rows.values() if r.customer_id is not None}
    missing = [c for c in customer_ids if session.identity_map.get(identity_key(Customer, c)) is None]
    if missing:
        list(session.scalars(select(Customer).where(Customer.id.in_(missing))))
    out = []
    for mid, attempt in claims:
        row = rows[mid]
        customer = session.get(Customer, row.customer_id) if row.customer_id is not None else None
        claimed = Claimed.of(row, customer)
        # The claim's UPDATE ran without syncing loaded rows: the attempt is the claim's.
        instance = session.identity_map.get(identity_key(Instance, row.instance_id)) if row.instance_id is not None else None
        out.append((mid, attempt, replace(claimed, message=replace(claimed.message, attempt=attempt)), instance))
    return out


def _fire(task: Task, timer_id: int, attempt: int, chain_lease: timedelta | None) -> tuple[str, list[Chained]]:
    for _ in range(FIRE_TRIES):
        try:
            with task.transition() as session:
                rt = task.cf.runtime()
                claimed = session.execute(
                    update(Timer).where(Timer.id == timer_id, Timer.status == "pending", Timer.attempt == attempt)
                    .values(status="fired", fired_at=rt.now, lease_until=None).execution_options(synchronize_session=False)
                ).rowcount
                if claimed != 1:
                    return "stale", []  # fired already, or the lease was taken over: the newer claim does it
                timer = session.get(Timer, timer_id)
                assert timer is not None
                _log(session, "timer", timer_id, attempt, timer.instance_id)
                instance = session.get(Instance, timer.instance_id)
                if instance is None or instance.status != "running":
                    return "fired", []
                deliver(session, rt, instance, timer_event(timer))
                messages: list[Chained] = []
                if chain_lease is not None:
                    # Claimed in the step's own transaction: the messages commit already claimed by
                    # this worker (one commit less than claiming them after), and a crash before
                    # they are sent leaves claims whose lease runs out, as any claim would.
                    session.flush()
                    messages = _claimed(session, claim_messages(session, rt.now, wall_now(), chain_lease,
                                                                CHAINED_MESSAGES, instance.id))
            return "fired", messages
        except StaleDataError:
            continue  # another worker advanced the instance first: fire on its fresh state
        except EngineError as exc:
            # Rolled back: the timer stays pending and is claimed again once the lease ends.
            log.warning("timer %s could not fire: %s", timer_id, exc)
            return "error", []
    return "retry", []


class _OneByOne(Exception):
    """This batch cannot be fired as one transaction (e.g. two timers of one instance)."""


def _fire_batch(task: Task, claims: list[tuple[int, int]],
                chain_lease: timedelta | None) -> tuple[list[str], list[Chained]] | None:
    """Fire a batch of claimed timers in one transaction, or return None to fire them one by one.

    The guarantees are those of one timer per transaction, since the batch commits or rolls back
    whole: every timer is fenced by its attempt number in the first statement, every instance's
    revision is checked when its row is written, the execution log and the messages' claims
    commit with the state. Anything that would make one timer fail (an instance changed
    meanwhile, a broken expression) rolls back the batch, and its timers are fired one by one.
    """
    try:
        with task.transition() as session:
            rt = task.cf.runtime()
            fired = set(session.scalars(
                update(Timer).where(tuple_(Timer.id, Timer.attempt).in_(claims), Timer.status == "pending")
                .values(status="fired", fired_at=rt.now, lease_until=None)
                .returning(Timer.id).execution_options(synchronize_session=False)))
            timers = _by_id(session, _TIMERS, list(fired)) if fired else {}
            outcomes, logged = [], []
            for timer_id, attempt in claims:
                timer = timers.get(timer_id)
                if timer is None:
                    outcomes.append("stale")  # fired already, or the lease was taken over
                    continue
                outcomes.append("fired")
                logged.append(_log_row("timer", timer_id, attempt, timer.instance_id))
            writes = Writes(session, batch=True)
            ran = fire_timers(session, rt, [timers[t] for t, _attempt in claims if t in timers], writes)
            if ran is None:
                raise _OneByOne  # the second timer must see what the first one did to the instance
            running = [timer.instance_id for timer in ran]
            if logged:
                execute_rows(session.connection(), _LOG, logged)
            writes.flush()
            messages: list[Chained] = []
            if chain_lease is not None and running:
                session.flush()
                messages = _claimed(session, claim_messages(session, rt.now, wall_now(), chain_lease,
                                                            CHAINED_MESSAGES * len(running), running))
        return outcomes, messages
    except (_OneByOne, StaleDataError, EngineError) as exc:
        log.debug("batch of %d timers fired one by one: %r", len(claims), exc)
        return None


@dataclass
class MessageFence:
    """The claim a ``deliver_message`` task was published with (see ``engine.outbox.Fence``)."""

    attempt: int
    lease: timedelta

    def lease_until(self) -> datetime:
        return wall_now() + self.lease

    def recorded(self, session: Session, row: OutboxMessage | _Written) -> None:
        _log(session, "message", row.id, self.attempt, row.instance_id, "retry" if row.status == "pending" else "done")

    def recorded_group(self, session: Session, rows: Sequence[tuple[MessageFence, _Written]]) -> None:
        execute_rows(session.connection(), _LOG,
                     [_log_row("message", row.id, fence.attempt, row.instance_id,
                               "retry" if row.status == "pending" else "done") for fence, row in rows])


def run_message(cf: Careflow, message_id: int, attempt: int, lease: timedelta | None = None) -> DispatchReport:
    """Send one claimed outbox message, if the claim is still this attempt's."""
    return run_messages(cf, [(message_id, attempt)], lease)


def run_messages(cf: Careflow, claims: list[tuple[int, int]], lease: timedelta | None = None) -> DispatchReport:
    """Send a batch of claimed messages one after the other, renewing the leases of those still waiting."""
    with Task(cf, lease or Settings.from_env().lease) as task:
        task.heartbeat.hold_messages(claims)
        _send(task, [(mid, attempt, None, None) for mid, attempt in claims])
    return task.report


class TaskResolve:
    """``cf.resolve`` remembered for the length of one task: its messages mostly share a connector.

    One lookup (a query and its transaction) per connector and task instead of one per message.
    A configuration an admin changes meanwhile applies from the next task on, a few seconds later.
    A lookup inside the caller's transaction (``session`` given) is never remembered.
    """

    def __init__(self, resolve: Resolve):
        self.resolve = resolve
        self._known: dict[str, Any] = {}

    def __call__(self, name: str, session: Session | None = None) -> Any:
        if session is not None:
            return self.resolve(name, session)
        if name not in self._known:
            self._known[name] = self.resolve(name)
        return self._known[name]


def _send(task: Task, messages: Sequence[tuple[int, int, Claimed | None, Instance | None]]) -> None:
    """Send these claimed messages, fenced by their claims (``deliver_claimed``: through a provider
    that recognises a repeat, as a group whose results commit in one transaction)."""
    try:
        deliver_claimed(task.sessions, task.cf.runtime, task.resolve,
                        [Outgoing(mid, MessageFence(attempt, task.lease), claimed, instance)
                         for mid, attempt, claimed, instance in messages],
                        task.report, lost=task.heartbeat.lost_message, settled=task.heartbeat.release_message,
                        group=True)
    finally:
        for mid, *_ in messages:
            task.heartbeat.release_message(mid)


__all__ = [
    "Publisher",
    "Scheduler",
    "SchedulerReport",
    "Settings",
    "claim_messages",
    "claim_timers",
    "in_flight",
    "reclaim_messages",
    "release",
    "run_message",
    "run_messages",
    "run_timer",
    "run_timers",
    "wall_now",
]
