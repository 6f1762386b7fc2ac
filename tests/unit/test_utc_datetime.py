"""UTCDateTime's one-step SQLite processors give what SQLAlchemy's chain of processors gives."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from engine.store.models import UTCDateTime, _sqlite_bind, _sqlite_result


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


def test_other_dialects_keep_the_chain() -> None:
    dialect = postgresql.dialect()
    adapted = UTCDateTime().dialect_impl(dialect)
    process = adapted.bind_processor(dialect)
    assert process is not _sqlite_bind
    value = datetime(2026, 11, 24, 9, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert (process or (lambda v: v))(value) == datetime(2026, 11, 24, 1)
    with pytest.raises(ValueError, match="naive datetime"):
        (process or (lambda v: v))(datetime(2026, 11, 24))
