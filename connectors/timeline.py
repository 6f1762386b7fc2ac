"""The built-in ``timeline`` connector: a note on the customer's timeline.

The dispatcher writes the timeline entry for every delivered message in the same transaction
that records the delivery, so this connector has nothing to call; it is idempotent by nature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import ConnectorError, Delivery, Message
from connectors.messages import TIMELINE_MESSAGE


class TimelineConnector:
    name: ClassVar[str] = "timeline"
    channel: ClassVar[str | None] = None
    idempotent: ClassVar[bool] = True
    message_schema: ClassVar[Mapping[str, Any]] = TIMELINE_MESSAGE
    #: Nothing to configure, so there is no named configuration to address.
    configurable: ClassVar[bool] = False
    settings_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}}

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        if not str(message.params.get("text", "")).strip():
            raise ConnectorError("a timeline note needs a non-empty 'text'")
        return Delivery(provider_ref=message.effect_key)
