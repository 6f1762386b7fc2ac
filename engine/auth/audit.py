"""The append-only audit log: who did what to which record, written in the same transaction.

Call :func:`audit` from any code that changes something an administrator must be able to trace
(sign-ins, deployments, task answers, customer changes, users, tokens, connectors, webhooks)::

    audit(session, "wang", "customer.update", "customer", 42, {"changed": ["phone"]})

The row is written in the caller's transaction, so it commits or rolls back with the change it
describes. Rows are never updated or deleted: the database refuses it (migration 0002).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from engine.clock import SystemClock
from engine.store.models import AuditEntry
from engine.store.rows import execute as execute_rows, pipelining, send as send_rows

#: Keys whose values never reach the log, at any depth.
SECRET_KEYS = frozenset({"password", "password_hash", "token", "secret", "secrets", "api_key", "authorization"})
_MAX_TEXT = 2000
_INSERT = insert(AuditEntry.__table__)  # type: ignore[arg-type]


_SCALARS = frozenset({int, float, bool, type(None)})


def scrub(value: Any) -> Any:
    """A copy of value with secrets masked and very long strings cut."""
    kind = type(value)  # the common exact types first: isinstance against Mapping costs more than the copy
    if kind is str:
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = k if type(k) is str else str(k)
            out[key] = "••••" if key.lower() in SECRET_KEYS else scrub(v)
        return out
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "…"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def audit(
    session: Session,
    actor: str | None,
    action: str,
    target_type: str | None = None,
    target_id: Any = None,
    data: Mapping[str, Any] | None = None,
    *,
    at: datetime | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Append one entry; ``action`` is ``area.verb`` (``task.complete``, ``login.failed``...)."""
    entry = AuditEntry(
        at=at or SystemClock().now(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        data=scrub(dict(data or {})),
        ip=ip,
    )
    session.add(entry)
    return entry


def audit_many(session: Session, entries: list[tuple[str | None, str, str | None, Any, Mapping[str, Any] | None]],
               *, at: datetime) -> None:
    """``audit`` for many (actor, action, target type, target id, data) at once: the same rows, with
    one statement (a batch of requests writes its entries so; the ORM would add one object each).
    On PostgreSQL it is sent without waiting for the server (``rows.send``), its errors raised by
    the next statement or the commit (engine/store/rows.py)."""
    if entries:
        conn = session.connection()
        (send_rows if pipelining(conn) else execute_rows)(conn, _INSERT, [
            {"at": at, "actor": actor, "action": action, "target_type": target_type,
             "target_id": None if target_id is None else str(target_id), "data": scrub(dict(data or {})), "ip": None}
            for actor, action, target_type, target_id, data in entries
        ])


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "data": entry.data,
        "ip": entry.ip,
    }


def list_entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditEntry], int]:
    """Entries newest first, and how many match; ``action`` ending in ``.`` matches a prefix."""
    from sqlalchemy import func

    query = select(AuditEntry)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True) if action.endswith(".") else AuditEntry.action == action)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).offset(offset).limit(limit))
    return list(rows), total
