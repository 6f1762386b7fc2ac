"""Cron fire times, computed by APScheduler's CronTrigger used as a pure calculator."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from engine.problem_text import Text, t


#: Crontab weekday numbers: 0 and 7 are Sunday.
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


@lru_cache(maxsize=256)
def parse_cron(expression: str, tz: str) -> CronTrigger:
    """A CronTrigger for a 5-field crontab line; raises ValueError naming the bad field.

    Weekday numbers follow crontab (0 or 7 = Sunday, 1 = Monday); APScheduler's own numbering
    starts at Monday = 0, so numbers are turned into day names before it sees them. As in
    APScheduler, a day of month and a weekday given together must both match.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(t("cron.fields", count=len(fields)))
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday_names(weekday),
                           timezone=ZoneInfo(tz))
    except ValueError as exc:
        raise ValueError(_described(exc)) from None


#: APScheduler's field errors (English, kept word for word) -> a message key that also says them in Chinese.
_APSCHEDULER_ERRORS = (
    (re.compile(r"Error validating expression (?P<expr>'.*'): the last value \((?P<value>\d+)\) is higher than "
                r"the maximum value \((?P<limit>\d+)\)"), "cron.above_maximum"),
    (re.compile(r"Error validating expression (?P<expr>'.*'): the first value \((?P<value>\d+)\) is lower than "
                r"the minimum value \((?P<limit>\d+)\)"), "cron.below_minimum"),
    (re.compile(r'Unrecognized expression "(?P<expr>.*)" for field "(?P<field>.*)"'), "cron.unrecognized"),
)


def _described(exc: ValueError) -> str:
    message = str(exc)
    if exc.args and isinstance(exc.args[0], Text):
        return exc.args[0]
    for pattern, key in _APSCHEDULER_ERRORS:
        found = pattern.fullmatch(message)
        if found:
            return Text(key, message, **found.groupdict())
    return Text("cron.other", message, detail=message)


def _weekday_names(field: str) -> str:
    return ",".join(_weekday_part(part) for part in field.split(","))


def _weekday_part(part: str) -> str:
    body, _, step = part.partition("/")
    suffix = f"/{step}" if step else ""
    if "-" in body:
        first, last = body.split("-", 1)
        if first.isdigit() and last.isdigit():
            lo, hi = _weekday_number(first), _weekday_number(last)
            if lo == 0 and hi != 0:
                # "0-5": Sunday plus Monday to Friday, since APScheduler's week starts on Monday.
                return "sun," + (f"mon-{_WEEKDAYS[hi]}{suffix}" if hi > 1 else "mon")
            return f"{_WEEKDAYS[lo]}-{_WEEKDAYS[hi]}{suffix}"
        return part
    if body.isdigit():
        return _WEEKDAYS[_weekday_number(body)] + suffix
    return part


def _weekday_number(text: str) -> int:
    number = int(text)
    if number > 7:
        raise ValueError(t("cron.weekday", number=number))
    return number


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
