"""The customer profile's enumerated fields, checked the same way by flows and by the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GRADES = ("A", "B", "C")
CHANNELS = ("email", "sms", "wecom", "dingtalk", "feishu", "phone")
STATUSES = ("active", "at_risk", "lost")
CALENDARS = ("solar", "lunar")
CHOICES: Mapping[str, tuple[str, ...]] = {
    "grade": GRADES,
    "preferred_channel": CHANNELS,
    "status": STATUSES,
    "birthday_calendar": CALENDARS,
}


_CHOICE_ITEMS = tuple(CHOICES.items())


def choice_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every enumerated field given a value outside its choices."""
    # A flow's customer update is checked twice (by its step, then by the store): one lookup per field.
    problems: list[tuple[str, str]] = []
    for key, allowed in _CHOICE_ITEMS:
        value = values.get(key)
        if value is not None and value not in allowed:
            problems.append((key, f"{value!r} is not one of {', '.join(allowed)}"))
    return problems
