"""The ``aliyun_sms`` connector: Alibaba Cloud SMS (阿里云短信, dysmsapi SendSms) through its SDK.

The SDK is an optional extra (``pip install careflow[aliyun]``) because it brings Alibaba's
whole Tea/OpenAPI runtime; it saves writing the ACS3-HMAC-SHA256 request signature by hand.

Aliyun sends approved templates only: the text goes into a template variable (``text_param``,
default ``content``), or a message passes its own ``template_params`` (and, optionally, its own
``template_code``). The provider puts the 【签名】 in front itself, so it is counted toward the
length (Chinese carriers count every character as one: 70, or 67 per part) but never added.
SendSms has no idempotency key (``OutId`` only labels the receipt), hence ``idempotent = False``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from connectors.base import ConnectorError, Delivery, Message, TransientConnectorError
from connectors.messages import ALIYUN_MESSAGE
from connectors.net import AmbiguousSendError, short
from connectors.sms_text import SMS_SETTINGS_PROPERTIES, prepare_sms

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
#: Business codes worth retrying: flow control per number/minute, and Aliyun's own failures.
TRANSIENT_CODES = {"isv.BUSINESS_LIMIT_CONTROL": 60.0, "isp.SYSTEM_ERROR": None, "ServiceUnavailable": None}
#: Words in the SDK's wrapped network error that prove the connection was never made.
_NOT_CONNECTED = ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError", "Connection refused",
                  "Failed to establish a new connection", "SSLError")


class AliyunSmsConnector:
    name: ClassVar[str] = "aliyun_sms"
    channel: ClassVar[str | None] = "sms"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = ALIYUN_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["access_key_id", "access_key_secret", "sign_name", "template_code"],
        "properties": {
            "access_key_id": {"type": "string", "minLength": 1},
            "access_key_secret": {"type": "string", "minLength": 1, "x-secret": True, "writeOnly": True},
            "sign_name": {"type": "string", "minLength": 1, "description": "The approved signature, without 【】"},
            "template_code": {"type": "string", "minLength": 1, "description": "Default template, e.g. SMS_123456789"},
            "text_param": {"type": "string", "default": "content",
                           "description": "The template variable that receives the message text"},
            "endpoint": {"type": "string", "default": "dysmsapi.aliyuncs.com"},
            "protocol": {"type": "string", "enum": ["https", "http"], "default": "https"},
            "timeout": {"type": "number", "minimum": 1, "maximum": 60, "default": 15},
            **SMS_SETTINGS_PROPERTIES,
        },
    }

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        sdk = _sdk()
        sign_name = str(settings.get("sign_name") or "").strip("【】 ")
        if not sign_name:
            raise ConnectorError("Aliyun SMS needs a sign_name (签名)")
        request = sdk.models.SendSmsRequest(
            phone_numbers=_aliyun_number(message.params.get("to")),
            sign_name=sign_name,
            template_code=str(message.params.get("template_code") or settings.get("template_code") or ""),
            template_param=json.dumps(self._template_params(message, settings, sign_name), ensure_ascii=False),
            out_id=message.effect_key,
        )
        client = sdk.Client(sdk.Config(
            access_key_id=str(settings.get("access_key_id") or ""),
            access_key_secret=str(settings.get("access_key_secret") or ""),
            endpoint=str(settings.get("endpoint") or "dysmsapi.aliyuncs.com"),
            protocol=str(settings.get("protocol") or "https"),
        ))
        timeout_ms = int(float(settings.get("timeout") or 15) * 1000)
        # autoretry off: the SDK would otherwise resend after a lost answer, texting twice.
        runtime = sdk.RuntimeOptions(connect_timeout=timeout_ms, read_timeout=timeout_ms, autoretry=False, max_attempts=1)
        try:
            response = client.send_sms_with_options(request, runtime)
        except sdk.TeaException as exc:
            raise _sdk_error(exc) from None
        body = response.body
        code = str(getattr(body, "code", "") or "")
        if code != "OK":
            text = f"Aliyun SMS refused the message: {code} {short(getattr(body, 'message', ''))}"
            if code in TRANSIENT_CODES:
                raise TransientConnectorError(text, retry_after=TRANSIENT_CODES[code])
            raise ConnectorError(text)
        return Delivery(provider_ref=getattr(body, "biz_id", None), detail={"request_id": getattr(body, "request_id", None)})

    def _template_params(self, message: Message, settings: Mapping[str, Any], sign_name: str) -> dict[str, str]:
        given = message.params.get("template_params")
        if isinstance(given, Mapping):
            # The template text is Aliyun's, so its length and unsubscribe line are checked there.
            return {str(k): str(v) for k, v in given.items()}
        text = prepare_sms(message.params.get("text"), settings, counting="cn", signature=f"【{sign_name}】")
        return {str(settings.get("text_param") or "content"): text}


class _Sdk:
    """The SDK's pieces, imported on first use so that Careflow runs without the extra."""

    def __init__(self) -> None:
        from alibabacloud_dysmsapi20170525 import models
        from alibabacloud_dysmsapi20170525.client import Client
        from alibabacloud_tea_openapi.models import Config
        from alibabacloud_tea_util.models import RuntimeOptions
        from Tea.exceptions import TeaException

        self.models, self.Client, self.Config = models, Client, Config
        self.RuntimeOptions, self.TeaException = RuntimeOptions, TeaException


def _sdk() -> _Sdk:
    try:
        return _Sdk()
    except ImportError:
        raise ConnectorError(
            "the Aliyun SMS SDK is not installed; install it with: pip install careflow[aliyun]"
        ) from None


def _aliyun_number(value: Any) -> str:
    """Aliyun wants mainland numbers as 11 digits and others as country code + number, no '+'."""
    number = str(value or "")
    if not E164.match(number):
        raise ConnectorError(f"{number!r} is not a phone number in E.164 form (+8613800138000)")
    return number[3:] if number.startswith("+86") else number[1:]


def _sdk_error(exc: Exception) -> ConnectorError:
    status = getattr(exc, "status_code", None)
    code = str(getattr(exc, "code", "") or "")
    if status is None:  # a network failure, wrapped by the SDK as text only
        inner = str(getattr(exc, "inner_exception", "") or exc)
        if any(marker in inner for marker in _NOT_CONNECTED):
            return TransientConnectorError(f"could not reach Aliyun SMS: {short(inner, 200)}")
        return AmbiguousSendError(f"Aliyun SMS did not answer ({short(inner, 200)}); the message may have been sent")
    text = f"Aliyun SMS answered HTTP {status}: {code} {short(getattr(exc, 'message', '') or '')}"
    if int(status) in (408, 429) or int(status) >= 500 or code.startswith("Throttling"):
        retry = getattr(exc, "retry_after", None)
        return TransientConnectorError(text, retry_after=float(retry) if retry else None)
    return ConnectorError(text)
