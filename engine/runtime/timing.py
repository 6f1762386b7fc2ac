"""Turning durations into due times on the flow's business calendar."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from engine.calendar import BusinessCalendar
from engine.flow.model import Duration


def add_duration(start: datetime, duration: Duration, tz: str, calendar: BusinessCalendar) -> datetime:
    """``start`` plus ``duration``; business units follow the calendar in the flow's time zone."""
    # A batch gives every request the same "now", so its tasks' due times are the same few sums:
    # remembered per calendar object (a calendar's working days never change once it is built).
    # Only for UTC starts: equal datetimes of other zones may still add up differently (wall-clock
    # arithmetic across a DST change, an ambiguous hour's fold).
    if start.tzinfo is not timezone.utc:
        return _add_duration(start, duration, tz, calendar)
    key = (start, duration, tz)
    hit = _recent.get(key)
    if hit is not None and hit[0] is calendar:
        return hit[1]
    result = _add_duration(start, duration, tz, calendar)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[key] = (calendar, result)
    return result


_recent: dict[tuple[datetime, Duration, str], tuple[BusinessCalendar, datetime]] = {}
_RECENT_MAX = 64


def _add_duration(start: datetime, duration: Duration, tz: str, calendar: BusinessCalendar) -> datetime:
    result = start + duration.plain
    zone = ZoneInfo(tz)
    if duration.business_days:
        result = calendar.add_business_days(result, duration.business_days, zone)
    if duration.business_hours:
        result = calendar.add_business_hours(result, duration.business_hours, zone)
    return result.astimezone(timezone.utc)


def subtract_duration(end: datetime, duration: Duration) -> datetime:
    """``end`` minus the calendar part of a duration (reminders "before" a due time)."""
    return (end - duration.plain).astimezone(timezone.utc)
