"""The ``sendgrid`` connector: e-mail through SendGrid's v3 Mail Send API, with the official SDK.

SendGrid documents no idempotency key, so ``idempotent = False``; the effect key travels in
``custom_args`` (it holds ids only, no personal data) so that the Event Webhook and support can
tie a delivery back to the message. ``base_url`` points the SDK elsewhere (the EU region, or a
Prism mock server in tests); only admins set it, so no private-address rule applies to it.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
from collections.abc import Mapping
from typing import Any, ClassVar

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from connectors.base import ConnectorError, Delivery, Message, TransientConnectorError
from connectors.messages import EMAIL_MESSAGE
from connectors.net import AmbiguousSendError, retry_after, short
from connectors.smtp import checked_address, checked_line, email_fields

DEFAULT_BASE_URL = "https://api.sendgrid.com"

# The SDK's HTTP client logs the Authorization header and the whole request body (addresses,
# texts) at DEBUG; keep API keys and customer data out of logs even when DEBUG is on.
logging.getLogger("python_http_client.client").setLevel(logging.INFO)


class SendGridConnector:
    name: ClassVar[str] = "sendgrid"
    channel: ClassVar[str | None] = "email"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = EMAIL_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key", "from_address"],
        "properties": {
            "api_key": {"type": "string", "minLength": 1, "x-secret": True, "writeOnly": True},
            "from_address": {"type": "string", "format": "email", "description": "A verified sender in SendGrid"},
            "from_name": {"type": "string", "maxLength": 100},
            "base_url": {"type": "string", "format": "uri", "default": DEFAULT_BASE_URL,
                         "description": "https://api.eu.sendgrid.com for EU subusers"},
            "timeout": {"type": "number", "minimum": 1, "maximum": 60, "default": 20},
        },
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        base = str(settings.get("base_url") or DEFAULT_BASE_URL)
        if not base.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        body = self.request_body(message, settings)
        if not settings.get("api_key"):
            raise ConnectorError("the SendGrid connector has no api_key")
        client = SendGridAPIClient(
            api_key=str(settings["api_key"]), host=str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        )
        timeout = float(settings.get("timeout") or 20)
        try:
            response = client.client.mail.send.post(
                request_body=body, request_headers=self._request_headers(message), timeout=timeout
            )
        except HTTPError as exc:
            raise _http_error(exc) from None
        except urllib.error.URLError as exc:
            # urllib wraps only failures from before the request was written: safe to retry.
            raise TransientConnectorError(f"could not reach SendGrid: {short(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            # Raised while waiting for the answer: SendGrid may have accepted the message.
            raise AmbiguousSendError(
                f"SendGrid did not answer ({type(exc).__name__}); the message may have been accepted"
            ) from None
        provider_ref = response.headers.get("X-Message-Id") if response.headers is not None else None
        return Delivery(provider_ref=provider_ref, detail={"status": response.status_code})

    def request_body(self, message: Message, settings: Mapping[str, Any]) -> dict[str, Any]:
        fields = email_fields(message)
        sender, _utf8 = checked_address(settings.get("from_address"), "from_address")
        from_: dict[str, str] = {"email": sender}
        if settings.get("from_name"):
            from_["name"] = checked_line(settings["from_name"], "from_name")
        content = [{"type": "text/plain", "value": fields.text}]
        if fields.html:
            content.append({"type": "text/html", "value": fields.html})
        return {
            "personalizations": [{"to": [{"email": fields.to}], "custom_args": {"careflow_key": message.effect_key}}],
            "from": from_,
            "subject": fields.subject,
            "content": content,
        }

    def _request_headers(self, message: Message) -> dict[str, str]:
        """Extra request headers; none in production (tests add Prism's ``Prefer``)."""
        return {}


def _http_error(exc: HTTPError) -> ConnectorError:
    status = int(exc.status_code)
    message = f"SendGrid answered HTTP {status}: {short(_error_text(exc.body))}"
    if status in (408, 429) or status >= 500:
        return TransientConnectorError(message, retry_after=retry_after(dict(exc.headers or {})))
    return ConnectorError(message)


def _error_text(body: Any) -> str:
    """SendGrid's ``{"errors": [{"message", "field"}]}`` as one line."""
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else str(body))
        errors = data.get("errors") or []
        parts = [f"{e.get('message')}" + (f" ({e['field']})" if e.get("field") not in (None, "null") else "") for e in errors]
        return "; ".join(parts) or json.dumps(data, ensure_ascii=False)
    except (ValueError, AttributeError, TypeError):
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
