"""engine/profile.py: every enumerated field outside its choices is named, in the fields' order."""

from __future__ import annotations

from engine.profile import choice_problems


def test_each_field_outside_its_choices_is_named_once() -> None:
    values = {"status": "gone", "grade": "Z", "preferred_channel": "sms", "birthday_calendar": None, "name": "x"}
    assert choice_problems(values) == [
        ("grade", "'Z' is not one of A, B, C"),
        ("status", "'gone' is not one of active, at_risk, lost"),
    ]
    assert choice_problems({"grade": "A", "tier": "Z"}) == []
    assert choice_problems({}) == []
