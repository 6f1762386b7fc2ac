"""The ``feishu`` connector: a Feishu/Lark (飞书) custom group robot, for notifying staff groups.

With signature verification on, Feishu wants ``timestamp`` (seconds) and
``sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))`` inside the JSON body
(not the URL). Markdown goes out as an interactive card, since custom robots have no plain
markdown message type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import Delivery, Message
from connectors.messages import ROBOT_MESSAGE
from connectors.net import ROBOT_SETTINGS_PROPERTIES, check_url, mentions, post_robot, robot_message

#: 9499: too many requests; 11232: tenant message rate limit; 230020: per-chat rate limit.
TRANSIENT_CODES = {9499: 60.0, 11232: 60.0, 230020: 60.0}


def sign(secret: str, timestamp_s: str) -> str:
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode("utf-8"), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


class FeishuConnector:
    name: ClassVar[str] = "feishu"
    channel: ClassVar[str | None] = "feishu"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = ROBOT_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["webhook_url"],
        "properties": {
            **ROBOT_SETTINGS_PROPERTIES,
            "secret": {"type": "string", "x-secret": True, "writeOnly": True,
                       "description": "The robot's signature-verification secret"},
        },
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        check_url(str(settings.get("webhook_url") or ""), bool(settings.get("allow_private")))

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        kind, title, content = robot_message(message.params)
        people = mentions(message.params)
        if people:
            # Feishu's mention tag, in text and in card markdown alike.
            content += "\n" + " ".join(f'<at id="{_attr(p)}"></at>' if kind == "markdown" else f'<at user_id="{_attr(p)}"></at>'
                                        for p in people)
        if kind == "markdown":
            card: dict[str, Any] = {"elements": [{"tag": "markdown", "content": content}]}
            if title:
                card["header"] = {"title": {"tag": "plain_text", "content": title}}
            body: dict[str, Any] = {"msg_type": "interactive", "card": card}
        else:
            body = {"msg_type": "text", "content": {"text": content}}
        if settings.get("secret"):
            timestamp = str(int(time.time()))
            body = {"timestamp": timestamp, "sign": sign(str(settings["secret"]), timestamp), **body}
        post_robot(str(settings.get("webhook_url") or ""), body, settings, vendor="Feishu", transient_codes=TRANSIENT_CODES)
        return Delivery(detail={"msg_type": body["msg_type"]})
