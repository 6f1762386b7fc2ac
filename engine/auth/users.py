"""Users, their roles, team and region; passwords hashed with scrypt (werkzeug)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from connectors.net import IM_ID_RE as ROBOT_IM_ID_RE
from engine.contact import normalize_email
from engine.errors import Conflict, FieldError, NotFound, SubmissionInvalid
from engine.roles import BUILTIN_ROLES
from engine.store.models import User

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
#: Custom roles are identifiers like the built-in ones (``quality_auditor``).
ROLE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
TEAM_RE = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
MIN_PASSWORD = 10
LANGUAGES = ("zh", "en")
#: How reminders reach a user: by e-mail, on the team's IM, both, or not at all (the inbox only).
NOTIFY = ("email", "im", "both", "none")
EDITABLE = ("display_name", "email", "roles", "team", "region", "language", "active", "password", "notify", "im_id")
#: What users may change on their own profile page.
SELF_EDITABLE = ("language", "notify", "im_id")
IM_ID_RE = ROBOT_IM_ID_RE  # what the robots may put into their markdown as an @mention
#: Compared against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("careflow-timing-equaliser")


class UserLookupError(NotFound):
    """Raised when no user has the given name."""

    kind = "user"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def password_ok(user: User | None, password: str) -> bool:
    """True if the user exists, is active and the password matches; constant work either way."""
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    ok = check_password_hash(stored, password)
    return bool(ok and user is not None and user.active and user.password_hash)


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise UserLookupError(username)
    return user


def user_dict(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email,
        "roles": list(user.roles or []),
        "team": user.team,
        "region": user.region,
        "language": user.language,
        "notify": user.notify or "email",
        "im_id": user.im_id,
        "active": user.active,
        "created_at": user.created_at.isoformat(),
        "has_password": bool(user.password_hash),
    }


def _clean(data: Mapping[str, Any], creating: bool) -> tuple[dict[str, Any], list[FieldError]]:
    out: dict[str, Any] = {}
    errors: list[FieldError] = []

    def bad(name: str, message: str, code: str = "format") -> None:
        errors.append(FieldError(f"$.{name}", name, message, code))

    for key in data:
        if key not in EDITABLE and not (creating and key == "username"):
            bad(key, f"{key!r} cannot be set", "additionalProperties")
    if creating:
        username = data.get("username")
        if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
            bad("username", "a user name is 1-64 lowercase letters, digits, '.', '_' or '-'", "pattern")
        else:
            out["username"] = username
    if "display_name" in data or creating:
        name = data.get("display_name", data.get("username"))
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
            bad("display_name", "the display name must be 1-100 characters")
        else:
            out["display_name"] = name.strip()
    if "email" in data:
        email = data["email"]
        normal = normalize_email(email) if isinstance(email, str) and len(email) <= 254 else None
        if email not in (None, "") and normal is None:
            bad("email", "not an e-mail address")
        else:
            out["email"] = normal
    if "roles" in data:
        roles = data["roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) and ROLE_RE.fullmatch(r) for r in roles):
            bad("roles", "roles are a list of identifiers (lowercase letters, digits, '_')", "pattern")
        else:
            out["roles"] = list(dict.fromkeys(roles))
    for key in ("team", "region"):
        if key in data:
            value = data[key]
            if value is not None and (not isinstance(value, str) or not TEAM_RE.fullmatch(value.strip() or "\x00")):
                bad(key, f"the {key} must be 1-64 printable characters or null")
            else:
                out[key] = value.strip() if isinstance(value, str) else None
    if "language" in data:
        # None or "": not chosen, the browser's language decides the pages.
        if data["language"] not in (*LANGUAGES, None, ""):
            bad("language", f"the language is zh, en or null, not {str(data['language'])[:80]!r}", "enum")
        else:
            out["language"] = data["language"] or None
    if "notify" in data:
        if data["notify"] not in NOTIFY:
            bad("notify", "notify is one of " + ", ".join(NOTIFY) + f", not {str(data['notify'])[:80]!r}", "enum")
        else:
            out["notify"] = data["notify"]
    if "im_id" in data:
        im_id = data["im_id"]
        if im_id not in (None, "") and (not isinstance(im_id, str) or not IM_ID_RE.fullmatch(im_id.strip() or " ")):
            bad("im_id", f"the IM id is 1-64 letters, digits, _ . @ or -, or null, not {str(im_id)[:80]!r}", "pattern")
        else:
            out["im_id"] = im_id.strip() if isinstance(im_id, str) and im_id.strip() else None
    if "active" in data:
        if not isinstance(data["active"], bool):
            bad("active", "active is true or false", "type")
        else:
            out["active"] = data["active"]
    if "password" in data and data["password"] is not None:
        password = data["password"]
        if not isinstance(password, str) or len(password) < MIN_PASSWORD or len(password) > 256:
            bad("password", f"a password has {MIN_PASSWORD} to 256 characters", "minLength")
        else:
            out["password"] = password
    return out, errors


def create_user(session: Session, data: Mapping[str, Any], now: datetime) -> User:
    values, errors = _clean(data, creating=True)
    if errors:
        raise SubmissionInvalid(errors)
    if find_user(session, values["username"]) is not None:
        raise Conflict(f"a user named {values['username']!r} already exists")
    password = values.pop("password", None)
    user = User(
        username=values["username"], display_name=values["display_name"], email=values.get("email"),
        roles=values.get("roles", []), team=values.get("team"), region=values.get("region"),
        language=values.get("language"), active=values.get("active", True), created_at=now,
        notify=values.get("notify", "email"), im_id=values.get("im_id"),
        password_hash=hash_password(password) if password else None, session_epoch=0,
    )
    session.add(user)
    session.flush()
    return user


def update_user(session: Session, user: User, data: Mapping[str, Any]) -> list[str]:
    """Apply changes; returns the changed field names. A new password or deactivation ends web sessions."""
    values, errors = _clean(data, creating=False)
    if errors:
        raise SubmissionInvalid(errors)
    changed: list[str] = []
    password = values.pop("password", None)
    for key, value in values.items():
        if getattr(user, key) != value:
            setattr(user, key, value)
            changed.append(key)
    if password is not None:
        user.password_hash = hash_password(password)
        changed.append("password")
    if "password" in changed or ("active" in changed and not user.active):
        user.session_epoch = (user.session_epoch or 0) + 1
    return changed


def known_roles(session: Session) -> list[str]:
    roles = set(BUILTIN_ROLES)
    for user_roles in session.scalars(select(User.roles)):
        roles.update(user_roles or [])
    return sorted(roles)
