"""Import rows to customers, without the database: clean each row, then group the rows that are
the same person (a shared phone, e-mail or configured match field) and merge each group.

The store (``engine.store.imports``) then matches each group against the customers already
stored and writes them in batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import cleaning
from engine.cleaning import CleaningProblem
from engine.import_files import Mapping_
from engine.profile import CHOICES

#: Fields matched on always; ``match_on`` adds more (a member number...).
KEY_FIELDS = ("phone", "email")
_TAG_SPLIT = re.compile(r"[,，;；、|/]")
_CALENDAR_WORDS = {"农历": "lunar", "阴历": "lunar", "lunar": "lunar", "公历": "solar", "阳历": "solar", "新历": "solar",
                   "solar": "solar"}


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem with one cell (or with the row, when ``column`` is empty)."""

    row: int
    column: str
    field: str
    value: str
    code: str
    zh: str
    en: str
    rejects: bool = False  # the whole row is refused; otherwise only the field is left out

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "field": self.field, "value": self.value, "code": self.code,
                "message": {"zh": self.zh, "en": self.en}, "rejects_row": self.rejects}


@dataclass(slots=True)
class Record:
    row: int
    values: dict[str, Any]
    attributes: dict[str, Any]
    issues: list[Issue]
    updated_at: datetime | None = None

    @property
    def rejected(self) -> bool:
        return any(i.rejects for i in self.issues)

    def keys(self, match_on: Sequence[str]) -> list[tuple[str, Any]]:
        out = [(f, self.values[f]) for f in KEY_FIELDS if self.values.get(f)]
        for name in match_on:
            value = self.values.get(name, self.attributes.get(name))
            if value not in (None, ""):
                out.append((name, value))
        return out


@dataclass(slots=True)
class Group:
    """Rows that are one person, oldest first; ``values`` is what they say together."""

    records: list[Record]
    values: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    keys: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> list[int]:
        return sorted(r.row for r in self.records)


def clean_record(row: int, cells: Sequence[Any], mapping: Mapping_, owners: frozenset[str] | None = None) -> Record:
    """One row's values, standardised; problems per cell, in Chinese and English."""
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    issues: list[Issue] = []
    raw: dict[str, tuple[str, Any]] = {}
    for index, header, target in mapping.columns:
        cell = cells[index] if index < len(cells) else ""
        if target in raw or cleaning.text(cell) == "":
            continue
        raw[target] = (header, cell)
    calendar = None
    if "birthday_calendar" in raw:
        header, cell = raw.pop("birthday_calendar")
        calendar = _CALENDAR_WORDS.get(cleaning.text(cell).lower())
        if calendar is None:
            issues.append(_issue(row, header, "birthday_calendar", cell,
                                 CleaningProblem("bad_calendar", f"历法“{cell}”应为 农历 或 公历", f"calendar {cell!r} should be lunar or solar")))
    updated_at = None
    for target, (header, cell) in raw.items():
        try:
            if target == "birthday":
                birthday = cleaning.clean_birthday(cell, calendar)
                values["birthday"], values["birthday_calendar"] = birthday.day, birthday.calendar
                if not birthday.year_known:
                    attributes["birthday_year_known"] = False
                if birthday.leap_month:
                    issues.append(Issue(row, header, target, cleaning.text(cell), "leap_month",
                                        "闰月生日按当年的正常月份记录", "a leap-month birthday is kept as the regular month"))
            elif target == "updated_at":
                updated_at = cleaning.clean_instant(cell)
            else:
                value = _clean_value(target, cleaning.text(cell), owners)
                if target in _PROFILE:
                    values[target] = value
                else:
                    attributes[target] = value
        except CleaningProblem as problem:
            issues.append(_issue(row, header, target, cell, problem))
    record = Record(row, values, attributes, issues, updated_at)
    if not (values.get("phone") or values.get("email")):
        issues.append(Issue(row, "", "phone", "", "no_contact", "没有有效的手机或邮箱，无法识别客户",
                            "no valid phone or e-mail to identify the customer", rejects=True))
    return record


_PROFILE = frozenset({"name", "phone", "email", "region", "grade", "expected_value", "owner", "tags",
                      "preferred_channel", "language"})


def _clean_value(target: str, value: str, owners: frozenset[str] | None) -> Any:
    if target == "phone":
        return cleaning.clean_phone(value)
    if target == "email":
        return cleaning.clean_email(value)
    if target == "region":
        return cleaning.clean_region(value)
    if target == "name":
        if len(value) > 100:
            raise CleaningProblem("too_long", "姓名超过 100 个字", "the name is longer than 100 characters")
        return value
    if target == "tags":
        return sorted({t.strip() for t in _TAG_SPLIT.split(value) if t.strip()})
    if target == "expected_value":
        return cleaning.clean_amount(value)
    if target in ("grade", "preferred_channel", "language"):
        value = value.upper() if target == "grade" else value.lower()
        allowed = CHOICES.get(target, ("zh", "en"))
        if value not in allowed:
            raise CleaningProblem("bad_choice", f"“{value}”不是可选值（{'、'.join(allowed)}）",
                                  f"{value!r} is not one of {', '.join(allowed)}")
        return value
    if target == "owner":
        if owners is not None and value not in owners:
            raise CleaningProblem("unknown_user", f"没有用户名为“{value}”的员工", f"no user named {value!r}")
        return value
    return value  # a custom attribute, as written (trimmed, half-width)


def _issue(row: int, header: str, target: str, cell: Any, problem: CleaningProblem) -> Issue:
    return Issue(row, header, target, cleaning.text(cell), problem.code, problem.zh, problem.en)


def group_records(records: Iterable[Record], match_on: Sequence[str] = ()) -> list[Group]:
    """Rows sharing any key value, transitively, form one group (union-find); in first-row order."""
    kept = [r for r in records if not r.rejected]
    parent = list(range(len(kept)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner_of: dict[tuple[str, Any], int] = {}
    for i, record in enumerate(kept):
        for key in record.keys(match_on):
            j = owner_of.setdefault(key, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, Group] = {}
    for i, record in enumerate(kept):
        groups.setdefault(find(i), Group([])).records.append(record)
    out = list(groups.values())
    for group in out:
        merge_group(group, match_on)
    return out


def merge_group(group: Group, match_on: Sequence[str] = ()) -> None:
    """The group's values: a later (or newer ``updated_at``) non-empty value wins, tags add up."""
    ordered = sorted(group.records, key=lambda r: (r.updated_at is not None, r.updated_at or datetime.min, r.row))
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for record in ordered:
        for key, value in record.values.items():
            if key == "tags":
                values["tags"] = sorted(set(values.get("tags", [])) | set(value))
            elif value not in (None, ""):
                values[key] = value
        attributes.update(record.attributes)
    if "birthday" in values and attributes.get("birthday_year_known") is False:
        # a row with the year beats one without it
        known = [r for r in ordered if "birthday" in r.values and r.attributes.get("birthday_year_known", True)]
        if known:
            values["birthday"], values["birthday_calendar"] = known[-1].values["birthday"], known[-1].values["birthday_calendar"]
            attributes.pop("birthday_year_known")
    group.values, group.attributes = values, attributes
    seen: set[tuple[str, Any]] = set()
    group.keys = [k for r in group.records for k in r.keys(match_on) if not (k in seen or seen.add(k))]


def newest(group: Group) -> datetime | None:
    stamps = [r.updated_at for r in group.records if r.updated_at is not None]
    return max(stamps) if stamps else None
