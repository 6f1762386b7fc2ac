"""Channels: ``email``, ``sms`` and ``preferred`` route a flow's message to the provider an admin attached.

Flows name a channel, not a vendor, so switching from SMTP to SendGrid, or from Twilio to
Aliyun, changes a setting and no flow. The dispatcher asks ``route`` which channel a message
takes and fills in the recipient from the customer's profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import ConnectorError, Delivery, Message
from connectors.messages import EMAIL_CHANNEL_MESSAGE, PREFERRED_MESSAGE, SMS_CHANNEL_MESSAGE

#: The contact field each channel needs.
RECIPIENT_FIELD = {"email": "email", "sms": "phone"}
#: A preferred channel with no provider of its own falls back to one that has one.
PREFERRED_FALLBACK = {"phone": "sms", "wecom": "sms", "dingtalk": "sms", "feishu": "sms", "email": "email", "sms": "sms"}


class ChannelConnector:
    name: ClassVar[str] = ""
    channel: ClassVar[str | None] = None
    idempotent: ClassVar[bool] = False
    routes: ClassVar[bool] = True
    message_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["provider"],
        "additionalProperties": False,
        "properties": {
            "provider": {"type": "string", "minLength": 1, "description": "The connector that delivers this channel"},
            "marketing_per_week": {"type": "integer", "minimum": 0,
                                   "description": "At most this many marketing messages per customer in 7 days"},
        },
    }

    def route(self, customer: Mapping[str, Any] | None) -> str:
        """The concrete channel for this customer."""
        assert self.channel is not None
        return self.channel

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        raise ConnectorError(f"the {self.name!r} channel delivers through a provider, not by itself")


class EmailChannel(ChannelConnector):
    name = "email"
    channel = "email"
    message_schema = EMAIL_CHANNEL_MESSAGE


class SmsChannel(ChannelConnector):
    name = "sms"
    channel = "sms"
    message_schema = SMS_CHANNEL_MESSAGE


class PreferredChannel(ChannelConnector):
    """The customer's preferred channel (``preferred_channel``), e-mail when none is set."""

    name = "preferred"
    channel = None
    message_schema = PREFERRED_MESSAGE
    #: It picks ``email`` or ``sms`` per customer; a configuration of its own would never be read.
    configurable = False

    def route(self, customer: Mapping[str, Any] | None) -> str:
        preferred = (customer or {}).get("preferred_channel") or ""
        if preferred in PREFERRED_FALLBACK:
            return PREFERRED_FALLBACK[preferred]
        return "email" if (customer or {}).get("email") else "sms"


def recipient(channel: str, params: Mapping[str, Any], customer: Mapping[str, Any] | None) -> str:
    """The address to send to: ``to`` in the params, else the customer's e-mail or phone."""
    if params.get("to"):
        return str(params["to"])
    field = RECIPIENT_FIELD.get(channel)
    value = (customer or {}).get(field or "")
    if not value:
        raise ConnectorError(f"the customer has no {field or channel} to send a {channel} message to")
    return str(value)
