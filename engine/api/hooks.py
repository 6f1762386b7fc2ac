"""Inbound webhooks: ``POST /api/hooks/<name>``, signed with the hook's HMAC secret.

Not authenticated with a Bearer token: the signature is the authentication (see
``engine.auth.hooks``). A delivery with an ``Idempotency-Key`` already acted on returns the first
result (with ``Idempotent-Replayed: true``) and does nothing else.
"""

from __future__ import annotations

from typing import Any, cast

from apiflask import APIBlueprint
from flask import request

from engine.api.auth import careflow
from engine.api.schemas import HookResultOut
from engine.api.spec import header_params, request_body
from engine.auth.operations import HOOK_PAYLOAD

bp = APIBlueprint("hooks", __name__, url_prefix="/api/hooks", tag="Webhooks")

MAX_BODY = 256 * 1024


@bp.post("/<username:name>")
@bp.output(HookResultOut, status_code=201, description="An instance was started")
@bp.doc(responses=cast(Any, {
    200: {"description": "The event was delivered",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HookResultOut"}}}},
    401: "Signature missing, wrong, or the timestamp is more than 5 minutes off",
    403: "The webhook may not start this flow or deliver this event",
    404: "No such webhook",
    409: "Not enrolled, no instance waits for the event, or the Idempotency-Key was used for another payload",
    413: "The body is larger than 256 KiB",
    422: "The payload does not match the schema, or names a flow, instance or customer that does not exist",
}))
@request_body({"application/json": {"schema": HOOK_PAYLOAD}})
@header_params(
    {"in": "header", "name": "X-Careflow-Timestamp", "required": True,
     "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}, "description": "Unix seconds when the delivery was signed."},
    {"in": "header", "name": "X-Careflow-Signature", "required": True,
     "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
     "description": "sha256=<hex HMAC-SHA256 of '<timestamp>.<raw body>' with the hook's secret>"},
    {"in": "header", "name": "Idempotency-Key", "required": False,
     "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"},
     "description": "A retried delivery with the same key acts once and returns the first result."},
)
def receive(name: str) -> Any:
    """Start a flow or deliver an event, for a shop, CRM or other system."""
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY:
        from engine.api.errors import ApiError

        raise ApiError(413)
    result = careflow().receive_webhook(
        name, body,
        timestamp=request.headers.get("X-Careflow-Timestamp"),
        signature=request.headers.get("X-Careflow-Signature"),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return result.body, result.status, headers


__all__ = ["bp"]
