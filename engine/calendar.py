"""Business days (CN statutory holidays and 调休) and solar/lunar birthday matching.

Pure module: the caller passes every time in; nothing here reads the clock, a database or Flask.

Business days
    ``BusinessCalendar`` takes working days from ``holidays`` (``HolidayBase.is_working_day``, which
    already knows the make-up working weekends, e.g. Saturday 2026-02-14) and lets an admin override
    table win over the library. Business-day and business-hour arithmetic count on *local* dates of
    the tz the caller gives, and always return aware UTC datetimes.

Birthdays
    A customer stores ``birthday_key`` (month*100 + day) plus the calendar it is in; a daily job asks
    ``birthday_keys_on(today)`` for the keys to match. ``next_birthday`` gives the same answer as a
    date (for a precomputed "next fire" row). Rules:

    * Solar 29 Feb is celebrated on 28 Feb (``feb29_rule="feb28"``) or 1 Mar (``"mar1"``) in
      non-leap years.
    * Lunar birthdays are celebrated in the *regular* month: a leap-month (闰月) date is never a
      birthday date, and people born in a leap month are celebrated in the regular month of the
      same number (which always comes first in the year).
    * Lunar day 30 (三十) in a year whose month has 29 days is celebrated on 廿九.
    * A solar birthday is celebrated exactly once per solar year; a lunar birthday exactly once per
      *lunar* year, so within one solar year it can occur zero or two times (e.g. 农历腊月 dates).

Lunar dates cannot always be held in ``datetime.date`` (农历二月三十 or 二月廿九 of a non-leap solar
year), so lunar functions also accept ``LunarDate``, which additionally says whether the month is a
leap month.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

import holidays
from lunar_python import LunarYear, Solar

__all__ = [
    "CALENDARS",
    "FEB29_RULES",
    "BusinessCalendar",
    "LunarDate",
    "birthday_key",
    "birthday_keys_on",
    "lunar_to_solar",
    "next_birthday",
    "solar_to_lunar",
]

FEB29_RULES = ("feb28", "mar1")
CALENDARS = ("solar", "lunar")

# Longest plausible run of non-working days; beyond it the override table is broken, not the calendar.
_MAX_DAYS_OFF = 370


class LunarDate(NamedTuple):
    """A lunar (农历) date; ``leap`` is True for a day in a leap month (闰月)."""

    year: int
    month: int
    day: int
    leap: bool = False


# ---------------------------------------------------------------------------------------------
# Business days
# ---------------------------------------------------------------------------------------------


def _require_date(value: object, name: str) -> date:
    """Return ``value`` if it is a plain date (not a datetime), else raise ValueError."""
    # datetime is a subclass of date but never equals one, so it would silently miss every lookup.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime.date, got {type(value).__name__}")
    return value


def _require_aware(value: object, name: str) -> datetime:
    """Return ``value`` if it is a timezone-aware datetime, else raise ValueError."""
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _require_tz(tz: object) -> ZoneInfo:
    """Return ``tz`` if it is a ZoneInfo, else raise ValueError."""
    if not isinstance(tz, ZoneInfo):
        raise ValueError(f"tz must be a zoneinfo.ZoneInfo, got {type(tz).__name__}")
    return tz


def _local_wall(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``wall`` on ``day`` in ``tz`` (fold=0: gaps move forward)."""
    return datetime.combine(day, wall.replace(tzinfo=None, fold=0), tzinfo=tz).astimezone(timezone.utc)


class BusinessCalendar:
    """Working days of one country from ``holidays``, with an admin override table on top."""

    def __init__(self, country: str = "CN", overrides: Mapping[date, bool] | None = None) -> None:
        """Load the country's holiday data lazily; ``overrides`` maps date -> working (True) / off (False)."""
        try:
            self._library = holidays.country_holidays(country)
        except NotImplementedError as exc:
            raise ValueError(f"holidays has no data for country {country!r}") from exc
        self.country = country
        checked: dict[date, bool] = {}
        for day, working in (overrides or {}).items():
            _require_date(day, "override key")
            if not isinstance(working, bool):
                raise ValueError(f"override for {day.isoformat()} must be True or False, got {working!r}")
            checked[day] = working
        self._overrides: Mapping[date, bool] = checked
        # HolidayBase fills years lazily by mutating itself; snapshot each year under a lock so
        # concurrent workers never read a half-populated year.
        self._years: dict[int, frozenset[date]] = {}
        self._lock = threading.Lock()

    @property
    def overrides(self) -> Mapping[date, bool]:
        """The admins' corrections this calendar applies: date -> working (True) / off (False)."""
        return self._overrides

    def _library_working_days(self, year: int) -> frozenset[date]:
        """Every working day of ``year`` according to the library alone."""
        cached = self._years.get(year)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._years.get(year)
            if cached is None:
                first = date(year, 1, 1)
                span = (date(year + 1, 1, 1) - first).days if year < 9999 else 365
                days = (first + timedelta(days=i) for i in range(span))
                cached = frozenset(d for d in days if self._library.is_working_day(d))
                self._years[year] = cached
        return cached

    def is_working_day(self, day: date) -> bool:
        """True if ``day`` is a working day: the override table first, then the library data."""
        _require_date(day, "day")
        override = self._overrides.get(day)
        if override is not None:
            return override
        return day in self._library_working_days(day.year)

    def _first_working_day_from(self, day: date) -> date:
        """``day`` itself if it is a working day, else the next working day."""
        for _ in range(_MAX_DAYS_OFF):
            if self.is_working_day(day):
                return day
            day += timedelta(days=1)
        raise ValueError(f"no working day within {_MAX_DAYS_OFF} days of {day.isoformat()}; check the overrides")

    def add_business_days(self, start: datetime, days: int, tz: ZoneInfo) -> datetime:
        """Move ``days`` working days forward on local dates of ``tz``; aware UTC result, same local wall time.

        Rule: let D be the local date of ``start`` in ``tz``. If D is not a working day, D becomes the
        next working day (so ``days=0`` on a holiday gives the first working day, and ``days=1`` from
        a Saturday evening gives Tuesday evening when Monday works). Then D advances by ``days``
        working days, and the result is D at the local wall-clock time of ``start``. A wall time that
        does not exist on D (DST gap) is shifted forward by the gap; an ambiguous one takes the first
        occurrence. Negative ``days`` raise ValueError. Invariant:
        ``working_days_between(local start date, local result date) == days``.
        """
        _require_aware(start, "start")
        _require_tz(tz)
        if isinstance(days, bool) or not isinstance(days, int):
            raise ValueError(f"days must be an int, got {days!r}")
        if days < 0:
            raise ValueError(f"days must be >= 0, got {days}")
        local = start.astimezone(tz)
        day = self._first_working_day_from(local.date())
        for _ in range(days):
            day = self._first_working_day_from(day + timedelta(days=1))
        return _local_wall(day, local.time(), tz)

    def add_business_hours(
        self,
        start: datetime,
        hours: float,
        tz: ZoneInfo,
        day_start: time = time(9),
        day_end: time = time(18),
    ) -> datetime:
        """The instant at which ``hours`` of working time (day_start..day_end of working days) have elapsed.

        The clock runs only inside [day_start, day_end) of working days in ``tz``; a start outside
        those windows begins at the next window's opening (so ``hours=0`` gives the first working
        instant >= start). A deadline that lands exactly on ``day_end`` is returned as ``day_end``,
        not as the next morning. Windows are measured in real elapsed time (UTC), so a DST switch
        inside a window shortens or lengthens it. Aware UTC result.
        """
        _require_aware(start, "start")
        _require_tz(tz)
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours):
            raise ValueError(f"hours must be a finite number, got {hours!r}")
        if hours < 0:
            raise ValueError(f"hours must be >= 0, got {hours}")
        if day_start.tzinfo is not None or day_end.tzinfo is not None:
            raise ValueError("day_start and day_end must be naive local wall times")
        if not day_start < day_end:
            raise ValueError(f"day_start {day_start} must be before day_end {day_end}")
        remaining = timedelta(hours=hours)
        cursor = start.astimezone(timezone.utc)
        day = start.astimezone(tz).date()
        days_off = 0
        while True:
            if self.is_working_day(day):
                days_off = 0
                opens = _local_wall(day, day_start, tz)
                closes = _local_wall(day, day_end, tz)
                begin = max(opens, cursor)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return begin + remaining
                    remaining -= available
            else:
                days_off += 1
                if days_off > _MAX_DAYS_OFF:
                    raise ValueError(
                        f"no working day within {_MAX_DAYS_OFF} days of {day.isoformat()}; check the overrides"
                    )
            day += timedelta(days=1)

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in the half-open range [start, end); negative when end < start."""
        _require_date(start, "start")
        _require_date(end, "end")
        if end < start:
            return -self.working_days_between(end, start)
        return sum(1 for i in range((end - start).days) if self.is_working_day(start + timedelta(days=i)))


# ---------------------------------------------------------------------------------------------
# Lunar calendar (lunar_python as the astronomical source, cached as plain month tables)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LunarMonth:
    """One month of a lunar year: number, leap flag, first solar day and length."""

    month: int
    leap: bool
    first: date
    days: int


@lru_cache(maxsize=512)
def _lunar_year(year: int) -> tuple[_LunarMonth, ...]:
    """The months of lunar ``year`` in order (12 or 13 of them)."""
    try:
        # lunar_python keeps only one LunarYear in its cache and builds each Lunar object slowly
        # (about 5 ms); a month table per year makes the daily and property sweeps cheap.
        months = []
        for m in LunarYear.fromYear(year).getMonthsInYear():
            first = Solar.fromJulianDay(m.getFirstJulianDay())
            months.append(
                _LunarMonth(
                    month=abs(m.getMonth()),
                    leap=m.isLeap(),
                    first=date(first.getYear(), first.getMonth(), first.getDay()),
                    days=m.getDayCount(),
                )
            )
    except Exception as exc:  # lunar_python raises bare Exception for out-of-range input
        raise ValueError(f"lunar year {year} is outside the supported range: {exc}") from exc
    months.sort(key=lambda m: m.first)
    return tuple(months)


def _lunar_month(year: int, month: int, leap: bool) -> _LunarMonth | None:
    """The given month of lunar ``year``, or None if that year has no such (leap) month."""
    for m in _lunar_year(year):
        if m.month == month and m.leap == leap:
            return m
    return None


def _check_lunar_fields(year: int, month: int, day: int) -> None:
    """Raise ValueError unless month is 1..12 and day is 1..30."""
    for name, value in (("year", year), ("month", month), ("day", day)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"lunar {name} must be an int, got {value!r}")
    if not 1 <= month <= 12:
        raise ValueError(f"lunar month must be 1..12, got {month}")
    if not 1 <= day <= 30:
        raise ValueError(f"lunar day must be 1..30, got {day}")


def lunar_to_solar(year: int, month: int, day: int, leap: bool = False) -> date:
    """The solar date of lunar year/month/day (``leap`` for the leap month); ValueError if it does not exist."""
    _check_lunar_fields(year, month, day)
    if not isinstance(leap, bool):
        raise ValueError(f"leap must be True or False, got {leap!r}")
    m = _lunar_month(year, month, leap)
    if m is None:
        raise ValueError(f"lunar year {year} has no leap month {month}")
    if day > m.days:
        kind = "leap month" if leap else "month"
        raise ValueError(f"lunar {year} {kind} {month} has only {m.days} days, not {day}")
    return m.first + timedelta(days=day - 1)


def solar_to_lunar(day: date) -> LunarDate:
    """The lunar date (year, month, day, is_leap_month) of solar ``day``."""
    _require_date(day, "day")
    year = day.year
    months = _lunar_year(year)
    if day < months[0].first:
        # January/February days before 正月初一 belong to the previous lunar year.
        year -= 1
        months = _lunar_year(year)
    index = bisect_right([m.first for m in months], day) - 1
    m = months[index]
    offset = (day - m.first).days
    if offset >= m.days:  # pragma: no cover - would mean lunar_python's month table has a hole
        raise ValueError(f"{day.isoformat()} falls outside lunar year {year}")
    return LunarDate(year, m.month, offset + 1, m.leap)


# ---------------------------------------------------------------------------------------------
# Birthdays
# ---------------------------------------------------------------------------------------------


def _check_calendar(calendar: str) -> None:
    """Raise ValueError unless ``calendar`` is one of CALENDARS."""
    if calendar not in CALENDARS:
        raise ValueError(f"calendar must be one of {CALENDARS}, got {calendar!r}")


def _check_feb29_rule(feb29_rule: str) -> None:
    """Raise ValueError unless ``feb29_rule`` is one of FEB29_RULES."""
    if feb29_rule not in FEB29_RULES:
        raise ValueError(f"feb29_rule must be one of {FEB29_RULES}, got {feb29_rule!r}")


def _is_leap_year(year: int) -> bool:
    """Gregorian leap year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _birth_month_day(birthday: date | LunarDate, calendar: str) -> tuple[int, int]:
    """Validated (month, day) of ``birthday`` in ``calendar``."""
    _check_calendar(calendar)
    if calendar == "solar":
        if isinstance(birthday, LunarDate):
            raise ValueError("a LunarDate birthday needs calendar='lunar'")
        _require_date(birthday, "birthday")
        return birthday.month, birthday.day
    if isinstance(birthday, LunarDate):
        year, month, day, leap = birthday
    else:
        _require_date(birthday, "birthday")
        year, month, day, leap = birthday.year, birthday.month, birthday.day, False
    _check_lunar_fields(year, month, day)
    if not isinstance(leap, bool):
        raise ValueError(f"LunarDate.leap must be True or False, got {leap!r}")
    if leap:
        leap_month = _lunar_month(year, month, True)
        if leap_month is None:
            raise ValueError(f"impossible lunar birthday: lunar year {year} has no leap month {month}")
        longest = leap_month.days
    else:
        # A plain date cannot say 闰, so accept the day if it exists in either month of that number.
        candidates = [m.days for m in _lunar_year(year) if m.month == month]
        longest = max(candidates)
    if day > longest:
        raise ValueError(f"impossible lunar birthday: lunar {year} month {month} has only {longest} days, not {day}")
    return month, day


def birthday_key(birthday: date | LunarDate, calendar: str = "solar") -> int:
    """The indexed month*100+day of a birthday; for ``"lunar"`` the date's fields are the lunar y/m/d."""
    month, day = _birth_month_day(birthday, calendar)
    return month * 100 + day


def birthday_keys_on(day: date, *, feb29_rule: str = "feb28") -> tuple[frozenset[int], frozenset[int]]:
    """(solar_keys, lunar_keys) of every birthday celebrated on solar ``day``."""
    _require_date(day, "day")
    _check_feb29_rule(feb29_rule)
    solar = {day.month * 100 + day.day}
    if not _is_leap_year(day.year):
        if (feb29_rule == "feb28" and (day.month, day.day) == (2, 28)) or (
            feb29_rule == "mar1" and (day.month, day.day) == (3, 1)
        ):
            solar.add(229)
    lunar: set[int] = set()
    ly, lm, ld, leap = solar_to_lunar(day)
    if not leap:
        lunar.add(lm * 100 + ld)
        if ld == 29 and _lunar_month(ly, lm, False).days == 29:  # type: ignore[union-attr]
            lunar.add(lm * 100 + 30)
    return frozenset(solar), frozenset(lunar)


def _solar_celebration(month: int, day: int, year: int, feb29_rule: str) -> date:
    """The solar date in ``year`` on which a solar month/day birthday is celebrated."""
    if (month, day) == (2, 29) and not _is_leap_year(year):
        return date(year, 2, 28) if feb29_rule == "feb28" else date(year, 3, 1)
    return date(year, month, day)


def _lunar_celebration(month: int, day: int, lunar_year: int) -> date:
    """The solar date on which a lunar month/day birthday is celebrated in ``lunar_year``."""
    regular = _lunar_month(lunar_year, month, False)
    if regular is None:  # pragma: no cover - every lunar year has all twelve regular months
        raise ValueError(f"lunar year {lunar_year} has no month {month}")
    return regular.first + timedelta(days=min(day, regular.days) - 1)


def next_birthday(birthday: date | LunarDate, calendar: str, after: date, *, feb29_rule: str = "feb28") -> date:
    """The first solar date >= ``after`` on which the birthday is celebrated (agrees with birthday_keys_on)."""
    month, day = _birth_month_day(birthday, calendar)
    _require_date(after, "after")
    _check_feb29_rule(feb29_rule)
    if calendar == "solar":
        for year in (after.year, after.year + 1):
            celebrated = _solar_celebration(month, day, year, feb29_rule)
            if celebrated >= after:
                return celebrated
    else:
        # Lunar year N-1 ends before `after`, and lunar year N+1 starts after it, so two suffice.
        lunar_year = solar_to_lunar(after).year
        for year in (lunar_year, lunar_year + 1):
            celebrated = _lunar_celebration(month, day, year)
            if celebrated >= after:
                return celebrated
    raise AssertionError("unreachable: the following year always has a celebration")  # pragma: no cover
