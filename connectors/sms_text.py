"""SMS length rules: how many parts a text costs, the unsubscribe suffix, and the part limit.

Two ways of counting:

* ``gsm`` (Twilio and carriers elsewhere): a text in the GSM-7 alphabet fits 160 septets in one
  part, 153 per part when split (the rest carries the concatenation header); characters from
  the extension table (``€ [ ] { } ~ ^ | \\``) take two septets and are never split across
  parts. Any other character switches the whole text to UCS-2: 70 UTF-16 units in one part,
  67 per part, an emoji taking two units that stay together.
* ``cn`` (Chinese carriers as Aliyun bills them): every character counts as one, Chinese or
  not, the 【signature】 the provider adds included: 70 in one part, 67 per part.

A text over the configured number of parts is refused (a permanent error) rather than sent as
an expensive message that may arrive out of order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import ConnectorError

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
DEFAULT_MAX_SEGMENTS = 5
UNSUBSCRIBE_CN = "回T退订"

#: Settings shared by the SMS connectors, merged into their settings schemas.
SMS_SETTINGS_PROPERTIES: Mapping[str, Any] = {
    "max_segments": {
        "type": "integer", "minimum": 1, "maximum": 10, "default": DEFAULT_MAX_SEGMENTS,
        "description": "Longest text allowed, in SMS parts; longer texts fail instead of being sent",
    },
    "append_unsubscribe": {
        "type": "boolean", "default": False,
        "description": "Add the unsubscribe text (China: 回T退订) to every SMS that does not already contain it",
    },
    "unsubscribe_text": {"type": "string", "default": UNSUBSCRIBE_CN, "maxLength": 40},
}


@dataclass(frozen=True)
class Segments:
    encoding: str  # "gsm7", "ucs2" or "cn"
    units: int  # septets, UTF-16 units or characters
    segments: int


def count_segments(text: str, counting: str = "gsm") -> Segments:
    if counting == "cn":
        units = len(text)
        return Segments("cn", units, 1 if units <= 70 else math.ceil(units / 67))
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        sizes = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return Segments("gsm7", sum(sizes), _parts(sizes, 160, 153))
    sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Segments("ucs2", sum(sizes), _parts(sizes, 70, 67))


def _parts(sizes: list[int], single: int, per_part: int) -> int:
    """Parts needed when a character (an escape pair, a surrogate pair) never straddles two."""
    total = sum(sizes)
    if total <= single:
        return 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > per_part:
            parts, used = parts + 1, 0
        used += size
    return parts


def with_unsubscribe(text: str, suffix: str = UNSUBSCRIBE_CN) -> str:
    """``text`` ending with the unsubscribe text, unless it already contains it."""
    if not suffix or suffix in text:
        return text
    body = text.rstrip()
    # Chinese texts run on without a space ("…联系您。回T退订"); Latin ones get one.
    separator = "" if (body and not body[-1].isascii()) else " "
    return f"{body}{separator}{suffix}" if body else suffix


def prepare_sms(text: Any, settings: Mapping[str, Any], *, counting: str = "gsm", signature: str = "") -> str:
    """The text to send, with the unsubscribe suffix if configured; raises ConnectorError when too long.

    ``signature`` is the 【签名】 the provider prepends itself: it is counted, never added.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConnectorError("an SMS needs a non-empty 'text'")
    if settings.get("append_unsubscribe"):
        text = with_unsubscribe(text, str(settings.get("unsubscribe_text") or UNSUBSCRIBE_CN))
    limit = int(settings.get("max_segments") or DEFAULT_MAX_SEGMENTS)
    counted = count_segments(signature + text, counting)
    if counted.segments > limit:
        raise ConnectorError(
            f"the SMS is {counted.units} {'characters' if counting == 'cn' else counted.encoding + ' units'} long, "
            f"{counted.segments} parts; at most {limit} are allowed (setting max_segments)"
        )
    return text
