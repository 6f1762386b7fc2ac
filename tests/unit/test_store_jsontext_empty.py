"""jsontext.loads reads the empty list and dict of most JSON columns without the scanner: still
a new object each time (a caller may change it), and any other two-character text as json.loads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.store import jsontext


@pytest.mark.parametrize("text", ["[]", "{}", b"[]", b"{}", bytearray(b"[]"), "[1", "12", '""', "[ ", b"\xef\xbb", "{]"])
def test_two_characters_read_as_json_loads_reads_them(text: Any) -> None:
    def outcome(fn: Any) -> Any:
        try:
            return "ok", repr(fn(text))
        except Exception as exc:
            return type(exc).__name__, str(exc)

    assert outcome(jsontext.loads) == outcome(json.loads)


@pytest.mark.parametrize("text", ["[]", "{}", b"[]", b"{}"])
def test_each_empty_document_is_a_new_object(text: Any) -> None:
    first, second = jsontext.loads(text), jsontext.loads(text)
    assert first == second == json.loads(text) and first is not second
    first.append(1) if isinstance(first, list) else first.update(a=1)
    assert jsontext.loads(text) == json.loads(text)
