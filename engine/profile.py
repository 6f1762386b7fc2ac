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


def choice_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every enumerated field given a value outside its choices."""
    return [
        (key, f"{values[key]!r} is not one of {', '.join(allowed)}")
        for key, allowed in CHOICES.items()
        if values.get(key) is not None and values[key] not in allowed
    ]
