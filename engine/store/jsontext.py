"""JSON columns' text: exactly ``json.dumps`` / ``json.loads``, with less of their per-call cost.

``json.dumps(obj)`` reaches the C encoder through three Python calls and a keyword-argument
check, which for the small documents of a step transition (state, history, titles, payloads;
about twenty per instance) cost as much as the encoding itself. ``dumps`` calls the same C
encoder with the same settings (ASCII escapes, ``", "`` and ``": "`` separators, NaN allowed), so
the text stored is byte for byte the same, and raises the same errors. ``loads`` runs the
C scanner directly on text with no surrounding whitespace (and on UTF-8 bytes, decoded as
``json.loads`` decodes them) and leaves everything else (and every error) to ``json.loads``.
"""

from __future__ import annotations

import json
from json.decoder import JSONDecoder
from json.encoder import JSONEncoder, c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any

_EMPTY = {dict: "{}", list: "[]"}
_default = JSONEncoder().default  # raises the TypeError json.dumps raises
_scan = c_make_scanner(JSONDecoder()) if c_make_scanner is not None else None


# One encoder for every call, without json.dumps' markers dict (which it fills and empties for each
# list and dict it enters, to detect circular references): with no markers it keeps no state, so
# threads share it. A circular document makes it exceed the recursion limit instead; that
# RecursionError sends the document to json.dumps, which raises its own error (ValueError:
# Circular reference detected; or RecursionError for a document nested too deep for it too).
_encode = (c_make_encoder(None, _default, encode_basestring_ascii, None, ": ", ", ", False, False, True)
           if c_make_encoder is not None else None)


def dumps(obj: Any) -> str:
    """``json.dumps(obj)``."""
    if not obj and type(obj) in _EMPTY:
        return _EMPTY[type(obj)]  # an empty dict or list: the text json.dumps gives, without an encoder
    if _encode is None:  # a Python built without the _json accelerator
        return json.dumps(obj)
    try:
        return "".join(_encode(obj, 0))
    except RecursionError:
        return json.dumps(obj)


#: First bytes for which json.loads reads bytes as UTF-8: no byte order mark, no NUL in the first
#: two bytes (json.detect_encoding's tests for UTF-16 and UTF-32).
_UTF8_STARTS = frozenset(b'{["')


#: The texts of an empty list and dict, which most JSON columns of a batch's rows hold: a new object
#: each, as json.loads gives, without the scanner.
_EMPTY_TEXTS = {"[]": list, "{}": dict, b"[]": list, b"{}": dict}


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``."""
    if len(text) == 2 and (type(text) is str or type(text) is bytes):
        empty = _EMPTY_TEXTS.get(text)
        if empty is not None:
            return empty()
    # PostgreSQL's driver hands over each JSON value as UTF-8 bytes.
    if type(text) is bytes and text and text[0] in _UTF8_STARTS and text[1:2] != b"\0":
        text = text.decode("utf-8", "surrogatepass")  # as json.loads decodes it
    if _scan is not None and isinstance(text, str) and text and text[0] not in " \t\n\r" \
            and text[-1] not in " \t\n\r":
        try:
            obj, end = _scan(text, 0)
        except (StopIteration, ValueError):
            return json.loads(text)  # its error, with its message
        if end == len(text):
            return obj
    return json.loads(text)
