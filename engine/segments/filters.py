"""Segment filters: a JSON object of conditions, all of which a member meets, turned into SQL.

Example: ``{"grade": ["A"], "birthday_month": "current"}`` or
``{"churn_risk_above": 2, "last_purchase_before": {"days_ago": 60}, "tags_any": ["vip"]}``.
"""

from __future__ import annotations

import calendar as month_calendar
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from engine.calendar import birthday_keys_on
from engine.errors import FieldError, SubmissionInvalid
from engine.store.models import Customer

_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}, "minItems": 1, "maxItems": 100}


def _range(low: int, high: int) -> dict[str, Any]:
    bound = {"type": "integer", "minimum": low, "maximum": high}
    return {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {"min": bound, "max": bound}}


_WHEN = {"anyOf": [
    {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    {"type": "object", "additionalProperties": False, "required": ["days_ago"],
     "properties": {"days_ago": {"type": "integer", "minimum": 0, "maximum": 36500}}},
]}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "grade": {"type": "array", "items": {"enum": ["A", "B", "C"]}, "minItems": 1},
        "status": _STRINGS,
        "region": _STRINGS,
        "owner": _STRINGS,
        "tags_any": _STRINGS,
        "tags_all": _STRINGS,
        "rfm_cell": {"type": "array", "items": {"type": "string", "pattern": "^[1-5]{3}$"}, "minItems": 1, "maxItems": 125},
        "recency_score": _range(1, 5),
        "frequency_score": _range(1, 5),
        "monetary_score": _range(1, 5),
        "churn_risk_above": {"type": "number", "minimum": 0, "maximum": 1000},
        "nps": _range(0, 10),
        "satisfaction": _range(1, 5),
        "last_purchase_before": _WHEN,
        "last_purchase_after": _WHEN,
        "birthday_month": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 12}, {"const": "current"}]},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def check_filter(data: Any, prefix: str = "$.filter") -> dict[str, Any]:
    """The filter, or SubmissionInvalid naming each bad condition."""
    if not isinstance(data, Mapping):
        raise SubmissionInvalid([FieldError(prefix, "filter", "the filter must be an object of conditions", "type")])
    errors = []
    for e in sorted(_VALIDATOR.iter_errors(dict(data)), key=lambda e: list(map(str, e.absolute_path))):
        field = str(e.absolute_path[0]) if e.absolute_path else "filter"
        message = e.message[:300]
        if e.validator == "additionalProperties":
            message = f"unknown condition; known: {', '.join(sorted(SCHEMA['properties']))}"
            field = next(iter(set(data) - set(SCHEMA["properties"])), field)
        errors.append(FieldError(prefix + e.json_path[1:], field, message, str(e.validator)))
    if errors:
        raise SubmissionInvalid(errors)
    return dict(data)


def _when(value: Any, now: datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, Mapping):
        return now - timedelta(days=int(value["days_ago"]))
    return datetime.combine(date.fromisoformat(value), time(0), zone)


def _between(column: Any, bounds: Mapping[str, int]) -> ColumnElement[bool]:
    conds = []
    if "min" in bounds:
        conds.append(column >= bounds["min"])
    if "max" in bounds:
        conds.append(column <= bounds["max"])
    return and_(*conds)


def _birthday_month(month: int, year: int) -> ColumnElement[bool]:
    """Birthdays celebrated in that solar month, lunar (农历) ones included."""
    solar: set[int] = set()
    lunar: set[int] = set()
    for day in range(1, month_calendar.monthrange(year, month)[1] + 1):
        s, lu = birthday_keys_on(date(year, month, day))
        solar |= s
        lunar |= lu
    return or_(
        and_(Customer.birthday_calendar == "solar", Customer.birthday_key.in_(sorted(solar))),
        and_(Customer.birthday_calendar == "lunar", Customer.birthday_key.in_(sorted(lunar))),
    )


def conditions(flt: Mapping[str, Any], now: datetime, tz: str = "Asia/Shanghai") -> list[ColumnElement[bool]]:
    """The SQL conditions of a filter (tags are checked afterwards, see ``member_ids``)."""
    zone = ZoneInfo(tz)
    conds: list[ColumnElement[bool]] = [Customer.status != "deleted"]
    for key, column in (("grade", Customer.grade), ("status", Customer.status), ("region", Customer.region),
                        ("owner", Customer.owner)):
        if key in flt:
            conds.append(column.in_(list(flt[key])))
    for key, column in (("recency_score", Customer.rfm_r), ("frequency_score", Customer.rfm_f),
                        ("monetary_score", Customer.rfm_m), ("nps", Customer.last_nps),
                        ("satisfaction", Customer.last_satisfaction)):
        if key in flt:
            conds.append(_between(column, flt[key]))
    if "rfm_cell" in flt:
        conds.append(or_(*(
            and_(Customer.rfm_r == int(c[0]), Customer.rfm_f == int(c[1]), Customer.rfm_m == int(c[2]))
            for c in flt["rfm_cell"]
        )) if flt["rfm_cell"] else false())
    if "churn_risk_above" in flt:
        conds.append(Customer.churn_score >= float(flt["churn_risk_above"]))
    if "last_purchase_before" in flt:
        conds.append(Customer.last_purchase_at < _when(flt["last_purchase_before"], now, zone))
    if "last_purchase_after" in flt:
        conds.append(Customer.last_purchase_at >= _when(flt["last_purchase_after"], now, zone))
    if "birthday_month" in flt:
        local = now.astimezone(zone)
        month = local.month if flt["birthday_month"] == "current" else int(flt["birthday_month"])
        conds.append(_birthday_month(month, local.year))
    return conds


def member_ids(session: Session, flt: Mapping[str, Any], now: datetime, tz: str = "Asia/Shanghai") -> set[int]:
    """Ids of the customers the filter selects: one query, tags checked on the rows it returns."""
    conds = conditions(flt, now, tz)
    if "tags_any" not in flt and "tags_all" not in flt:
        return set(session.scalars(select(Customer.id).where(*conds)))
    any_of, all_of = set(flt.get("tags_any") or ()), set(flt.get("tags_all") or ())
    out = set()
    for cid, tags in session.execute(select(Customer.id, Customer.tags).where(*conds)):
        have = set(tags or ())
        if (not any_of or have & any_of) and all_of <= have:
            out.add(cid)
    return out
