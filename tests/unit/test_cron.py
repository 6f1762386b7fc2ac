"""Cron lines read as crontab reads them: weekday 0 and 7 are Sunday, 1-5 Monday to Friday."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engine.cron import fires_between, next_fire, parse_cron

TZ = "Asia/Shanghai"
# Tuesday 24 November 2026, 00:00 UTC = 08:00 Shanghai.
TUESDAY = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)


def weekdays(expression: str) -> list[str]:
    fires = fires_between(expression, TZ, TUESDAY, datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc))
    return [f.astimezone(timezone.utc).strftime("%a") for f in fires]


@pytest.mark.parametrize(("expression", "expected"), [
    ("0 9 * * 1-5", ["Tue", "Wed", "Thu", "Fri", "Mon"]),  # 09:00 Shanghai is 01:00 UTC, same day
    ("0 9 * * 0", ["Sun"]),
    ("0 9 * * 7", ["Sun"]),
    ("0 9 * * 0-1", ["Sun", "Mon"]),
    ("0 9 * * 6,0", ["Sat", "Sun"]),
    ("0 9 * * mon", ["Mon"]),
    ("0 9 * * *", ["Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Mon"]),
])
def test_weekdays_follow_crontab(expression: str, expected: list[str]) -> None:
    assert weekdays(expression) == expected


def test_next_fire_is_in_utc_and_strictly_after() -> None:
    fire = next_fire("0 9 * * *", TZ, TUESDAY)
    assert fire == datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)
    assert next_fire("0 9 * * *", TZ, fire) == datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("expression", ["0 9 * * 8", "0 25 * * *", "0 9 * *", "x 9 * * *"])
def test_bad_lines_are_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        parse_cron(expression, TZ)
