"""Input the storage layer would choke on is refused at the door, never a 500.

* Malformed JSON (400): bad syntax, NaN/Infinity, numbers that overflow to infinity.
* JSON content that cannot be stored (422, with its JSON path): nesting deeper than
  ``MAX_DEPTH``, more than ``MAX_NODES`` values, text with NUL or unpaired surrogates (neither
  PostgreSQL text nor UTF-8 can hold them). Query strings with NUL are a 422 too.
* Ids in paths beyond the 64-bit range are simply not found (the ``id`` URL converter).
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import BaseConverter

MAX_DEPTH = 32
MAX_NODES = 50_000
MAX_ID = 2**63 - 1


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ContentRejected(ValueError):
    """Well-formed JSON whose content cannot be stored (a 422, with the JSON path)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)


def check_value(value: Any) -> None:
    """Raise ContentRejected if value is too deep, too big, or holds text that cannot be stored."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    nodes = 0
    while stack:
        item, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ContentRejected("$", f"more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise ContentRejected(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, path)
                stack.append((child, depth + 1, f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def _check_text(text: str, path: str) -> None:
    try:
        check_text(text)
    except ValueError as exc:
        raise ContentRejected(path, str(exc)) from None


def check_text(text: str) -> None:
    if "\x00" in text:
        raise ValueError("text must not contain NUL (U+0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (unpaired surrogate)") from None


class SafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON with the checks above on every request body it parses."""

    ensure_ascii = False
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(s, parse_float=_finite, parse_constant=_constant, **kwargs)
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None


class IdConverter(BaseConverter):
    """A positive 64-bit id; anything longer does not match the route (404)."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            from werkzeug.exceptions import NotFound

            raise NotFound()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))


class IdentConverter(BaseConverter):
    """A flow, form or step id: a letter, then letters, digits, '_' or '-' (64 at most)."""

    regex = r"[A-Za-z][A-Za-z0-9_-]{0,63}"


class UsernameConverter(BaseConverter):
    """A user or webhook name: lowercase letters, digits, '.', '_' or '-' (64 at most)."""

    regex = r"[a-z0-9][a-z0-9_.-]{0,63}"
