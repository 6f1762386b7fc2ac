"""engine/store/jsontext.py writes and reads JSON columns exactly as json.dumps / json.loads."""

from __future__ import annotations

import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor
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


def _random_document(rng: random.Random, depth: int = 0) -> Any:
    scalars = [
        lambda: rng.randint(-2**70, 2**70), lambda: rng.randint(-5, 5), lambda: rng.uniform(-1e6, 1e6),
        lambda: rng.choice([float("nan"), float("inf"), -float("inf"), -0.0, 1e-320, 1e300]),
        lambda: rng.choice([None, True, False]),
        lambda: "".join(rng.choice('ab"\\\n\t\x00\x1f/é张伟😀\u2028\ud800') for _ in range(rng.randint(0, 8))),
    ]
    if depth < 4 and rng.random() < 0.4:
        if rng.random() < 0.5:
            return [_random_document(rng, depth + 1) for _ in range(rng.randint(0, 5))]
        keys = [rng.choice(scalars)() for _ in range(rng.randint(0, 5))]
        return {k if not isinstance(k, float) or k == k else "nan": _random_document(rng, depth + 1) for k in keys}
    return rng.choice(scalars)()


def test_random_documents_give_the_text_json_dumps_gives() -> None:
    rng = random.Random(20261205)
    for _ in range(3000):
        document = _random_document(rng)
        assert jsontext.dumps(document) == json.dumps(document)


def test_a_document_shared_twice_is_not_circular_and_a_failed_one_leaves_nothing_behind() -> None:
    shared = {"step": "call", "tags": ["a"]}
    looped: dict[str, Any] = {"shared": shared}
    looped["self"] = {"up": looped}
    assert _outcome(jsontext.dumps, looped) == ("ValueError", "Circular reference detected")
    with pytest.raises(TypeError):
        jsontext.dumps([shared, {"when": date(2026, 11, 24)}])
    assert jsontext.dumps([shared, shared, {"s": shared}]) == json.dumps([shared, shared, {"s": shared}])


def test_too_deep_a_document_fails_as_json_dumps_fails() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(sys.getrecursionlimit() + 10):
        inner.append([])
        inner = inner[0]
    assert _outcome(jsontext.dumps, deep)[0] == _outcome(json.dumps, deep)[0] == "RecursionError"


def test_threads_encoding_at_once_get_their_own_text() -> None:
    documents = [{"n": n, "items": [{"i": i, "name": f"客户{i}"} for i in range(n % 7)]} for n in range(400)]
    expected = [json.dumps(d) for d in documents]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(jsontext.dumps, documents)) == expected


@pytest.mark.parametrize("data", [
    '{"name": "张伟", "tags": ["a"], "n": 1.5}'.encode(), b"[1, 2]", b'"text"', b"{", b"[", b"[\x00", b"{\xff}",
    b'["\xed\xa0\x80"]', b"\xef\xbb\xbf[1]", "[1]".encode("utf-16"), "[1]".encode("utf-16-le"),
    "[1]".encode("utf-32-be"), b" [1]", b"[1] ", b"1", b"", bytearray(b"[1]"),
])
def test_bytes_read_as_json_loads_reads_them(data: Any) -> None:
    assert _outcome(jsontext.loads, data) == _outcome(json.loads, data)
