"""The customer store's cleaning of profile values against the reference it was rewritten from.

``customers._clean`` must give the values and the errors (in their order) that the code before it
gave, for flow updates (a grade, a channel...) and for every field it normalises or checks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import Any

from engine.contact import e164, normalize_email
from engine.errors import FieldError
from engine.profile import CHOICES, choice_problems
from engine.store import customers


def reference_clean(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """customers._clean as it was written before it was split in parts: the reference."""
    out = dict(data)
    errors: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        errors.append(FieldError(f"$.{name}", name, message, "format"))

    if out.keys().isdisjoint(REFERENCE_NORMALISED):  # most flow updates: a grade, a channel...
        return reference_checked(out, errors, bad)
    for key in ("name", "region"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip()
    if "name" in out and not out["name"]:
        bad("name", "name must not be empty")
    if out.get("phone"):
        phone = e164(str(out["phone"]))
        if phone is None:
            bad("phone", f"{out['phone']!r} is not a valid phone number")
        out["phone"] = phone
    elif "phone" in out:
        out["phone"] = None
    if out.get("email"):
        email = normalize_email(str(out["email"]))
        if email is None:
            bad("email", f"{out['email']!r} is not a valid e-mail address")
        out["email"] = email
    elif "email" in out:
        out["email"] = None
    if out.get("birthday") and isinstance(out["birthday"], str):
        try:
            out["birthday"] = date.fromisoformat(out["birthday"])
        except ValueError:
            bad("birthday", f"{out['birthday']!r} is not a date (YYYY-MM-DD)")
    for key in ("last_purchase_at", "first_purchase_at"):
        if isinstance(out.get(key), str):
            try:
                out[key] = datetime.fromisoformat(out[key])
            except ValueError:
                bad(key, f"{out[key]!r} is not a date-time")
                continue
        if isinstance(out.get(key), datetime) and out[key].tzinfo is None:
            bad(key, f"{out[key].isoformat()!r} needs a time zone (e.g. +08:00)")
    return reference_checked(out, errors, bad)


#: The fields ``_clean`` normalises or checks by themselves (consent's check included).
REFERENCE_NORMALISED = frozenset({"name", "region", "phone", "email", "birthday", "last_purchase_at", "first_purchase_at",
                         "consent"})


def reference_checked(out: dict[str, Any], errors: list[FieldError], bad: Any) -> tuple[dict[str, Any], list[FieldError]]:
    """The end of ``_clean``: the enumerated fields and the consent checked."""
    for key, message in choice_problems(out):
        bad(key, message)
    consent = out.get("consent")
    if consent is not None and not (isinstance(consent, dict) and all(isinstance(v, bool) for v in consent.values())):
        bad("consent", "consent must map channels to true or false, e.g. {\"sms\": false}")
    return out, errors


VALUES: dict[str, list[Any]] = {
    "name": ["王", " 王 ", "", "  ", None, 7],
    "region": [" 上海 ", "", None, 3],
    "phone": ["138 0013 8000", "+8613800138000", "12", "", None, 13800138000],
    "email": [" A@B.COM ", "x@example.com", "not an address", "", None],
    "birthday": ["2000-01-02", "2000-13-01", "", None, date(2000, 1, 2)],
    "last_purchase_at": ["2026-01-02T03:04:05+08:00", "2026-01-02T03:04:05", "yesterday", None,
                         datetime(2026, 1, 2, tzinfo=timezone.utc), datetime(2026, 1, 2)],
    "first_purchase_at": ["2026-01-02T03:04:05+00:00", "bad", None, datetime(2026, 1, 2)],
    "consent": [{"sms": True}, {"sms": "yes"}, [], None, {}],
    "grade": ["A", "B", "Z", None, 1],
    "preferred_channel": ["sms", "fax", None],
    "status": ["active", "gone", None],
    "birthday_calendar": ["lunar", "moon", None],
    "tags": [["vip"], []],
    "expected_value": [1, 2.5, None],
    "custom": ["x", {"a": 1}],
}


def errors_of(found: list[FieldError]) -> list[tuple[str, str, str, str]]:
    return [(e.path, e.field, e.message, e.code) for e in found]


def test_clean_gives_what_the_reference_gives() -> None:
    rng = random.Random(1205)
    names = list(VALUES)
    seen_errors = 0
    for _ in range(4000):
        chosen = rng.sample(names, rng.choice([1, 1, 2, 3, len(names)]))
        data = {name: rng.choice(VALUES[name]) for name in chosen}
        values, errors = customers._clean(data)
        expected_values, expected_errors = reference_clean(data)
        assert values == expected_values, data
        assert [type(v) for v in values.values()] == [type(v) for v in expected_values.values()], data
        assert list(values) == list(expected_values), data
        assert errors_of(errors) == errors_of(expected_errors), data
        seen_errors += bool(errors)
    assert seen_errors > 500


def test_clean_leaves_its_input_as_it_was() -> None:
    data = {"name": " 王 ", "phone": "138 0013 8000", "grade": "A"}
    customers._clean(data)
    assert data == {"name": " 王 ", "phone": "138 0013 8000", "grade": "A"}
    assert set(CHOICES) <= set(VALUES)
