"""engine/store/jsontext.py writes and reads JSON columns exactly as json.dumps / json.loads."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from engine.store import jsontext

DOCUMENTS: list[Any] = [
    {"status": "running", "vars": {"welcome_call": {"reached": True, "satisfaction": 5, "notes": "客户很满意\n\"好\""}},
     "tokens": {"t1": {"step": "call", "gen": 0, "wait": None, "splits": []}}, "seq": 1},
    {1: "int key", None: "none key", True: "bool key", 2.5: "float key"},
    [1, 2.5, -0.0, 1e16, 2**70, float("nan"), float("inf"), -float("inf"), None, False, "\u2028\ud83d\ude00"],
    "plain text", "", 0, 3.14, None, True, [], {},
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_same_text_and_the_same_values(document: Any) -> None:
    text = json.dumps(document)
    assert jsontext.dumps(document) == text
    assert repr(jsontext.loads(text)) == repr(json.loads(text))


def _outcome(fn, value):  # type: ignore[no-untyped-def]
    try:
        return "ok", repr(fn(value))
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("text", ["", " ", "{", "{} x", "nul", "[1,]", " [1] ", '"\\ud800"', '"\\x"', "NaN", "-Infinity",
                                  "01", "[1] ", b'{"a": 1}'])
def test_odd_and_bad_text_read_as_json_loads_reads_it(text: Any) -> None:
    assert _outcome(jsontext.loads, text) == _outcome(json.loads, text)


def test_the_same_errors_when_writing() -> None:
    looped: list[Any] = []
    looped.append(looped)
    for bad in (looped, {"when": date(2026, 11, 24)}, {("a", "b"): 1}):
        assert _outcome(jsontext.dumps, bad) == _outcome(json.dumps, bad)
