"""UTCDateTime's one-step SQLite processors give what SQLAlchemy's chain of processors gives."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from engine.store.models import UTCDateTime, _naive_utc_bind, _sqlite_bind, _sqlite_result


def _outcome(fn, value):  # type: ignore[no-untyped-def]
    try:
        return fn(value)
    except Exception as exc:  # the same error, with the same message
        return repr(exc)


def test_sqlite_text_is_the_same_both_ways() -> None:
    dialect = sqlite.dialect()
    adapted = UTCDateTime().dialect_impl(dialect)
    assert adapted.bind_processor(dialect) is _sqlite_bind
    assert adapted.result_processor(dialect, None) is _sqlite_result
    chain_bind = TypeDecorator.bind_processor(adapted, dialect)
    chain_result = TypeDecorator.result_processor(adapted, dialect, None)
    rng = random.Random(20261205)
    zones = [timezone.utc, ZoneInfo("Asia/Shanghai"), timezone(timedelta(hours=-5, minutes=-30)),
             ZoneInfo("America/New_York")]
    for _ in range(5000):
        value = datetime(rng.randint(2, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]),
                         tzinfo=rng.choice(zones))
        text = chain_bind(value)
        assert _sqlite_bind(value) == text, value
        read, expected = _sqlite_result(text), chain_result(text)
        assert read == expected and read.tzinfo is expected.tzinfo, text
    for odd in (None, datetime(2026, 1, 1), "2026-01-01"):
        assert _outcome(_sqlite_bind, odd) == _outcome(chain_bind, odd)
    for text in (None, "2026-11-24 01:00:00.000000", "2026-11-24 01:00:00", "2026-11-24", "garbage"):
        assert _outcome(_sqlite_result, text) == _outcome(chain_result, text)


def test_postgresql_gets_the_values_process_bind_param_gives() -> None:
    dialect = postgresql.psycopg.dialect()
    adapted = UTCDateTime().dialect_impl(dialect)
    assert adapted.bind_processor(dialect) is _naive_utc_bind
    chain_bind = TypeDecorator.bind_processor(adapted, dialect) or (lambda v: v)
    rng = random.Random(20261207)
    zones = [timezone.utc, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")]
    for _ in range(3000):
        value = datetime(rng.randint(2, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999), tzinfo=rng.choice(zones),
                         fold=rng.randint(0, 1))
        for _again in range(2):  # the second time from the last value kept
            got, expected = _naive_utc_bind(value), chain_bind(value)
            assert (got, got.tzinfo, got.fold) == (expected, expected.tzinfo, expected.fold), value
    for odd in (None, datetime(2026, 1, 1), "2026-01-01"):
        assert _outcome(_naive_utc_bind, odd) == _outcome(chain_bind, odd)


def test_other_dialects_keep_the_chain() -> None:
    dialect = postgresql.dialect()
    adapted = UTCDateTime().dialect_impl(dialect)
    process = adapted.bind_processor(dialect)
    assert process is not _sqlite_bind
    value = datetime(2026, 11, 24, 9, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert (process or (lambda v: v))(value) == datetime(2026, 11, 24, 1)
    with pytest.raises(ValueError, match="naive datetime"):
        (process or (lambda v: v))(datetime(2026, 11, 24))


def test_the_conversions_are_astimezone_and_replace() -> None:
    """UTCDateTime's own steps, on any dialect: the same values (folds and time zone objects too)
    as ``value.astimezone(timezone.utc).replace(tzinfo=None)`` and ``value.replace(tzinfo=timezone.utc)``."""
    t = UTCDateTime()
    rng = random.Random(20261206)
    zones = [timezone.utc, ZoneInfo("Asia/Shanghai"), timezone(timedelta(hours=-5, minutes=-30)),
             ZoneInfo("America/New_York"), ZoneInfo("UTC")]

    def exactly(d: datetime) -> tuple[object, ...]:
        return (type(d), d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, d.fold, d.tzinfo)

    for _ in range(5000):
        value = datetime(rng.randint(2, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]),
                         tzinfo=rng.choice(zones), fold=rng.randint(0, 1))
        naive = value.astimezone(timezone.utc).replace(tzinfo=None)
        assert exactly(t.process_bind_param(value, None)) == exactly(naive), value
        stored = naive.replace(fold=rng.randint(0, 1))
        assert exactly(t.process_result_value(stored, None)) == exactly(stored.replace(tzinfo=timezone.utc)), stored
    assert t.process_bind_param(None, None) is None and t.process_result_value(None, None) is None
