"""Inbound webhooks: per-hook HMAC-SHA256 secrets, signature and freshness checks.

The sender signs ``<timestamp>.<raw body>`` with the hook's secret and sends::

    X-Careflow-Timestamp: 1795489200            (Unix seconds)
    X-Careflow-Signature: sha256=<hex HMAC-SHA256>

The timestamp is part of the signed bytes, so it cannot be moved forward to replay an old
delivery; deliveries more than ``MAX_SKEW`` away from the server's clock are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Conflict, EngineError, FieldError, NotFound, SubmissionInvalid
from engine.secrets import SecretBox
from engine.store.models import WebhookEndpoint

MAX_SKEW = timedelta(minutes=5)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
IDENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


class HookLookupError(NotFound):
    """Raised when no webhook has the given name."""

    kind = "webhook"


class SignatureInvalid(EngineError):
    """Raised when a webhook delivery's signature is missing, wrong or stale."""

    code = "signature_invalid"
    status = 401


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str | None, given: str | None, body: bytes, now: datetime) -> None:
    """Raise SignatureInvalid unless the delivery is signed with secret and fresh."""
    if not timestamp or not given:
        raise SignatureInvalid("X-Careflow-Timestamp and X-Careflow-Signature are required")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureInvalid("X-Careflow-Timestamp must be Unix seconds")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), given.strip().encode("utf-8", "replace")):
        raise SignatureInvalid("the signature does not match")
    if abs(now.timestamp() - int(timestamp)) > MAX_SKEW.total_seconds():
        raise SignatureInvalid("the delivery is older than 5 minutes (or from the future)")


def get_hook(session: Session, name: str) -> WebhookEndpoint:
    hook = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.name == name)).first()
    if hook is None:
        raise HookLookupError(name)
    return hook


def _idents(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and IDENT_RE.fullmatch(v) for v in value):
        raise SubmissionInvalid([FieldError(f"$.{field}", field, f"{field} is a list of identifiers", "pattern")])
    return list(dict.fromkeys(value))


def create_hook(
    session: Session, box: SecretBox, name: str, *, flows: Iterable[str] | None, events: Iterable[str] | None,
    now: datetime, by: str | None,
) -> tuple[WebhookEndpoint, str]:
    """A new hook and its secret (returned once; stored encrypted with the connector keys)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SubmissionInvalid([FieldError("$.name", "name", "a hook name is 1-64 lowercase letters, digits, '_' or '-'", "pattern")])
    allowed_flows = _idents(list(flows) if flows is not None else None, "flows")
    allowed_events = _idents(list(events) if events is not None else None, "events")
    if session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.name == name)).first() is not None:
        raise Conflict(f"a webhook named {name!r} already exists")
    secret = new_secret()
    hook = WebhookEndpoint(name=name, secret=box.encrypt(secret), flows=allowed_flows, events=allowed_events,
                           active=True, created_at=now, created_by=by)
    session.add(hook)
    session.flush()
    return hook, secret


def hook_dict(hook: WebhookEndpoint) -> dict[str, Any]:
    return {
        "name": hook.name,
        "flows": list(hook.flows or []),
        "events": list(hook.events or []),
        "active": hook.active,
        "created_at": hook.created_at.isoformat(),
        "created_by": hook.created_by,
    }


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def rotate_secrets(session: Session, box: SecretBox) -> int:
    """Re-encrypt every webhook secret under the newest key (``careflow secrets rotate``)."""
    count = 0
    for hook in session.scalars(select(WebhookEndpoint)):
        hook.secret = box.rotate(hook.secret)
        count += 1
    return count
