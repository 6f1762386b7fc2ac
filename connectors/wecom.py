"""The ``wecom`` connector: a WeCom (企业微信) group robot, for notifying staff groups.

POST JSON to the robot's webhook (``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…``);
WeCom robots have no signing, the key in the URL is the credential, so the whole URL is
stored as a secret. Reaching customers on WeCom needs the 客户联系 app APIs instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import ConnectorError, Delivery, Message
from connectors.messages import ROBOT_MESSAGE
from connectors.net import ROBOT_SETTINGS_PROPERTIES, check_url, mentions, post_robot, robot_message

#: WeCom's documented content limits, in UTF-8 bytes.
MAX_BYTES = {"text": 2048, "markdown": 4096}
#: 45009: API frequency limit (WeCom documents 20 messages a minute per robot); -1: system busy.
TRANSIENT_CODES = {45009: 60.0, -1: None}


class WeComConnector:
    name: ClassVar[str] = "wecom"
    channel: ClassVar[str | None] = "wecom"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = ROBOT_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["webhook_url"],
        "properties": dict(ROBOT_SETTINGS_PROPERTIES),
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        check_url(str(settings.get("webhook_url") or ""), bool(settings.get("allow_private")))

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        kind, _title, content = robot_message(message.params)
        people = mentions(message.params)
        if people and kind == "markdown":
            content += "\n" + " ".join(f"<@{p}>" for p in people)  # markdown has no mentioned_list
        if len(content.encode("utf-8")) > MAX_BYTES[kind]:
            raise ConnectorError(f"a WeCom {kind} message may have at most {MAX_BYTES[kind]} bytes")
        body: dict[str, Any] = {"msgtype": kind, kind: {"content": content}}
        if people and kind == "text":
            body["text"]["mentioned_list"] = people
        post_robot(str(settings.get("webhook_url") or ""), body, settings, vendor="WeCom", transient_codes=TRANSIENT_CODES)
        return Delivery(detail={"msgtype": kind})
