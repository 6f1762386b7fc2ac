"""The plain-Python check of flat forms never calls a submission valid that the validator faults."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from engine import forms

ROOT = Path(__file__).resolve().parents[2]

FLAT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "x-order": ["reached", "channel", "score", "ratio", "notes", "anything", "maybe"],
    "required": ["reached", "channel"],
    "properties": {
        "reached": {"type": "boolean", "x-label": {"zh": "已接通", "en": "Reached"}},
        "channel": {"type": "string", "enum": ["email", "sms"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1.5},
        "notes": {"type": "string", "minLength": 2, "maxLength": 5},
        "anything": {},
        "maybe": {"type": ["string", "null"]},
    },
}
OPEN = {**FLAT, "additionalProperties": True}
VALUES: list[Any] = [None, True, False, 0, 1, 3, 5, 6, -1, 1.0, 2.5, 0.5, 1.5, 1.6, float("nan"), float("inf"), "", "a",
                     "ab", "email", "sms", "SMS", "abcde", "abcdef", "好的好的好", [], {}, ["email"], {"a": 1}]

#: Values each field mostly gets, so that many submissions are valid and the rest differ a little.
LIKELY: dict[str, list[Any]] = {"reached": [True, False], "channel": ["email", "sms"], "score": [1, 3, 5, 1.0],
                                "ratio": [0, 0.5, 1.5, 1], "notes": ["ab", "好的好的好"], "maybe": [None, "x"]}


def _judge(schema: dict[str, Any], data: Any) -> tuple[bool, list[Any]]:
    check = forms._plain_check(schema)
    assert check is not None
    errors = list(forms._Validator(schema, format_checker=forms._FORMAT_CHECKER).iter_errors(data))
    return check(data), errors


def test_plainly_valid_means_the_validator_finds_nothing() -> None:
    rng = random.Random(20261205)
    names = [*FLAT["properties"], "other"]
    said_valid = said_unsure = 0
    for schema in (FLAT, OPEN):
        for _ in range(1500):
            chosen = {"reached", "channel"} if rng.random() < 0.8 else set()
            chosen |= set(rng.sample(names, rng.randint(0, len(names))))
            data = {name: rng.choice(LIKELY.get(name, VALUES)) if rng.random() < 0.85 else rng.choice(VALUES)
                    for name in chosen}
            plain, errors = _judge(schema, data)
            if plain:
                assert errors == [], (data, errors)
                said_valid += 1
            else:
                said_unsure += 1
    assert said_valid > 50 and said_unsure > 50  # both answers were exercised


def test_the_answer_is_valid_for_a_typical_submission_and_the_errors_still_come_from_the_validator() -> None:
    form_schema = json.loads((ROOT / "bench/forms/bench_call.schema.json").read_text(encoding="utf-8"))
    check = forms._plain_check(form_schema)
    assert check is not None and check({"reached": True, "preferred_channel": "sms", "satisfaction": 5, "call_notes": "好"})
    assert not check({"reached": True, "preferred_channel": "fax"})
    assert not check({"reached": 1.0, "preferred_channel": "sms"})


def test_schemas_with_other_keywords_are_left_to_the_validator() -> None:
    for schema in (
        {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}},
        {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}},
        {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}},
        {"type": "object", "properties": {"a": {"type": "string"}}, "if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"type": "object", "dependentRequired": {"a": ["b"]}},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "object", "properties": {"a": False}},
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}},
    ):
        assert forms._plain_check(schema) is None, schema
