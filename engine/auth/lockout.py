"""Sign-in lockout: after MAX_FAILURES wrong passwords for one user name from one address within
WINDOW, that pair is refused for LOCK_FOR. Attempts are rows, so the limit holds across processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from engine.store.models import LoginAttempt

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCK_FOR = timedelta(minutes=15)
#: Attempt rows older than this are removed when new ones are written.
KEEP = timedelta(days=7)


def _key(username: str, ip: str) -> tuple[str, str]:
    return username.strip().lower()[:64], (ip or "-")[:64]


def locked_until(session: Session, username: str, ip: str, now: datetime) -> datetime | None:
    """When the pair may try again, or None if it may try now."""
    user, addr = _key(username, ip)
    last_ok = session.scalar(
        select(func.max(LoginAttempt.at)).where(LoginAttempt.username == user, LoginAttempt.ip == addr, LoginAttempt.ok.is_(True))
    )
    since = now - WINDOW
    if last_ok is not None and last_ok > since:
        since = last_ok
    failures = list(session.scalars(
        select(LoginAttempt.at)
        .where(LoginAttempt.username == user, LoginAttempt.ip == addr, LoginAttempt.ok.is_(False), LoginAttempt.at > since)
        .order_by(LoginAttempt.at.desc())
        .limit(MAX_FAILURES)
    ))
    if len(failures) < MAX_FAILURES:
        return None
    until = failures[0] + LOCK_FOR
    return until if until > now else None


def record(session: Session, username: str, ip: str, ok: bool, now: datetime) -> None:
    user, addr = _key(username, ip)
    session.add(LoginAttempt(username=user, ip=addr, at=now, ok=ok))
    if ok:
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - KEEP))
