"""Cron fire times, computed by APScheduler's CronTrigger used as a pure calculator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger


@lru_cache(maxsize=256)
def parse_cron(expression: str, tz: str) -> CronTrigger:
    """A CronTrigger for a 5-field crontab line; raises ValueError naming the bad field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    return CronTrigger.from_crontab(expression, timezone=ZoneInfo(tz))


def next_fire(expression: str, tz: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in UTC."""
    trigger = parse_cron(expression, tz)
    # CronTrigger returns the first time >= now; nudge by a microsecond for "strictly after".
    fire = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    if fire is None:
        raise ValueError(f"cron {expression!r} never fires after {after.isoformat()}")
    return fire.astimezone(timezone.utc)


def fires_between(expression: str, tz: str, after: datetime, until: datetime, limit: int = 1000) -> list[datetime]:
    """Fire times in (after, until], at most ``limit`` (oldest first)."""
    out: list[datetime] = []
    current = after
    while len(out) < limit:
        fire = next_fire(expression, tz, current)
        if fire > until:
            break
        out.append(fire)
        current = fire
    return out
