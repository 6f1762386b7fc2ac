"""Bearer tokens: random, shown once, stored as SHA-256, with scopes; revocable.

A token is ``cf_`` followed by 43 URL-safe characters (256 random bits), so a plain SHA-256 is
enough to store it: there is nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Conflict, FieldError, NotFound, SubmissionInvalid
from engine.store.models import ApiToken, User

PREFIX = "cf_"
#: read: GET; write: change records; admin: users, tokens, audit, incidents, webhooks.
SCOPES = ("read", "write", "admin")
#: last_used_at is written at most this often per token, so reads do not all become writes.
TOUCH_EVERY = timedelta(minutes=1)


class TokenLookupError(NotFound):
    """Raised when no API token has the given id."""

    kind = "token"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_scopes(scopes: Iterable[str], user: User) -> list[str]:
    chosen = list(dict.fromkeys(scopes))
    errors = []
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        errors.append(FieldError("$.scopes", "scopes", f"scopes must be a non-empty list of {', '.join(SCOPES)}", "enum"))
    if "admin" in chosen and "admin" not in (user.roles or []):
        errors.append(FieldError("$.scopes", "scopes", f"{user.username} is not an admin, so the token cannot have the admin scope", "forbidden"))
    if errors:
        raise SubmissionInvalid(errors)
    return [s for s in SCOPES if s in chosen]


def create_token(
    session: Session,
    user: User,
    scopes: Iterable[str],
    *,
    name: str = "",
    by: str | None,
    now: datetime,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token for user; returns the row and the token text, which is never stored."""
    if not user.active:
        raise Conflict(f"user {user.username!r} is deactivated")
    chosen = check_scopes(scopes, user)
    secret = new_secret()
    row = ApiToken(
        user_id=user.id, name=(name or "").strip()[:100] or "token", token_hash=digest(secret), prefix=secret[:10],
        scopes=chosen, created_at=now, created_by=by, expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, token: str, now: datetime) -> tuple[ApiToken, User] | None:
    """The token row and its user, or None if the token is unknown, revoked, expired or the user inactive."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest(token))).first()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    return row, user


def get_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenLookupError(token_id)
    return row


def revoke(session: Session, token_id: int, *, by: str | None, now: datetime) -> ApiToken:
    row = get_token(session, token_id)
    if row.revoked_at is None:
        row.revoked_at = now
        row.revoked_by = by
    return row


def list_tokens(session: Session, username: str | None = None, include_revoked: bool = False) -> list[tuple[ApiToken, str]]:
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if username is not None:
        query = query.where(User.username == username)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [(t, u) for t, u in session.execute(query.order_by(ApiToken.id))]


def token_dict(row: ApiToken, username: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": username,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes or []),
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }
