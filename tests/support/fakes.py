"""Test doubles for connectors.

Nothing real can stand in for "a provider that fails on demand", so this recording provider is
a fake on purpose; the real SMTP/SendGrid/Twilio connectors are tested against aiosmtpd and
Prism elsewhere. It records every request with its idempotency key, optionally to a JSON-lines
file so that a test can count sends across processes that crash and restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import AmbiguousSendError, ConnectorError, Delivery, Message, TransientConnectorError


class RecordingProvider:
    name: ClassVar[str] = "fake"
    channel: ClassVar[str | None] = None
    idempotent: ClassVar[bool] = False
    settings_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    message_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failures: list[str] = []  # "transient" / "permanent" / "ambiguous", consumed one per send
        self.ledger = os.environ.get("CAREFLOW_FAKE_LEDGER")

    def fail_next(self, *kinds: str) -> None:
        self.failures.extend(kinds)

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        if self.failures:
            kind = self.failures.pop(0)
            if kind == "transient":
                raise TransientConnectorError("provider answered 503")
            if kind == "ambiguous":
                raise AmbiguousSendError("the connection broke off before an answer")
            raise ConnectorError("provider answered 400: invalid recipient")
        record = {"effect_key": message.effect_key, "to": message.params.get("to"),
                  "channel": message.params.get("channel"), "text": message.params.get("text")}
        self.sent.append(record)
        if self.ledger:
            with open(self.ledger, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return Delivery(provider_ref=f"fake-{len(self.sent)}")

    def texts(self) -> list[str]:
        return [str(s["text"]) for s in self.sent]


FAKE_SETTINGS = {"email": {"provider": "fake"}, "sms": {"provider": "fake"}}


class SecretProvider(RecordingProvider):
    """A recording provider whose settings carry a secret, to test how secrets are stored."""

    name: ClassVar[str] = "fakemail"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key", "from_address"],
        "additionalProperties": False,
        "properties": {
            "api_key": {"type": "string", "minLength": 8, "x-secret": True, "writeOnly": True},
            "from_address": {"type": "string", "format": "email"},
        },
    }

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        if settings.get("api_key") != "sk-live-0123456789":
            raise ConnectorError("provider answered 401: bad api key")
        return super().send(message, settings)
