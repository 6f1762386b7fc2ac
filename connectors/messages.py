"""Message schemas: the parameters an ``action`` step may pass each connector (JSON Schema 2020-12).

``careflow validate`` and deploy check every action step's ``params`` against the schema of the
connector or channel it names, so a misspelt ``subjct`` or a missing ``text`` is reported at
its line and column instead of failing at send time. ``GET /api/connector-types`` and
``careflow connectors types`` show them.

Conventions the validator relies on: ``properties`` lists every parameter (with
``additionalProperties: false`` unknown ones are refused), ``x-hint`` says in words what a
``pattern`` means, and an ``anyOf`` of bare ``required`` lists means "one of these".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Marks the message as marketing: it then counts against the channel's weekly cap.
CATEGORY: Mapping[str, Any] = {
    "type": "string", "enum": ["service", "marketing"], "default": "service",
    "description": "marketing: counts against the channel's marketing_per_week cap",
}
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
PHONE: Mapping[str, Any] = {
    "type": "string", "pattern": E164_PATTERN, "x-hint": "must be a phone number in E.164 form (+8613800138000)",
    "description": "The recipient's phone number; default: the customer's phone",
}
EMAIL: Mapping[str, Any] = {
    "type": "string", "format": "email", "description": "The recipient's address; default: the customer's e-mail",
}
SUBJECT: Mapping[str, Any] = {"type": "string", "minLength": 1, "description": "The subject line (one line)"}
EMAIL_TEXT: Mapping[str, Any] = {"type": "string", "minLength": 1, "description": "The plain-text body"}
HTML: Mapping[str, Any] = {"type": "string", "description": "An HTML version of the body, sent alongside the text"}
SMS_TEXT: Mapping[str, Any] = {
    "type": "string", "minLength": 1,
    "description": "The SMS text; the provider's length rules and the unsubscribe text apply at sending",
}
TEMPLATE_CODE: Mapping[str, Any] = {
    "type": "string", "minLength": 1, "description": "Aliyun SMS only: another approved template than the default",
}
TEMPLATE_PARAMS: Mapping[str, Any] = {
    "type": "object", "additionalProperties": {"type": ["string", "number"]},
    "description": "Aliyun SMS only: the template's variables (then 'text' is not used)",
}


def _schema(properties: Mapping[str, Any], required: list[str] | None = None, one_of: list[str] | None = None,
            *, open_: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {**properties, "category": dict(CATEGORY)},
        "additionalProperties": open_,
    }
    if required:
        schema["required"] = required
    if one_of:
        schema["anyOf"] = [{"required": [name]} for name in one_of]
    return schema


#: A provider e-mail connector named directly (smtp, sendgrid): nothing routes it, so ``to`` is needed.
EMAIL_MESSAGE = _schema({"to": EMAIL, "subject": SUBJECT, "text": EMAIL_TEXT, "html": HTML}, ["to", "subject", "text"])
#: The ``email`` channel: the recipient comes from the customer's profile unless ``to`` is given.
EMAIL_CHANNEL_MESSAGE = _schema({"to": EMAIL, "subject": SUBJECT, "text": EMAIL_TEXT, "html": HTML}, ["subject", "text"])

TWILIO_MESSAGE = _schema({"to": PHONE, "text": SMS_TEXT}, ["to", "text"])
ALIYUN_MESSAGE = _schema(
    {"to": PHONE, "text": SMS_TEXT, "template_code": TEMPLATE_CODE, "template_params": TEMPLATE_PARAMS},
    ["to"], ["text", "template_params"],
)
#: The ``sms`` channel: any SMS provider may carry it, so Aliyun's template parameters are allowed too.
SMS_CHANNEL_MESSAGE = _schema(
    {"to": PHONE, "text": SMS_TEXT, "template_code": TEMPLATE_CODE, "template_params": TEMPLATE_PARAMS},
    None, ["text", "template_params"],
)
#: ``preferred`` goes out as an e-mail or an SMS, chosen per customer: it needs what both need.
PREFERRED_MESSAGE = _schema(
    {"subject": SUBJECT, "text": EMAIL_TEXT, "html": HTML, "template_code": TEMPLATE_CODE,
     "template_params": TEMPLATE_PARAMS},
    ["subject", "text"],
)

#: WeCom, DingTalk and Feishu group robots.
ROBOT_MESSAGE = _schema(
    {
        "text": {"type": "string", "minLength": 1, "description": "A text message"},
        "markdown": {"type": "string", "minLength": 1,
                     "description": "A markdown message (Feishu: an interactive card); used instead of text"},
        "subject": {"type": "string", "description": "The title: first line of a text, heading of markdown"},
        "mention": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 20,
                    "description": "People to @mention by their IM id (WeCom userid, DingTalk userId, Feishu open_id)"},
    },
    None, ["text", "markdown"],
)

#: A webhook's parameters are its payload: ``event`` names it, every other parameter goes into
#: the JSON body's ``params`` as it is, so any name is allowed.
WEBHOOK_MESSAGE = _schema(
    {"event": {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z0-9_.:-]{1,100}$",
               "x-hint": "must be an event name of letters, digits and . _ : - (vip.callback_needed)",
               "description": "The event name in the payload; default careflow.message"}},
    open_=True,
)

TIMELINE_MESSAGE = _schema({"text": {"type": "string", "minLength": 1, "description": "The note"}}, ["text"])


def parameter_names(schema: Mapping[str, Any]) -> list[str]:
    """The parameters a schema lists, required ones first."""
    required = list(schema.get("required") or [])
    return required + [name for name in schema.get("properties") or {} if name not in required]
