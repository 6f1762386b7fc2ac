"""The ``twilio_sms`` connector: one form POST to Twilio's Messages resource.

Plain HTTP rather than the Twilio SDK, whose host is fixed: ``base_url`` points at Prism in tests.
Twilio says sending an SMS is not idempotent (a retry after a lost answer can text the customer
twice), hence ``idempotent = False``. The effect key still goes along as
``I-Twilio-Idempotency-Token`` and, if a status callback is configured, in its URL, so that a
duplicate can be traced; nothing here relies on Twilio de-duplicating.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

from connectors.base import ConnectorError, Delivery, Message
from connectors.messages import TWILIO_MESSAGE
from connectors.net import raise_for_status, safe_post
from connectors.sms_text import SMS_SETTINGS_PROPERTIES, prepare_sms

DEFAULT_BASE_URL = "https://api.twilio.com"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class TwilioSmsConnector:
    name: ClassVar[str] = "twilio_sms"
    channel: ClassVar[str | None] = "sms"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = TWILIO_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["account_sid", "auth_token"],
        "anyOf": [{"required": ["from_number"]}, {"required": ["messaging_service_sid"]}],
        "properties": {
            "account_sid": {"type": "string", "pattern": "^AC[0-9a-fA-F]{32}$"},
            "auth_token": {"type": "string", "minLength": 1, "x-secret": True, "writeOnly": True},
            "from_number": {"type": "string", "description": "E.164 number or alphanumeric sender id"},
            "messaging_service_sid": {"type": "string", "pattern": "^MG[0-9a-fA-F]{32}$"},
            "status_callback": {"type": "string", "format": "uri",
                                "description": "Twilio posts delivery status here; the effect key is added as a query parameter"},
            "base_url": {"type": "string", "format": "uri", "default": DEFAULT_BASE_URL},
            "timeout": {"type": "number", "minimum": 1, "maximum": 60, "default": 15},
            **SMS_SETTINGS_PROPERTIES,
        },
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        base = str(settings.get("base_url") or DEFAULT_BASE_URL)
        if urlsplit(base).scheme not in ("http", "https"):
            raise ValueError("base_url must be an http(s) URL")

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        to = str(message.params.get("to") or "")
        if not E164.match(to):
            # Twilio would answer 400 (code 21211); saying so here costs no request.
            raise ConnectorError(f"{to!r} is not a phone number in E.164 form (+8613800138000)")
        form = {"To": to, "Body": prepare_sms(message.params.get("text"), settings)}
        if settings.get("messaging_service_sid"):
            form["MessagingServiceSid"] = str(settings["messaging_service_sid"])
        else:
            form["From"] = str(settings.get("from_number") or "")
        if settings.get("status_callback"):
            callback = str(settings["status_callback"])
            form["StatusCallback"] = callback + ("&" if "?" in callback else "?") + urlencode({"effect_key": message.effect_key})
        sid, token = str(settings.get("account_sid") or ""), str(settings.get("auth_token") or "")
        if not sid or not token:
            raise ConnectorError("the Twilio connector needs account_sid and auth_token")
        base = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        response = safe_post(
            f"{base}/2010-04-01/Accounts/{quote(sid, safe='')}/Messages.json",
            data=form,
            headers=self._request_headers(message),
            auth=(sid, token),
            timeout=float(settings.get("timeout") or 15),
            allow_private=True,  # an admin-set vendor URL, not user input
        )
        answer = response.json_or_none()
        raise_for_status(response, "Twilio", _error_text(answer) if isinstance(answer, dict) else response.text)
        if not isinstance(answer, dict) or not answer.get("sid"):
            # Accepted all the same: failing here would invite a resend of a sent message.
            return Delivery(detail={"status": response.status})
        return Delivery(provider_ref=str(answer["sid"]), detail={"status": answer.get("status")})

    def _request_headers(self, message: Message) -> dict[str, str]:
        return {"I-Twilio-Idempotency-Token": message.effect_key, "Accept": "application/json"}


def _error_text(answer: Mapping[str, Any]) -> str:
    """Twilio's ``{code, message, more_info}``, or a problem+json ``{title, detail}``."""
    if answer.get("message"):
        code = f" (code {answer['code']})" if answer.get("code") else ""
        return f"{answer['message']}{code}"
    parts = [str(answer.get(k)) for k in ("title", "detail") if answer.get(k)]
    parts += [str(v.get("message")) for v in answer.get("validation") or [] if isinstance(v, Mapping)]
    return "; ".join(parts) or str(answer)
