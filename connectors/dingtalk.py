"""The ``dingtalk`` connector: a DingTalk (钉钉) custom group robot, for notifying staff groups.

With 加签 (signing) on, DingTalk wants ``timestamp`` (milliseconds) and
``sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))`` appended to
the webhook URL; the timestamp must be within an hour of DingTalk's clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote_plus

from connectors.base import Delivery, Message
from connectors.messages import ROBOT_MESSAGE
from connectors.net import ROBOT_SETTINGS_PROPERTIES, check_url, mentions, post_robot, robot_message

#: 130101/410100: more than 20 messages a minute, after which DingTalk throttles for 10 minutes;
#: -1: system busy.
TRANSIENT_CODES = {130101: 600.0, 410100: 600.0, -1: None}


def sign(secret: str, timestamp_ms: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode("utf-8"), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


class DingTalkConnector:
    name: ClassVar[str] = "dingtalk"
    channel: ClassVar[str | None] = "dingtalk"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = ROBOT_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["webhook_url"],
        "properties": {
            **ROBOT_SETTINGS_PROPERTIES,
            "secret": {"type": "string", "x-secret": True, "writeOnly": True,
                       "description": "The robot's 加签 secret (starts with SEC)"},
        },
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        check_url(str(settings.get("webhook_url") or ""), bool(settings.get("allow_private")))

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        kind, title, content = robot_message(message.params)
        if kind == "markdown":
            body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": title or "Careflow", "text": content}}
        else:
            body = {"msgtype": "text", "text": {"content": content}}
        people = mentions(message.params)
        if people:
            # DingTalk shows the @ only where the text names the person too.
            tail = " ".join(f"@{p}" for p in people)
            if kind == "markdown":
                body["markdown"]["text"] += "\n\n" + tail
            else:
                body["text"]["content"] += "\n" + tail
            body["at"] = {"atUserIds": people}
        url = str(settings.get("webhook_url") or "")
        if settings.get("secret"):
            timestamp = str(int(time.time() * 1000))
            url += ("&" if "?" in url else "?") + f"timestamp={timestamp}&sign={sign(str(settings['secret']), timestamp)}"
        post_robot(url, body, settings, vendor="DingTalk", transient_codes=TRANSIENT_CODES)
        return Delivery(detail={"msgtype": kind})
