"""Connectors (admin): attach and change them, test a send, read the delivery log.

Secrets go in with the settings and never come back: responses show them masked. The settings a
connector takes and the message parameters a flow passes it are JSON Schemas, listed at
``GET /api/connector-types``; every message
and its delivery status is at ``GET /api/deliveries``.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Dict, Integer, List, Raw, String
from apiflask.validators import OneOf, Range
from flask import g

from engine.api.auth import careflow, requires, token_auth
from engine.api.schemas import DateTimeText, StrictBoolean, Text

bp = APIBlueprint("connectors", __name__, url_prefix="/api", tag="Connectors")

DELIVERY_STATES = ["pending", "claimed", "sending", "sent", "failed", "unknown", "suppressed", "skipped"]


class ConnectorTypeOut(Schema):
    type = String(required=True)
    channel = String(allow_none=True, required=True)
    idempotent = Boolean(required=True)
    settings_schema = Dict(required=True)
    message_schema = Dict(required=True, metadata={
        "description": "JSON Schema of the params an action step passes this connector; careflow validate checks them"})
    named_configurations = Boolean(required=True, metadata={
        "description": "Whether flows can name a configuration of this type: connector: TYPE/NAME"})


class ConnectorIn(Schema):
    type = Text(64, min_len=1, required=True, metadata={"description": "A connector type, see /api/connector-types"})
    settings = Dict(keys=String(), values=Raw(allow_none=True), load_default=dict)
    enabled = StrictBoolean(load_default=True)


class ConnectorOut(Schema):
    name = String(required=True)
    type = String(required=True)
    enabled = Boolean(required=True)
    settings = Dict(required=True, metadata={"description": "Secrets appear masked: ••••1234"})
    updated_at = DateTimeText(required=True)
    updated_by = String(allow_none=True, required=True)


class TestSendIn(Schema):
    to = Text(254, min_len=1, required=True, metadata={"description": "An e-mail address or phone number"})
    text = Text(2000, min_len=1, load_default="Careflow 测试消息 / test message")
    subject = Text(200, load_default="Careflow test")


class TestSendOut(Schema):
    status = String(required=True, validate=OneOf(DELIVERY_STATES))
    error = String(allow_none=True, required=True)
    provider_ref = String(allow_none=True, required=True)


class DeliveryQuery(Schema):
    status = String(validate=OneOf(DELIVERY_STATES))
    limit = Integer(load_default=50, validate=Range(min=1, max=500))


class DeliveryOut(Schema):
    id = Integer(required=True)
    connector = String(required=True)
    channel = String(allow_none=True, required=True)
    status = String(required=True)
    attempts = Integer(required=True)
    customer_id = Integer(allow_none=True, required=True)
    instance_id = Integer(allow_none=True, required=True)
    step = String(allow_none=True, required=True)
    error = String(allow_none=True, required=True)
    created_at = DateTimeText(required=True)
    sent_at = DateTimeText(allow_none=True, required=True)


@bp.get("/connector-types")
@bp.auth_required(token_auth)
@bp.output(ConnectorTypeOut(many=True))
@requires("connectors.admin")
def list_types() -> Any:
    """Every installed connector type with the settings it takes and the message parameters flows pass it."""
    registry = careflow().registry
    configurable = registry.configurable()
    out = []
    for name in sorted(registry.names()):
        connector = registry.get(name)
        out.append({"type": name, "channel": connector.channel, "idempotent": bool(connector.idempotent),
                    "settings_schema": dict(connector.settings_schema), "message_schema": dict(connector.message_schema),
                    "named_configurations": name in configurable})
    return out


@bp.get("/connectors")
@bp.auth_required(token_auth)
@bp.output(ConnectorOut(many=True))
@requires("connectors.admin")
def list_connectors() -> Any:
    """Attached connectors, secrets masked."""
    return careflow().connectors()


@bp.put("/connectors/<ident:name>")
@bp.auth_required(token_auth)
@bp.input(ConnectorIn, arg_name="body", example={"type": "smtp", "settings": {
    "host": "smtp.example.com", "port": 587, "security": "starttls", "username": "care",
    "password": "app-password", "from_address": "care@example.com"}})
@bp.output(ConnectorOut)
@bp.doc(responses={409: "The name belongs to a connector of another type", 422: "Invalid name, type or settings"})
@requires("connectors.admin")
def put_connector(name: str, body: dict[str, Any]) -> Any:
    """Attach or change a connector; a secret left out keeps its stored value."""
    return careflow().save_connector(name, body["type"], body["settings"], by=g.principal.username,
                                     enabled=body["enabled"])


@bp.post("/connectors/<ident:name>/test")
@bp.auth_required(token_auth)
@bp.input(TestSendIn, arg_name="body", example={"to": "care@example.com", "text": "测试 / test"})
@bp.output(TestSendOut)
@requires("connectors.admin")
def test_send(name: str, body: dict[str, Any]) -> Any:
    """Send one message now through a connector or channel and report what the provider answered."""
    return careflow().test_send(name, body["to"], body["text"], body["subject"])


@bp.get("/deliveries")
@bp.auth_required(token_auth)
@bp.input(DeliveryQuery, location="query", arg_name="query")
@bp.output(DeliveryOut(many=True))
@requires("connectors.admin")
def deliveries(query: dict[str, Any]) -> Any:
    """The delivery log, newest first: status, attempts and the last error of every message."""
    return careflow().delivery_log(status=query.get("status"), limit=query["limit"])
