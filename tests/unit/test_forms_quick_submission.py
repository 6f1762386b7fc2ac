"""check_submission's quick answer for plainly valid flat submissions against its general path.

Random submissions to every built-in form, the benchmark's form, flat forms of their own and task
views of them (read-only and hidden fields) go through check_submission as it is and with the quick
answer turned off: the cleaned data, or the errors, must be the same.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from engine import forms
from engine.errors import SubmissionInvalid

ROOT = Path(__file__).resolve().parents[2]

FLAT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "x-title": {"zh": "测试", "en": "Test"},
    "x-order": ["reached", "channel", "score", "ratio", "notes", "anything", "maybe"],
    "required": ["reached", "channel"],
    "properties": {
        "reached": {"type": "boolean", "x-label": {"zh": "已接通", "en": "Reached"}},
        "channel": {"type": "string", "enum": ["email", "sms"], "x-label": {"zh": "渠道", "en": "Channel"}},
        "score": {"type": "integer", "minimum": 1, "maximum": 5, "x-label": {"zh": "分", "en": "Score"}},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1.5, "x-label": {"zh": "比", "en": "Ratio"}},
        "notes": {"type": "string", "minLength": 2, "maxLength": 5, "x-label": {"zh": "备注", "en": "Notes"}},
        "anything": {"x-label": {"zh": "任意", "en": "Anything"}},
        "maybe": {"type": ["string", "null"], "x-label": {"zh": "也许", "en": "Maybe"}},
    },
}
WITH_DEFAULT = copy.deepcopy(FLAT)
WITH_DEFAULT["properties"]["score"]["default"] = 3
WITH_PHONE = copy.deepcopy(FLAT)
WITH_PHONE["properties"]["notes"] = {"type": "string", "format": "phone", "x-label": {"zh": "电话", "en": "Phone"}}

VALUES: list[Any] = [None, True, False, 0, 1, 3, 5, 6, -1, 1.0, 2.5, 0.5, 1.5, 1.6, float("nan"), float("inf"), "", "a",
                     "ab", "email", "sms", "SMS", "abcde", "abcdef", "好的好的好", "138 0013 8000", " A@B.COM ", [],
                     {}, ["email"], {"a": 1}, 10**30]


def own_form(schema: dict[str, Any], name: str) -> forms.Form:
    return forms.load_form_text(json.dumps(schema), f"{name}.schema.json", name)


def all_forms() -> list[forms.Form]:
    found = [forms.load_form(path) for path in sorted((ROOT / "forms").glob("*.schema.json"))]
    found.append(forms.load_form(ROOT / "bench/forms/bench_call.schema.json"))
    found += [own_form(schema, name) for schema, name in
              ((FLAT, "flat"), (WITH_DEFAULT, "with_default"), (WITH_PHONE, "with_phone"))]
    views = []
    for form in found:
        names = [item.name for item in form.fields]
        if names:
            views.append(forms.view(form, readonly=names[:1]))
            views.append(forms.view(form, hidden=names[-1:]))
    return found + views


def likely_value(item: forms.FormField, rng: random.Random) -> Any:
    """Mostly a value the field takes, so that many submissions are valid."""
    schema = item.schema
    if rng.random() < 0.15:
        return rng.choice(VALUES)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "boolean":
        return rng.choice([True, False])
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 10)
        return rng.choice([low, high, (low + high) // 2 if kind == "integer" else (low + high) / 2])
    if kind == "string":
        return rng.choice(["好的", "ab", "abc", "138 0013 8000", " A@B.COM "])
    return rng.choice(VALUES)


def outcome(run: Any) -> tuple[str, Any]:
    try:
        return "cleaned", run()
    except SubmissionInvalid as exc:
        return "invalid", [(e.path, e.field, e.message, e.code) for e in exc.errors]


def test_quick_answers_are_those_of_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261205)
    cases = []
    for form in all_forms():
        for _ in range(150):
            data: Any = {item.name: likely_value(item, rng) for item in form.fields if rng.random() < 0.8}
            if rng.random() < 0.1:
                data[rng.choice(["other", "extra"])] = rng.choice(VALUES)
            if rng.random() < 0.03:
                data = rng.choice([None, [], "text", list(data.items())])
            current = {item.name: likely_value(item, rng) for item in form.fields} if rng.random() < 0.5 else None
            cases.append((form, data, rng.choice(["zh", "en"]), current))
    quick = [outcome(lambda: forms.check_submission(f, d, locale=loc, current=cur)) for f, d, loc, cur in cases]
    monkeypatch.setattr(forms, "_plain_order_for", lambda form: None)
    general = [outcome(lambda: forms.check_submission(f, d, locale=loc, current=cur)) for f, d, loc, cur in cases]
    for case, a, b in zip(cases, quick, general, strict=True):
        assert a == b, case[:2]
        if a[0] == "cleaned":  # the same values, of the same types (True is no 1)
            assert [type(v) for v in a[1].values()] == [type(v) for v in b[1].values()], case[:2]
    assert sum(kind == "cleaned" for kind, _ in quick) > 300 and sum(kind == "invalid" for kind, _ in quick) > 300


def test_the_quick_answer_is_used_for_plain_forms_only() -> None:
    flat, bench = own_form(FLAT, "flat"), forms.load_form(ROOT / "bench/forms/bench_call.schema.json")
    assert forms._plain_order_for(flat) == tuple(FLAT["x-order"])
    assert forms._plain_order_for(bench) is not None
    assert forms._plain_order_for(own_form(WITH_DEFAULT, "d")) is None
    assert forms._plain_order_for(own_form(WITH_PHONE, "p")) is None
    assert forms._plain_order_for(forms.view(flat, readonly=["score"])) is None
    assert forms._plain_order_for(forms.view(flat, hidden=["notes"])) is None


def test_quick_cleaned_data_is_a_new_dict_in_field_order() -> None:
    form = own_form(FLAT, "flat")
    data = {"notes": "ab", "channel": "sms", "reached": True}
    cleaned = forms.check_submission(form, data)
    assert cleaned == {"reached": True, "channel": "sms", "notes": "ab"}
    assert list(cleaned) == ["reached", "channel", "notes"] and cleaned is not data
