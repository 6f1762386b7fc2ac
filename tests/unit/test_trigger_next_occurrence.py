"""``_next_occurrence``, which a scheduler's memo trusts to skip ticks (``TriggerMemo``), gives the
first occurrence ``_due_occurrences`` would fire, across daylight-saving changes too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from engine.schedule import _due_occurrences, _next_occurrence

#: (zone, a local day with a daylight-saving change in 2026): forward and back, by an hour or half an hour.
CHANGES = [
    ("America/New_York", "2026-03-08"), ("America/New_York", "2026-11-01"),
    ("Europe/London", "2026-03-29"), ("Europe/London", "2026-10-25"),
    ("Australia/Lord_Howe", "2026-04-05"), ("Australia/Lord_Howe", "2026-10-04"),
    ("America/Santiago", "2026-04-05"), ("America/Santiago", "2026-09-06"),  # at midnight
]
TRIGGERS = [
    SimpleNamespace(type="date", timezone=None, at=at) for at in ("00:00", "00:30", "01:30", "02:00", "02:30", "09:00")
] + [
    SimpleNamespace(type="schedule", timezone=None, cron=cron) for cron in ("30 1 * * *", "30 2 * * *", "0 0 * * *", "*/45 * * * *")
]


@pytest.mark.parametrize(("zone", "day"), CHANGES)
def test_the_next_occurrence_is_the_first_one_due(zone: str, day: str) -> None:
    flow = SimpleNamespace(timezone=zone)
    middle = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)
    for trigger in TRIGGERS:
        after = middle - timedelta(days=2)
        while after < middle + timedelta(days=2):
            due = _due_occurrences(flow, trigger, after, after + timedelta(days=3))  # type: ignore[arg-type]
            assert due, (zone, trigger, after)
            assert _next_occurrence(flow, trigger, after) == due[0], (zone, trigger, after)  # type: ignore[arg-type]
            after += timedelta(minutes=17, seconds=7)
