"""Tests for engine.calendar: CN business days (调休), SLA hours, and solar/lunar birthdays.

Expected dates come from the State Council arrangement for 2026 (春节 2/15–2/23 off with 2/14 and 2/28
worked; 国庆 10/1–10/7 off with 9/20 and 10/10 worked), from lunar_python / holidays used directly
as oracles, and from hand arithmetic noted next to each case.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from lunar_python import Lunar, LunarYear, Solar

from engine.calendar import (
    FEB29_RULES,
    BusinessCalendar,
    LunarDate,
    birthday_key,
    birthday_keys_on,
    lunar_to_solar,
    next_birthday,
    solar_to_lunar,
)

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


@pytest.fixture(scope="module")
def cn() -> BusinessCalendar:
    """One CN calendar for the module (the per-year snapshot is the expensive part)."""
    return BusinessCalendar("CN")


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """An Asia/Shanghai wall time."""
    return datetime(y, m, d, hh, mm, tzinfo=SH)


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """A UTC instant."""
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def days_of(start: date, end: date) -> list[date]:
    """Every date in [start, end)."""
    return [start + timedelta(days=i) for i in range((end - start).days)]


def oracle_lunar(day: date) -> tuple[int, int, int, bool]:
    """lunar_python's own answer for a solar date (negative month means leap)."""
    lunar = Solar.fromYmd(day.year, day.month, day.day).getLunar()
    return lunar.getYear(), abs(lunar.getMonth()), lunar.getDay(), lunar.getMonth() < 0


def oracle_solar(year: int, month: int, day: int, leap: bool = False) -> date:
    """lunar_python's own solar date for a lunar date."""
    solar = Lunar.fromYmd(year, -month if leap else month, day).getSolar()
    return date(solar.getYear(), solar.getMonth(), solar.getDay())


# --------------------------------------------------------------------------------------------
# Working days
# --------------------------------------------------------------------------------------------


def test_national_day_2026_is_off_and_its_make_up_days_work(cn: BusinessCalendar) -> None:
    for day in days_of(date(2026, 10, 1), date(2026, 10, 8)):
        assert not cn.is_working_day(day), day
    assert cn.is_working_day(date(2026, 10, 8))  # Thursday after the break
    assert cn.is_working_day(date(2026, 9, 20))  # Sunday, 调休 for 10/6
    assert cn.is_working_day(date(2026, 10, 10))  # Saturday, 调休 for 10/7
    assert not cn.is_working_day(date(2026, 10, 11))  # ordinary Sunday


def test_spring_festival_2026_and_make_up_saturdays(cn: BusinessCalendar) -> None:
    assert date(2026, 2, 14).weekday() == 5 and cn.is_working_day(date(2026, 2, 14))
    assert date(2026, 2, 28).weekday() == 5 and cn.is_working_day(date(2026, 2, 28))
    for day in days_of(date(2026, 2, 15), date(2026, 2, 24)):
        assert not cn.is_working_day(day), day
    assert cn.is_working_day(date(2026, 2, 24))
    assert not cn.is_working_day(date(2026, 3, 7))  # ordinary Saturday
    assert cn.is_working_day(date(2026, 3, 9))  # ordinary Monday


def test_2026_has_248_working_days(cn: BusinessCalendar) -> None:
    # 261 weekdays (2026 starts on Thursday: 52 full weeks + 1 Thursday) - 19 weekday days off
    # (元旦 2, 春节 6, 清明 1, 劳动节 3, 端午 1, 中秋 1, 国庆 5) + 6 make-up weekend days.
    assert cn.working_days_between(date(2026, 1, 1), date(2027, 1, 1)) == 248


def test_agrees_with_the_library_on_every_day_of_2026(cn: BusinessCalendar) -> None:
    library = holidays.country_holidays("CN", years=2026)
    for day in days_of(date(2026, 1, 1), date(2027, 1, 1)):
        assert cn.is_working_day(day) == library.is_working_day(day), day


def test_overrides_beat_the_library_data() -> None:
    cal = BusinessCalendar(
        "CN",
        overrides={date(2026, 10, 1): True, date(2026, 3, 10): False, date(2026, 3, 7): True, date(2026, 2, 14): False},
    )
    assert cal.is_working_day(date(2026, 10, 1))  # statutory holiday forced to working
    assert not cal.is_working_day(date(2026, 3, 10))  # Tuesday forced off
    assert cal.is_working_day(date(2026, 3, 7))  # Saturday forced to working
    assert not cal.is_working_day(date(2026, 2, 14))  # make-up Saturday forced off
    assert cal.is_working_day(date(2026, 10, 2)) is False  # neighbours untouched
    # The arithmetic uses the overrides too: Friday + 1 lands on the forced Saturday.
    assert cal.add_business_days(sh(2026, 3, 6, 10), 1, SH) == sh(2026, 3, 7, 10)
    # Monday 3/9 + 1 skips the forced-off Tuesday.
    assert cal.add_business_days(sh(2026, 3, 9, 10), 1, SH) == sh(2026, 3, 11, 10)


@pytest.mark.parametrize(
    "overrides",
    [{datetime(2026, 3, 7, 0, 0): True}, {date(2026, 3, 7): 1}, {"2026-03-07": True}],
)
def test_bad_overrides_are_rejected(overrides: dict[object, object]) -> None:
    with pytest.raises(ValueError, match="override"):
        BusinessCalendar("CN", overrides=overrides)  # type: ignore[arg-type]


def test_unknown_country_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="country"):
        BusinessCalendar("XX")


def test_is_working_day_rejects_a_datetime(cn: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="datetime.date"):
        cn.is_working_day(datetime(2026, 3, 9, 10, 0))


def test_2027_does_not_crash(cn: BusinessCalendar) -> None:
    assert not cn.is_working_day(date(2027, 10, 1))  # 国庆
    assert not cn.is_working_day(date(2027, 2, 8))  # 春节 (Monday)
    assert cn.is_working_day(date(2027, 3, 1))  # ordinary Monday
    # Thu 2026-12-31 + 1: Fri 2027-01-01 is 元旦, then the weekend, so Monday 2027-01-04.
    assert cn.add_business_days(sh(2026, 12, 31, 10), 1, SH) == sh(2027, 1, 4, 10)
    assert 240 <= cn.working_days_between(date(2027, 1, 1), date(2028, 1, 1)) <= 255
    assert cn.is_working_day(date(2040, 10, 1)) is False


# --------------------------------------------------------------------------------------------
# add_business_days
# --------------------------------------------------------------------------------------------


def test_add_business_days_across_spring_festival_and_make_up_saturday(cn: BusinessCalendar) -> None:
    start = sh(2026, 2, 13, 10)  # Friday
    assert cn.add_business_days(start, 1, SH) == sh(2026, 2, 14, 10)  # make-up Saturday
    # 2/15 Sun ... 2/23 Mon are all off, so the second day is Tuesday 2/24.
    assert cn.add_business_days(start, 2, SH) == sh(2026, 2, 24, 10)
    assert cn.add_business_days(start, 3, SH) == sh(2026, 2, 25, 10)
    assert cn.add_business_days(sh(2026, 2, 27, 10), 1, SH) == sh(2026, 2, 28, 10)  # the other make-up Saturday


def test_add_business_days_from_friday_evening(cn: BusinessCalendar) -> None:
    result = cn.add_business_days(sh(2026, 3, 6, 21), 1, SH)
    assert result == sh(2026, 3, 9, 21)
    assert result == utc(2026, 3, 9, 13)
    # Friday evening before a make-up Sunday: 9/19 Sat off, 9/20 Sun works.
    assert cn.add_business_days(sh(2026, 9, 18, 21), 1, SH) == sh(2026, 9, 20, 21)


def test_add_business_days_from_a_holiday_starts_at_the_next_working_day(cn: BusinessCalendar) -> None:
    start = sh(2026, 10, 1, 10)  # 国庆
    assert cn.add_business_days(start, 0, SH) == sh(2026, 10, 8, 10)
    assert cn.add_business_days(start, 1, SH) == sh(2026, 10, 9, 10)
    assert cn.add_business_days(start, 2, SH) == sh(2026, 10, 10, 10)  # make-up Saturday
    assert cn.add_business_days(start, 3, SH) == sh(2026, 10, 12, 10)


def test_add_business_days_from_a_weekend_rolls_to_monday_first(cn: BusinessCalendar) -> None:
    # Documented rule: Saturday evening counts as Monday evening, so +1 is Tuesday.
    assert cn.add_business_days(sh(2026, 3, 7, 20), 1, SH) == sh(2026, 3, 10, 20)
    assert cn.add_business_days(sh(2026, 3, 7, 20), 0, SH) == sh(2026, 3, 9, 20)
    # From a working day, 0 days is the start itself.
    assert cn.add_business_days(sh(2026, 3, 9, 20), 0, SH) == sh(2026, 3, 9, 20)


def test_add_business_days_matches_working_days_between(cn: BusinessCalendar) -> None:
    for start_day in days_of(date(2026, 1, 1), date(2027, 1, 1)):
        for n in (0, 1, 3, 6):
            result = cn.add_business_days(sh(start_day.year, start_day.month, start_day.day, 10), n, SH)
            local = result.astimezone(SH)
            assert local.time() == time(10)
            assert cn.is_working_day(local.date())
            assert cn.working_days_between(start_day, local.date()) == n, (start_day, n)


def test_add_business_days_returns_utc(cn: BusinessCalendar) -> None:
    result = cn.add_business_days(sh(2026, 3, 9, 10), 1, SH)
    assert result.tzinfo == UTC
    assert (result.year, result.month, result.day, result.hour) == (2026, 3, 10, 2)


@pytest.mark.parametrize("days", [-1, 1.5, True])
def test_add_business_days_rejects_bad_counts(cn: BusinessCalendar, days: object) -> None:
    with pytest.raises(ValueError, match="days"):
        cn.add_business_days(sh(2026, 3, 9, 10), days, SH)  # type: ignore[arg-type]


def test_add_business_days_rejects_naive_start_and_non_zoneinfo_tz(cn: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cn.add_business_days(datetime(2026, 3, 9, 10), 1, SH)
    with pytest.raises(ValueError, match="ZoneInfo"):
        cn.add_business_days(sh(2026, 3, 9, 10), 1, UTC)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# add_business_hours
# --------------------------------------------------------------------------------------------


def test_add_business_hours_across_a_night(cn: BusinessCalendar) -> None:
    # Tue 16:00 + 4h = 2h on Tuesday + 2h from Wednesday 09:00.
    assert cn.add_business_hours(sh(2026, 3, 10, 16), 4, SH) == sh(2026, 3, 11, 11)


def test_add_business_hours_across_a_weekend(cn: BusinessCalendar) -> None:
    result = cn.add_business_hours(sh(2026, 3, 6, 17), 3, SH)  # Friday 17:00
    assert result == sh(2026, 3, 9, 11)
    assert result == utc(2026, 3, 9, 3)


def test_add_business_hours_across_spring_festival_to_make_up_saturday(cn: BusinessCalendar) -> None:
    assert cn.add_business_hours(sh(2026, 2, 13, 17), 2, SH) == sh(2026, 2, 14, 10)
    # 10 hours from Saturday 2/14 09:00: 9h that day, then 1h on Tuesday 2/24.
    assert cn.add_business_hours(sh(2026, 2, 14, 9), 10, SH) == sh(2026, 2, 24, 10)


def test_add_business_hours_window_edges(cn: BusinessCalendar) -> None:
    monday = (2026, 3, 9)
    assert cn.add_business_hours(sh(*monday, 7, 30), 1, SH) == sh(*monday, 10)  # before opening
    assert cn.add_business_hours(sh(*monday, 9), 9, SH) == sh(*monday, 18)  # lands on closing
    assert cn.add_business_hours(sh(*monday, 9), 1.5, SH) == sh(*monday, 10, 30)
    assert cn.add_business_hours(sh(*monday, 20), 0, SH) == sh(2026, 3, 10, 9)  # next opening
    assert cn.add_business_hours(sh(*monday, 12), 0, SH) == sh(*monday, 12)
    custom = cn.add_business_hours(sh(*monday, 17), 2, SH, day_start=time(8, 30), day_end=time(17, 30))
    assert custom == sh(2026, 3, 10, 10)


def test_add_business_hours_counts_real_time_across_a_dst_switch() -> None:
    # Berlin springs forward on Sunday 2026-03-29 at 02:00; make that Sunday a working day with a
    # 00:00-06:00 window, which then holds only 5 real hours (23:00 UTC -> 04:00 UTC).
    cal = BusinessCalendar("CN", overrides={date(2026, 3, 29): True})
    start = datetime(2026, 3, 28, 12, tzinfo=BERLIN)  # Saturday, off
    result = cal.add_business_hours(start, 5, BERLIN, day_start=time(0), day_end=time(6))
    assert result == utc(2026, 3, 29, 4)
    assert result.astimezone(BERLIN).hour == 6


@pytest.mark.parametrize(
    ("hours", "day_start", "day_end", "match"),
    [
        (-1, time(9), time(18), "hours"),
        (float("nan"), time(9), time(18), "hours"),
        (float("inf"), time(9), time(18), "hours"),
        (1, time(18), time(9), "before"),
        (1, time(9), time(9), "before"),
        (1, time(9, tzinfo=UTC), time(18), "naive"),
    ],
)
def test_add_business_hours_rejects_bad_arguments(
    cn: BusinessCalendar, hours: float, day_start: time, day_end: time, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        cn.add_business_hours(sh(2026, 3, 9, 10), hours, SH, day_start=day_start, day_end=day_end)


def test_all_days_off_raises_instead_of_looping() -> None:
    off = {day: False for day in days_of(date(2026, 3, 9), date(2027, 6, 1))}
    cal = BusinessCalendar("CN", overrides=off)
    with pytest.raises(ValueError, match="no working day"):
        cal.add_business_days(sh(2026, 3, 9, 10), 1, SH)
    with pytest.raises(ValueError, match="no working day"):
        cal.add_business_hours(sh(2026, 3, 9, 10), 1, SH)


# --------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------


def test_counting_uses_local_dates_of_the_given_tz(cn: BusinessCalendar) -> None:
    start = utc(2026, 3, 5, 23)  # Thursday in UTC, Friday 07:00 in Shanghai
    assert cn.add_business_days(start, 1, SH) == utc(2026, 3, 8, 23)  # Monday 07:00 Shanghai
    assert cn.add_business_days(start, 1, ZoneInfo("UTC")) == utc(2026, 3, 6, 23)  # Friday in UTC
    # The same instant written in either zone gives the same answer.
    assert cn.add_business_days(start.astimezone(SH), 1, SH) == cn.add_business_days(start, 1, SH)


def test_business_hours_window_is_in_the_given_tz(cn: BusinessCalendar) -> None:
    start = utc(2026, 3, 9, 1)  # Monday 09:00 Shanghai
    assert cn.add_business_hours(start, 1, SH) == utc(2026, 3, 9, 2)
    assert cn.add_business_hours(start, 1, ZoneInfo("UTC")) == utc(2026, 3, 9, 10)
    assert cn.add_business_hours(start, 1, SH).tzinfo == UTC


def test_add_business_days_moves_a_nonexistent_wall_time_forward() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29; fold=0 maps it to 03:30 CEST (01:30 UTC).
    cal = BusinessCalendar("CN", overrides={date(2026, 3, 29): True})
    start = datetime(2026, 3, 27, 2, 30, tzinfo=BERLIN)  # Friday
    assert cal.add_business_days(start, 1, BERLIN) == utc(2026, 3, 29, 1, 30)


def test_working_days_between_is_half_open_and_signed(cn: BusinessCalendar) -> None:
    assert cn.working_days_between(date(2026, 3, 9), date(2026, 3, 9)) == 0
    assert cn.working_days_between(date(2026, 3, 9), date(2026, 3, 16)) == 5  # Mon..Fri
    assert cn.working_days_between(date(2026, 3, 16), date(2026, 3, 9)) == -5
    # 9/28..10/11: 9/28-9/30 (3) + 10/8, 10/9, 10/10 (3) = 6.
    assert cn.working_days_between(date(2026, 9, 28), date(2026, 10, 11)) == 6


# --------------------------------------------------------------------------------------------
# Lunar conversions
# --------------------------------------------------------------------------------------------


def test_lunar_new_year_2026() -> None:
    assert lunar_to_solar(2026, 1, 1) == date(2026, 2, 17)
    assert solar_to_lunar(date(2026, 2, 17)) == (2026, 1, 1, False)
    # 除夕 2026 is 腊月廿九: lunar 2025's twelfth month has 29 days.
    assert solar_to_lunar(date(2026, 2, 16)) == LunarDate(2025, 12, 29, False)


def test_mid_autumn_2026() -> None:
    assert lunar_to_solar(2026, 8, 15) == date(2026, 9, 25)
    assert next_birthday(date(1990, 8, 15), "lunar", date(2026, 1, 1)) == date(2026, 9, 25)
    assert birthday_keys_on(date(2026, 9, 25))[1] == frozenset({815})


@pytest.mark.parametrize("year", range(2024, 2031))
def test_festivals_agree_with_the_holidays_library(year: int) -> None:
    # holidays computes the Chinese festivals with its own lunisolar tables: an independent oracle.
    names = holidays.country_holidays("CN", years=year, language="zh_CN")
    expected = {"春节": (1, 1), "端午节": (5, 5), "中秋节": (8, 15)}
    for name, (month, day) in expected.items():
        found = sorted(d for d, n in names.items() if n == name)
        if found:  # 中秋 can merge into 国庆 and then carries another name (2028)
            assert lunar_to_solar(year, month, day) == found[0], name


def test_leap_month_conversion() -> None:
    assert lunar_to_solar(2025, 6, 1, leap=True) == date(2025, 7, 25)
    assert solar_to_lunar(date(2025, 7, 25)) == (2025, 6, 1, True)
    assert lunar_to_solar(2025, 6, 1) == date(2025, 6, 25)


def test_conversions_agree_with_lunar_python_2024_to_2027() -> None:
    # Sample every 5th day against the (slow) Lunar objects; round-trip every day.
    all_days = days_of(date(2024, 1, 1), date(2028, 1, 1))
    for day in all_days[::5]:
        assert solar_to_lunar(day) == oracle_lunar(day), day
    for day in all_days:
        y, m, d, leap = solar_to_lunar(day)
        assert lunar_to_solar(y, m, d, leap) == day


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((2026, 2, 30, False), "only 29 days"),
        ((2026, 6, 1, True), "no leap month"),
        ((2026, 13, 1, False), "month must be 1..12"),
        ((2026, 1, 0, False), "day must be 1..30"),
        ((2026, 1, 31, False), "day must be 1..30"),
    ],
)
def test_impossible_lunar_dates_raise(args: tuple[int, int, int, bool], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lunar_to_solar(*args)


# --------------------------------------------------------------------------------------------
# Birthdays
# --------------------------------------------------------------------------------------------


def test_birthday_key() -> None:
    assert birthday_key(date(1990, 12, 31)) == 1231
    assert birthday_key(date(1992, 2, 29), "solar") == 229
    assert birthday_key(date(1990, 8, 15), "lunar") == 815
    assert birthday_key(LunarDate(2023, 2, 30), "lunar") == 230  # 二月三十 does not fit in a date
    assert birthday_key(LunarDate(2025, 6, 10, leap=True), "lunar") == 610


@pytest.mark.parametrize(
    ("birthday", "calendar", "match"),
    [
        (date(1990, 1, 1), "gregorian", "calendar"),
        (LunarDate(1990, 1, 1), "solar", "calendar='lunar'"),
        (date(1990, 8, 30), "lunar", "impossible"),  # lunar 1990 八月 has 29 days
        (LunarDate(2026, 6, 1, leap=True), "lunar", "no leap month"),
        (LunarDate(2025, 6, 30, leap=True), "lunar", "impossible"),  # 闰六月 2025 has 29 days
        (datetime(1990, 1, 1, 0, 0), "solar", "datetime.date"),
    ],
)
def test_bad_birthdays_raise(birthday: date | LunarDate, calendar: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        birthday_key(birthday, calendar)


def test_oracle_confirms_the_invalid_birthday_cases() -> None:
    assert LunarYear.fromYear(1990).getMonth(8).getDayCount() == 29
    assert LunarYear.fromYear(2025).getMonth(-6).getDayCount() == 29
    assert LunarYear.fromYear(2026).getLeapMonth() == 0


def test_bad_feb29_rule_raises() -> None:
    with pytest.raises(ValueError, match="feb29_rule"):
        birthday_keys_on(date(2025, 2, 28), feb29_rule="mar2")
    with pytest.raises(ValueError, match="feb29_rule"):
        next_birthday(date(1992, 2, 29), "solar", date(2025, 1, 1), feb29_rule="Feb28")
    with pytest.raises(ValueError, match="datetime.date"):
        birthday_keys_on(datetime(2025, 2, 28, 0, 0))


def test_lunar_day_30_falls_back_to_29() -> None:
    # Lunar 2023 二月 has 30 days, lunar 2026 二月 only 29 (lunar_python refuses 2026-2-30).
    assert Lunar.fromYmd(2023, 2, 30) is not None
    with pytest.raises(Exception, match="only 29 days"):
        Lunar.fromYmd(2026, 2, 30)
    fallback = oracle_solar(2026, 2, 29)
    assert fallback == date(2026, 4, 16)  # 二月初一 3/19 + 28 days
    assert next_birthday(LunarDate(2023, 2, 30), "lunar", date(2026, 1, 1)) == fallback
    assert birthday_keys_on(fallback)[1] == frozenset({229, 230})
    assert birthday_keys_on(fallback - timedelta(days=1))[1] == frozenset({228})
    # In a year whose 二月 has 30 days, 三十 is its own day and 廿九 carries only 229.
    assert LunarYear.fromYear(2023).getMonth(2).getDayCount() == 30
    assert birthday_keys_on(oracle_solar(2023, 2, 29))[1] == frozenset({229})
    assert birthday_keys_on(oracle_solar(2023, 2, 30))[1] == frozenset({230})
    # The same with a plain date: 农历 2023-08-30; 2026 八月 has 29 days, 2029 八月 has 30.
    assert next_birthday(date(2023, 8, 30), "lunar", date(2026, 1, 1)) == oracle_solar(2026, 8, 29)
    assert next_birthday(date(2023, 8, 30), "lunar", date(2029, 1, 1)) == oracle_solar(2029, 8, 30)


def test_leap_month_dates_are_not_birthdays() -> None:
    leap_day = oracle_solar(2025, 6, 10, leap=True)
    assert birthday_keys_on(leap_day)[1] == frozenset()
    regular_day = oracle_solar(2025, 6, 10)
    assert birthday_keys_on(regular_day)[1] == frozenset({610})
    # Born on 闰六月初十 2025: celebrated on the regular 六月初十 of the following years.
    born = LunarDate(2025, 6, 10, leap=True)
    assert next_birthday(born, "lunar", leap_day) == oracle_solar(2026, 6, 10)
    assert oracle_solar(2026, 6, 10) == date(2026, 7, 23)


def test_feb29_rules_in_2025() -> None:
    born = date(1992, 2, 29)
    assert next_birthday(born, "solar", date(2025, 1, 1)) == date(2025, 2, 28)
    assert next_birthday(born, "solar", date(2025, 1, 1), feb29_rule="mar1") == date(2025, 3, 1)
    assert birthday_keys_on(date(2025, 2, 28))[0] == frozenset({228, 229})
    assert birthday_keys_on(date(2025, 3, 1))[0] == frozenset({301})
    assert birthday_keys_on(date(2025, 2, 28), feb29_rule="mar1")[0] == frozenset({228})
    assert birthday_keys_on(date(2025, 3, 1), feb29_rule="mar1")[0] == frozenset({301, 229})
    # After the fallback day has passed, the next one is in 2026.
    assert next_birthday(born, "solar", date(2025, 3, 1)) == date(2026, 2, 28)


@pytest.mark.parametrize("rule", FEB29_RULES)
def test_feb29_rules_in_leap_year_2028(rule: str) -> None:
    born = date(1992, 2, 29)
    assert next_birthday(born, "solar", date(2028, 1, 1), feb29_rule=rule) == date(2028, 2, 29)
    assert birthday_keys_on(date(2028, 2, 28), feb29_rule=rule)[0] == frozenset({228})
    assert birthday_keys_on(date(2028, 2, 29), feb29_rule=rule)[0] == frozenset({229})
    assert birthday_keys_on(date(2028, 3, 1), feb29_rule=rule)[0] == frozenset({301})


def test_next_birthday_is_inclusive_of_after() -> None:
    assert next_birthday(date(1990, 3, 9), "solar", date(2026, 3, 9)) == date(2026, 3, 9)
    assert next_birthday(date(1990, 3, 9), "solar", date(2026, 3, 10)) == date(2027, 3, 9)
    assert next_birthday(date(1990, 1, 1), "lunar", date(2026, 2, 17)) == date(2026, 2, 17)
    assert next_birthday(date(1990, 1, 1), "lunar", date(2026, 2, 18)) == oracle_solar(2027, 1, 1)


def test_a_lunar_birthday_can_fall_twice_or_never_in_a_solar_year() -> None:
    # 腊月初一 of lunar 2023 and of lunar 2024 are both in solar 2024; none falls in solar 2025.
    assert oracle_solar(2023, 12, 1) == date(2024, 1, 11)
    assert oracle_solar(2024, 12, 1) == date(2024, 12, 31)
    assert oracle_solar(2025, 12, 1) == date(2026, 1, 19)
    hits = [d for d in days_of(date(2024, 1, 1), date(2026, 1, 1)) if 1201 in birthday_keys_on(d)[1]]
    assert hits == [date(2024, 1, 11), date(2024, 12, 31)]


# --------------------------------------------------------------------------------------------
# The property: birthday_keys_on and next_birthday agree, once per (solar | lunar) year
# --------------------------------------------------------------------------------------------

SWEEP = days_of(date(2024, 1, 1), date(2028, 1, 1))

SOLAR_BIRTHDAYS = [
    date(1990, 1, 1),
    date(1990, 2, 28),
    date(1992, 2, 29),
    date(1990, 3, 1),
    date(1990, 7, 15),
    date(1990, 12, 31),
]


def _lunar_birthdays() -> list[LunarDate]:
    """Days 1, 15, 29, 30 of every lunar month, leap-month births, and leap-prone months."""
    births = []
    for month in range(1, 13):
        for day in (1, 15, 29, 30):
            # A birth year in which this regular month is long enough, found with lunar_python itself.
            year = next(y for y in range(1990, 2031) if LunarYear.fromYear(y).getMonth(month).getDayCount() >= day)
            births.append(LunarDate(year, month, day))
    # Months that are leap months in some year: 2 (2023), 4 (2020), 5 (2028), 6 (2025).
    births += [LunarDate(2023, 2, 29, True), LunarDate(2020, 4, 29, True), LunarDate(2025, 6, 10, True)]
    births += [LunarDate(2028, 5, 1, True)]
    return births


LUNAR_BIRTHDAYS = _lunar_birthdays()


@pytest.mark.parametrize("rule", FEB29_RULES)
def test_keys_and_next_birthday_agree_for_solar_birthdays(rule: str) -> None:
    keys_on = {d: birthday_keys_on(d, feb29_rule=rule)[0] for d in SWEEP}
    for born in SOLAR_BIRTHDAYS:
        key = birthday_key(born, "solar")
        for day in SWEEP:
            assert (key in keys_on[day]) == (next_birthday(born, "solar", day, feb29_rule=rule) == day), (born, day)
        for year in (2024, 2025, 2026, 2027):
            hits = [d for d in SWEEP if d.year == year and key in keys_on[d]]
            assert len(hits) == 1, (born, year, hits)


def test_keys_and_next_birthday_agree_for_lunar_birthdays() -> None:
    keys_on = {d: birthday_keys_on(d)[1] for d in SWEEP}
    lunar_years = {y: (lunar_to_solar(y, 1, 1), lunar_to_solar(y + 1, 1, 1)) for y in (2024, 2025, 2026)}
    assert len(LUNAR_BIRTHDAYS) >= 50
    for born in LUNAR_BIRTHDAYS:
        key = birthday_key(born, "lunar")
        for day in SWEEP:
            assert (key in keys_on[day]) == (next_birthday(born, "lunar", day) == day), (born, day)
        for year, (first, end) in lunar_years.items():
            hits = [d for d in SWEEP if first <= d < end and key in keys_on[d]]
            assert len(hits) == 1, (born, year, hits)
            # ...and it is the regular month's day (or its 廿九 fallback), per lunar_python.
            regular_days = LunarYear.fromYear(year).getMonth(born.month).getDayCount()
            assert hits[0] == oracle_solar(year, born.month, min(born.day, regular_days)), (born, year)


def test_every_sweep_day_has_one_solar_key_and_at_most_two_lunar_keys() -> None:
    for day in SWEEP:
        solar, lunar = birthday_keys_on(day)
        assert day.month * 100 + day.day in solar
        _, month, lunar_day, leap = solar_to_lunar(day)
        assert (len(lunar) == 0) == leap
        # Two keys only on 廿九 of a short month: the day itself and the absent 三十.
        assert len(lunar) <= (2 if lunar_day == 29 else 1)
        if len(lunar) == 2:
            assert lunar == {month * 100 + 29, month * 100 + 30}
