"""The daily recompute, fired by the tick at the configured time (Asia/Shanghai by default).

Each firing is a ``trigger_occurrence`` row under a unique key written in the same transaction as
the recompute, like the flows' schedule triggers: two tickers, or a tick after downtime, run it
once for the newest due time (days missed during downtime are not run one by one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from engine.schedule import TickReport
from engine.segments import recompute
from engine.segments.settings import GradingSettings, load
from engine.store.instances import Runtime
from engine.store.models import TriggerOccurrence

log = logging.getLogger(__name__)

#: The occurrence rows of system jobs use this in place of a flow id.
SYSTEM = "_system"
JOB_KEY = "segments.recompute"


def latest_due(settings: GradingSettings, now: datetime) -> datetime:
    """The newest time at or before ``now`` at which the daily recompute is due (UTC)."""
    zone = ZoneInfo(settings.timezone)
    hour, minute = (int(x) for x in settings.recompute_at.split(":"))
    local = now.astimezone(zone)
    due = datetime.combine(local.date(), time(hour, minute), zone)
    if due > local:
        due = datetime.combine(local.date() - timedelta(days=1), time(hour, minute), zone)
    return due.astimezone(timezone.utc)


def last_run(session: Session) -> datetime | None:
    return session.scalar(select(func.max(TriggerOccurrence.scheduled_for)).where(
        TriggerOccurrence.flow_id == SYSTEM, TriggerOccurrence.trigger_key == JOB_KEY))


def run_daily_recompute(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: TickReport) -> bool:
    """Run the recompute if it is due and no ticker ran it yet; True if this call ran it."""
    with factory() as session:
        settings = load(session)
        last = last_run(session)
    due = latest_due(settings, runtime().now)
    if last is not None and last >= due:
        return False
    # The very first tick only marks where the schedule starts (like a flow's schedule trigger,
    # which starts at its deployment): the first run is at the next due time, or on demand.
    first = last is None
    try:
        with factory.begin() as session:
            rt = runtime()
            row = TriggerOccurrence(flow_id=SYSTEM, trigger_key=JOB_KEY, scheduled_for=due, fired_at=rt.now,
                                    status="missed" if first else "fired", started=0)
            session.add(row)
            session.flush()  # the unique key decides which ticker runs it
            if first:
                return False
            result = recompute(session, rt)
            row.started = int(result["segments"]["instances_started"])
    except IntegrityError:
        return False
    except Exception as exc:  # the rest of the tick (timers, messages) must still run
        log.exception("daily segment recompute failed")
        report.errors.append(f"{JOB_KEY}: {exc}")
        return False
    report.occurrences_fired += 1
    report.instances_started += row.started
    return True
