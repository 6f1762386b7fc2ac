"""The injectable clock: the only place Careflow reads the time."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that stands still until moved; tests and `--now` commands use it."""

    def __init__(self, at: datetime):
        self.at = as_utc(at)

    def now(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = as_utc(at)


class OffsetClock:
    """Starts at a chosen time and then runs at real speed (``careflow run --now``)."""

    def __init__(self, start: datetime):
        self.start = as_utc(start)
        self.base = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.base)


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone; add one, e.g. +08:00 or Z")
    return value.astimezone(timezone.utc)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant with a zone (``2026-11-24T09:00+08:00`` or ``...Z``)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 date-time") from exc
    return as_utc(value)


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    env = os.environ if environ is None else environ
    fixed = env.get("CAREFLOW_NOW")
    return FixedClock(parse_instant(fixed)) if fixed else SystemClock()


class FileClock:
    """The time written in a file, re-read when the file changes (``CAREFLOW_CLOCK_FILE``).

    Lets a test move the clock of several processes at once (schedulers and workers of the
    distributed mode); like ``FixedClock`` it stands still until the file is rewritten.
    """

    def __init__(self, path: str):
        self.path = path
        self._stamp: int | None = None
        self._at: datetime | None = None

    def now(self) -> datetime:
        stamp = os.stat(self.path).st_mtime_ns
        if stamp != self._stamp or self._at is None:
            with open(self.path, encoding="utf-8") as f:
                self._at = parse_instant(f.read())
            self._stamp = stamp
        return self._at
