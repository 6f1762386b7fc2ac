"""The ``webhook`` connector: a signed JSON POST to an admin-configured URL.

Signed the Standard Webhooks way, so receivers can use its reference libraries:
``webhook-id`` is the effect key (the same on every retry, which is what lets receivers
de-duplicate, hence ``idempotent = True``), ``webhook-timestamp`` is Unix seconds and
``webhook-signature`` is ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). A secret
written ``whsec_<base64>`` is used as its decoded bytes (the standard's format), any other
secret as its UTF-8 bytes. ``Idempotency-Key`` carries the same id for receivers that follow
the IETF draft instead.

The URL goes through ``connectors.net``: checked when saved and again when sending, internal
addresses refused unless the admin sets ``allow_private``, no redirects, bounded time and size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import ConnectorError, Delivery, Message
from connectors.messages import WEBHOOK_MESSAGE
from connectors.net import check_url, raise_for_status, safe_post
from engine.errors import ExpressionError
from engine.expr import single_line

MAX_TIMEOUT = 30.0
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")  # an HTTP header name (RFC 9110 token)
#: Headers the connector sets itself or the transport owns; admins may not override them.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade",
    "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key", "accept-encoding",
})


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            raise ConnectorError("the webhook secret starts with whsec_ but the rest is not base64") from None
    return secret.encode("utf-8")


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode("utf-8") + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def checked_headers(headers: Any) -> dict[str, str]:
    """Extra headers from the settings; raises ValueError naming the first bad one."""
    if headers in (None, {}):
        return {}
    if not isinstance(headers, Mapping):
        raise ValueError("headers must be an object of header names to values")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"the {name} header is set by Careflow and cannot be configured")
        if not isinstance(value, str) or any(ord(c) < 0x20 and c != "\t" for c in value):
            raise ValueError(f"the value of {name} must be a single line of text")
        try:
            out[name] = single_line(value)
        except ExpressionError as exc:
            raise ValueError(f"the value of {name}: {exc}") from None
    return out


class WebhookConnector:
    name: ClassVar[str] = "webhook"
    channel: ClassVar[str | None] = "webhook"
    idempotent: ClassVar[bool] = True
    message_schema: ClassVar[Mapping[str, Any]] = WEBHOOK_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["url", "secret"],
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "http(s) URL that receives the POST"},
            "secret": {"type": "string", "minLength": 16, "x-secret": True, "writeOnly": True,
                       "description": "Signing secret; whsec_<base64> is used as its decoded bytes"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Extra request headers (shown to admins: no secrets here)"},
            "timeout": {"type": "number", "minimum": 1, "maximum": MAX_TIMEOUT, "default": 10},
            "allow_private": {"type": "boolean", "default": False,
                              "description": "Allow a URL on the company network; cloud metadata addresses stay refused"},
        },
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        check_url(str(settings.get("url") or ""), bool(settings.get("allow_private")))
        checked_headers(settings.get("headers"))

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        try:
            extra = checked_headers(settings.get("headers"))
            msg_id = single_line(message.effect_key)
        except (ValueError, ExpressionError) as exc:
            raise ConnectorError(str(exc)) from None
        secret = str(settings.get("secret") or "")
        if not secret:
            raise ConnectorError("the webhook has no signing secret")
        body = json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            **extra,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Careflow-Webhook/1",
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature(secret, msg_id, timestamp, body),
            "Idempotency-Key": msg_id,
        }
        response = safe_post(
            str(settings.get("url") or ""), data=body, headers=headers,
            timeout=min(float(settings.get("timeout") or 10), MAX_TIMEOUT),
            allow_private=bool(settings.get("allow_private")),
        )
        raise_for_status(response, "the webhook receiver", response.text[:200] if response.status >= 400 else None)
        return Delivery(provider_ref=msg_id, detail={"status": response.status})

    def payload(self, message: Message) -> dict[str, Any]:
        params = dict(message.params)
        return {
            "event": str(params.pop("event", None) or "careflow.message"),
            "effect_key": message.effect_key,
            "customer_id": (message.customer or {}).get("id"),
            "params": params,
        }
