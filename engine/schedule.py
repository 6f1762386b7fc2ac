"""Time: due timers and cron/date triggers, each fired exactly once per due time.

Timers and trigger occurrences are rows. A tick claims each due timer with a compare-and-set
update in the same transaction that advances its instance, and records each trigger firing
under a unique ``(flow, trigger, scheduled_for)`` key, so two tickers racing, or a tick after
downtime, fire each thing once. APScheduler only calls ``tick`` every second (see ``ticker``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from engine import expr
from engine.calendar import birthday_keys_on
from engine.crashpoints import crash_point
from engine.cron import fires_between, next_fire
from engine.errors import EngineError, ExpressionError
from engine.flow.model import Flow, Trigger
from engine.segments.membership import segment_memberships
from engine.store import customers as cust
from engine.store.batch import fire_timers, timer_event
from engine.store.definitions import flow_of_version
from engine.store.instances import NotEnrolled, Runtime, Writes, deliver, start_instance
from engine.store.models import Customer, FlowVersion, Instance, Timer, TriggerOccurrence

log = logging.getLogger(__name__)

#: A coalesced trigger still fires its newest missed occurrence if it is at most this late.
CATCH_UP_WINDOW = timedelta(hours=24)
#: A ``catch_up: skip`` trigger fires an occurrence only if the tick is at most this late.
SKIP_GRACE = timedelta(minutes=10)
#: Customers no scheduled trigger starts a flow for: lost ones, and deleted ones (only a tombstone is left).
NOT_SCHEDULED = ("lost", "deleted")
#: Date triggers look back at most this many days after downtime.
MAX_DAYS_BACK = 31


@dataclass
class TickReport:
    timers_fired: int = 0
    timers_stale: int = 0
    occurrences_fired: int = 0
    occurrences_missed: int = 0
    instances_started: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fire_due_timers(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: TickReport, batch: int = 500) -> None:
    """Fire every timer due at the runtime's now, oldest first, until none is left."""
    skip: set[int] = set()
    while True:
        with factory() as session:
            now = runtime().now
            query = select(Timer.id).where(Timer.status == "pending", Timer.due_at <= now)
            if skip:
                query = query.where(Timer.id.not_in(skip))
            ids = list(session.scalars(query.order_by(Timer.due_at, Timer.id).limit(batch)))
        if not ids:
            return
        for start in range(0, len(ids), FIRE_BATCH):
            part = ids[start:start + FIRE_BATCH]
            if len(part) > 1 and _fire_batch(factory, runtime, part, report):
                continue
            for timer_id in part:
                if not _fire_timer(factory, runtime, timer_id, report):
                    skip.add(timer_id)


#: Timers fired in one transaction by the embedded tick: one commit (an fsync on SQLite) for a
#: hundred timers due together (a 09:00 birthday campaign), instead of one each.
FIRE_BATCH = 100


class _OneByOne(Exception):
    """This batch cannot be fired as one transaction (two timers of one instance)."""


def _fire_batch(factory: sessionmaker[Session], runtime: Callable[[], Runtime], ids: list[int],
                report: TickReport) -> bool:
    """Fire these timers in one transaction; False (nothing done) to have them fired one by one.

    The guarantees are those of one timer per transaction, since the batch commits or rolls back
    whole: each timer is taken from pending to fired by compare-and-set, each instance's revision is
    checked when its row is written, and anything that would fail one timer (an instance advanced
    by someone else, a broken expression) rolls the whole batch back for ``_fire_timer`` to redo.
    """
    order = {timer_id: index for index, timer_id in enumerate(ids)}
    try:
        with factory.begin() as session:
            if not session.get_bind().dialect.update_returning:  # SQLite before 3.35
                return False
            rt = runtime()
            timers = list(session.scalars(
                update(Timer).where(Timer.id.in_(ids), Timer.status == "pending")
                .values(status="fired", fired_at=rt.now).returning(Timer)
                .execution_options(synchronize_session=False)))
            writes = Writes(session, batch=True)
            ran = fire_timers(session, rt, sorted(timers, key=lambda t: order[t.id]), writes)
            if ran is None:
                raise _OneByOne  # the second timer must see what the first one did to the instance
            fired, stale = len(ran), len(timers) - len(ran)
            writes.flush()
            crash_point("before_timer_fire_commit")
    except (_OneByOne, StaleDataError, EngineError) as exc:
        log.debug("batch of %d timers fired one by one: %r", len(ids), exc)
        return False
    crash_point("after_timer_fire_commit")
    report.timers_fired += fired
    report.timers_stale += stale
    return True


def _fire_timer(factory: sessionmaker[Session], runtime: Callable[[], Runtime], timer_id: int, report: TickReport) -> bool:
    try:
        with factory.begin() as session:
            rt = runtime()
            claimed = session.execute(
                update(Timer).where(Timer.id == timer_id, Timer.status == "pending").values(status="fired", fired_at=rt.now)
            ).rowcount
            if claimed != 1:
                return True
            timer = session.get(Timer, timer_id)
            assert timer is not None
            instance = session.get(Instance, timer.instance_id)
            if instance is None or instance.status != "running":
                report.timers_stale += 1
                return True
            deliver(session, rt, instance, timer_event(timer))
            crash_point("before_timer_fire_commit")
        crash_point("after_timer_fire_commit")
        report.timers_fired += 1
        return True
    except StaleDataError:
        # Someone else advanced the instance meanwhile; the rollback left the timer pending.
        return False
    except EngineError as exc:
        # The rollback left the timer pending for the next tick; one broken instance must not
        # stop every other timer, trigger and message from being processed.
        log.warning("timer %s could not fire: %s", timer_id, exc)
        report.errors.append(f"timer {timer_id}: {exc}")
        return False


#: The newest active version of each flow: only ids, so a tick in which no deployment changed reads
#: no YAML source and parses nothing.
_NEWEST = (select(FlowVersion.flow_id, func.max(FlowVersion.version).label("v"))
           .where(FlowVersion.active.is_(True)).group_by(FlowVersion.flow_id).subquery())
_LATEST_VERSION_IDS = (select(FlowVersion.id, FlowVersion.flow_id)
                       .join(_NEWEST, (FlowVersion.flow_id == _NEWEST.c.flow_id) & (FlowVersion.version == _NEWEST.c.v))
                       .order_by(FlowVersion.flow_id))


@dataclass
class _Deployed:
    """A flow's newest version as a ticker knows it, with what its time triggers told the last ticks."""

    version_id: int
    flow: Flow
    since: datetime | None
    #: (position in the flow's triggers, trigger): the schedule and date ones
    triggers: list[tuple[int, Trigger]]
    #: position -> no occurrence of that trigger is due before this time
    quiet_until: dict[int, datetime] = field(default_factory=dict)


class TriggerMemo:
    """What a ticker remembers between ticks, so that a tick with no trigger due runs one query.

    The exactly-once guarantee stays in the database (the unique key of ``trigger_occurrence``);
    this only skips the work of ticks that could not fire anything. A trigger found with nothing
    due is not read again before its next occurrence after the last one recorded. That time can
    only move later meanwhile (occurrences are only ever added, by any ticker), so nothing due is
    ever skipped; a new deployment changes the newest version ids, read every tick, and with
    them the triggers.
    """

    def __init__(self) -> None:
        self.flows: dict[str, _Deployed] = {}


#: One memo per session factory (per engine object, as the definition caches), for callers that keep none.
_MEMOS: weakref.WeakKeyDictionary[sessionmaker[Session], TriggerMemo] = weakref.WeakKeyDictionary()


def fire_triggers(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: TickReport,
                  memo: TriggerMemo | None = None) -> None:
    if memo is None:
        memo = _MEMOS.setdefault(factory, TriggerMemo())
    with factory() as session:
        flows: dict[str, _Deployed] = {}
        for version_id, flow_id in session.execute(_LATEST_VERSION_IDS).all():
            known = memo.flows.get(flow_id)
            if known is None or known.version_id != version_id:
                flow = flow_of_version(session, version_id)
                since = session.scalar(select(func.min(FlowVersion.deployed_at)).where(FlowVersion.flow_id == flow_id))
                known = _Deployed(version_id, flow, since,
                                  [(i, t) for i, t in enumerate(flow.triggers) if t.type in ("schedule", "date")])
            flows[flow_id] = known
    memo.flows = flows
    now = runtime().now
    for deployed in flows.values():
        flow = deployed.flow
        for position, trigger in deployed.triggers:
            quiet_until = deployed.quiet_until.pop(position, None)
            if quiet_until is not None and now < quiet_until:
                deployed.quiet_until[position] = quiet_until
                continue
            try:
                quiet = _fire_trigger(factory, runtime, flow, trigger, deployed.since, report)
            except Exception as exc:  # one broken trigger must not stop the others from firing
                log.exception("trigger %s of flow %s failed", trigger.key, flow.id)
                report.errors.append(f"{flow.id}: {exc}")
                continue
            if quiet is not None:
                deployed.quiet_until[position] = quiet


def _last_occurrence(session: Session, flow: Flow, trigger: Trigger) -> datetime | None:
    return session.scalar(
        select(func.max(TriggerOccurrence.scheduled_for)).where(
            TriggerOccurrence.flow_id == flow.id, TriggerOccurrence.trigger_key == trigger.key
        )
    )


def _due_occurrences(flow: Flow, trigger: Trigger, after: datetime, now: datetime) -> list[datetime]:
    tz = trigger.timezone or flow.timezone
    if trigger.type == "schedule":
        assert trigger.cron is not None
        return fires_between(trigger.cron, tz, after, now, limit=5000)
    zone = ZoneInfo(tz)
    hour, minute = (int(x) for x in trigger.at.split(":"))
    first_day = max(after.astimezone(zone).date(), now.astimezone(zone).date() - timedelta(days=MAX_DAYS_BACK))
    out = []
    day = first_day
    while day <= now.astimezone(zone).date():
        fire = datetime.combine(day, time(hour, minute), zone).astimezone(timezone.utc)
        if after < fire <= now:
            out.append(fire)
        day += timedelta(days=1)
    return out


def _next_occurrence(flow: Flow, trigger: Trigger, after: datetime) -> datetime:
    """The trigger's first occurrence strictly after ``after`` (``_due_occurrences`` lists them up to a time)."""
    tz = trigger.timezone or flow.timezone
    if trigger.type == "schedule":
        assert trigger.cron is not None
        return next_fire(trigger.cron, tz, after)
    zone = ZoneInfo(tz)
    hour, minute = (int(x) for x in trigger.at.split(":"))
    day = after.astimezone(zone).date()
    fire = datetime.combine(day, time(hour, minute), zone).astimezone(timezone.utc)
    return fire if fire > after else datetime.combine(day + timedelta(days=1), time(hour, minute), zone).astimezone(timezone.utc)


def _fire_trigger(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], flow: Flow, trigger: Trigger,
    since: datetime | None, report: TickReport,
) -> datetime | None:
    """Record the trigger's due occurrences; when none was due, the time before which none can be."""
    with factory() as session:
        now = runtime().now
        after = _last_occurrence(session, flow, trigger) or since or now
    due = _due_occurrences(flow, trigger, after, now)
    if not due:
        return _next_occurrence(flow, trigger, after)
    if trigger.catch_up == "skip":
        fire = [d for d in due if now - d <= SKIP_GRACE]
    else:
        fire = [due[-1]] if now - due[-1] <= CATCH_UP_WINDOW else []
    for missed in (d for d in due if d not in fire):
        _record(factory, runtime, flow, trigger, missed, "missed", report)
    for occurrence in fire:
        _record(factory, runtime, flow, trigger, occurrence, "fired", report)
    return None


def _record(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], flow: Flow, trigger: Trigger,
    scheduled_for: datetime, status: str, report: TickReport,
) -> None:
    try:
        with factory.begin() as session:
            rt = runtime()
            row = TriggerOccurrence(flow_id=flow.id, trigger_key=trigger.key, scheduled_for=scheduled_for,
                                    fired_at=rt.now, status=status, started=0)
            session.add(row)
            session.flush()  # the unique key decides which ticker owns this occurrence
            if status == "fired":
                row.started = _start_for_occurrence(session, rt, flow, trigger, scheduled_for)
                report.instances_started += row.started
    except IntegrityError:
        return
    if status == "fired":
        report.occurrences_fired += 1
    else:
        report.occurrences_missed += 1


def _start_for_occurrence(session: Session, rt: Runtime, flow: Flow, trigger: Trigger, scheduled_for: datetime) -> int:
    data = {"type": trigger.type, "scheduled_for": scheduled_for.isoformat()}
    if trigger.type == "schedule" and not trigger.customers:
        start_instance(session, rt, flow.id, trigger=data)
        return 1
    if trigger.type == "date":
        tz = ZoneInfo(trigger.timezone or flow.timezone)
        celebrated = scheduled_for.astimezone(tz).date() - timedelta(days=trigger.offset_days)
        data["date"] = celebrated.isoformat()
        candidates: Iterable[Customer] = birthday_customers(session, celebrated, trigger)
    else:
        candidates = session.scalars(select(Customer).where(Customer.status.not_in(NOT_SCHEDULED)).order_by(Customer.id))
    condition = expr.compile_expression(trigger.customers) if trigger.customers else None
    # ``customer.segments`` (the names of the segments a customer is in) costs one query per firing.
    segments = segment_memberships(session) if trigger.customers and "segments" in trigger.customers else None
    started = 0
    for customer in candidates:
        if condition is not None:
            values = cust.customer_dict(customer)
            if segments is not None:
                values["segments"] = segments.get(customer.id, [])
            try:
                if not condition.evaluate({"customer": values, "now": rt.now}):
                    continue
            except ExpressionError as exc:
                log.warning("flow %s: trigger condition failed for customer %s: %s", flow.id, customer.id, exc)
                continue
        try:
            with session.begin_nested():
                start_instance(session, rt, flow.id, customer_id=customer.id, trigger=data)
            started += 1
        except NotEnrolled:
            continue
    return started


def birthday_customers(session: Session, day: date, trigger: Trigger) -> list[Customer]:
    """Customers whose birthday is celebrated on ``day``: an indexed lookup on the month-day key."""
    solar, lunar = birthday_keys_on(day, feb29_rule=trigger.feb29)
    conds = [and_(Customer.birthday_calendar == "solar", Customer.birthday_key.in_(list(solar)))]
    if trigger.lunar != "never" and lunar:
        conds.append(and_(Customer.birthday_calendar == "lunar", Customer.birthday_key.in_(list(lunar))))
    return list(session.scalars(select(Customer).where(or_(*conds), Customer.status.not_in(NOT_SCHEDULED)).order_by(Customer.id)))
