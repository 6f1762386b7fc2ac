"""Admin settings kept as JSON in ``app_setting``, one row per key (``grading``, ``reminders``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from engine.store.models import AppSetting


def stored_setting(session: Session, key: str) -> dict[str, Any]:
    """The values stored under ``key`` ({} when nothing was saved yet)."""
    row = session.get(AppSetting, key)
    return dict(row.value) if row is not None else {}


def merge_setting(session: Session, key: str, values: Mapping[str, Any], now: datetime, by: str | None) -> None:
    """Merge ``values`` into the row under ``key`` (creating it), noting when and by whom.

    Keys not in ``values`` keep their stored value; a key given as ``None`` is stored as ``None``,
    which each setting's loader reads as "back to the default".
    """
    row = session.get(AppSetting, key)
    merged = {**(dict(row.value) if row is not None else {}), **values}
    if row is None:
        session.add(AppSetting(key=key, value=merged, updated_at=now, updated_by=by))
    else:
        row.value, row.updated_at, row.updated_by = merged, now, by
    session.flush()
