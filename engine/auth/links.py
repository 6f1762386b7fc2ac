"""Customer links: signed, expiring, single-use tokens that open one form for one instance.

The URL carries ``itsdangerous`` signed data ``{"l": <link id>, "n": <nonce>}``; the row holds the
instance, the form, the event the answer is delivered as, the expiry and whether it was used.
A tampered token fails the signature, an unknown nonce finds no row, and a used or expired row
is refused, so each link acts at most once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import EngineError
from engine.store.models import CustomerLink

SALT = "careflow.customer-link"
EVENT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class LinkInvalid(EngineError):
    """Raised when a customer link is tampered with or unknown."""

    code = "link_invalid"
    status = 400


class LinkGone(EngineError):
    """Raised when a customer link was already used or has expired."""

    code = "link_gone"
    status = 410


@dataclass(frozen=True, slots=True)
class LinkRef:
    id: int
    nonce: str


def _serializer(secret: str | bytes) -> URLSafeSerializer:
    if not secret:
        raise ValueError("customer links need the application's secret key")
    return URLSafeSerializer(secret, salt=SALT)


def sign(secret: str | bytes, link: CustomerLink) -> str:
    return str(_serializer(secret).dumps({"l": link.id, "n": link.nonce}))


def unsign(secret: str | bytes, token: str) -> LinkRef:
    """The link a token names; LinkInvalid when the signature or the shape is wrong."""
    if len(token) > 500:
        raise LinkInvalid("this link is not valid")
    try:
        data = _serializer(secret).loads(token)
    except BadSignature as exc:
        raise LinkInvalid("this link is not valid") from exc
    if not isinstance(data, dict) or not isinstance(data.get("l"), int) or not isinstance(data.get("n"), str):
        raise LinkInvalid("this link is not valid")
    return LinkRef(data["l"], data["n"])


def new_link(
    session: Session, instance_id: int, form_id: str, event: str, *, now: datetime, expires_at: datetime, by: str | None
) -> CustomerLink:
    link = CustomerLink(
        nonce=secrets.token_urlsafe(24), instance_id=instance_id, form_id=form_id, event=event,
        created_at=now, created_by=by, expires_at=expires_at,
    )
    session.add(link)
    session.flush()
    return link


def find_link(session: Session, ref: LinkRef) -> CustomerLink:
    link = session.scalars(select(CustomerLink).where(CustomerLink.id == ref.id, CustomerLink.nonce == ref.nonce)).first()
    if link is None:
        raise LinkInvalid("this link is not valid")
    return link


def check_usable(link: CustomerLink, now: datetime) -> None:
    if link.used_at is not None:
        raise LinkGone("this link has already been used")
    if link.expires_at <= now:
        raise LinkGone("this link has expired")
