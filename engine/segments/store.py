"""Segments as rows: create, change, delete, find; the names flows may use in a ``segment`` trigger."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Conflict, FieldError, NotFound, SubmissionInvalid
from engine.segments.filters import check_filter
from engine.store.models import Segment

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class SegmentLookupError(NotFound):
    """Raised when no segment has the name."""

    kind = "segment"

    def __init__(self, name: str):
        super().__init__(name, f"No segment named {name!r} was found")


def segment_dict(seg: Segment, members: int | None = None) -> dict[str, Any]:
    out = {
        "name": seg.name, "title": dict(seg.title), "filter": dict(seg.filter), "builtin": seg.builtin,
        "created_at": seg.created_at.isoformat(), "updated_at": seg.updated_at.isoformat(), "updated_by": seg.updated_by,
        "recomputed_at": seg.recomputed_at.isoformat() if seg.recomputed_at else None,
    }
    if members is not None:
        out["members"] = members
    return out


def segment_names(session: Session) -> frozenset[str]:
    return frozenset(session.scalars(select(Segment.name)))


def get_segment(session: Session, name: str) -> Segment:
    seg = session.scalars(select(Segment).where(Segment.name == name)).first()
    if seg is None:
        raise SegmentLookupError(name)
    return seg


def _title(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {"zh": name, "en": name}
    if isinstance(value, str) and value.strip():
        return {"zh": value, "en": value}
    if isinstance(value, Mapping) and value and set(value) <= {"zh", "en"} and all(isinstance(v, str) and v for v in value.values()):
        return {"zh": value.get("zh") or value["en"], "en": value.get("en") or value["zh"]}
    raise SubmissionInvalid([FieldError("$.title", "title", "title is a text or {zh, en}", "type")])


def create_segment(session: Session, data: Mapping[str, Any], now: datetime, by: str | None) -> Segment:
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SubmissionInvalid([FieldError("$.name", "name", "name must be lower-case letters, digits and _ (e.g. vip_shanghai)", "pattern")])
    unknown = set(data) - {"name", "title", "filter"}
    if unknown:
        key = sorted(unknown)[0]
        raise SubmissionInvalid([FieldError(f"$.{key}", key, "unknown field; a segment has name, title and filter", "additionalProperties")])
    flt = check_filter(data.get("filter", {}))
    title = _title(data.get("title"), name)
    if session.scalars(select(Segment.id).where(Segment.name == name)).first() is not None:
        raise Conflict(f"a segment named {name!r} already exists")
    seg = Segment(name=name, title=title, filter=flt, builtin=False, created_at=now, updated_at=now, updated_by=by)
    session.add(seg)
    session.flush()
    return seg


def update_segment(session: Session, name: str, data: Mapping[str, Any], now: datetime, by: str | None) -> Segment:
    seg = get_segment(session, name)
    unknown = set(data) - {"title", "filter"}
    if unknown:
        key = sorted(unknown)[0]
        raise SubmissionInvalid([FieldError(f"$.{key}", key, "only title and filter can be changed", "additionalProperties")])
    if "filter" in data:
        seg.filter = check_filter(data["filter"])
    if "title" in data:
        seg.title = _title(data["title"], name)
    seg.updated_at, seg.updated_by = now, by
    session.flush()
    return seg


def delete_segment(session: Session, name: str, used_by: list[str]) -> None:
    """Delete a segment no deployed flow triggers on; built-in ones stay."""
    seg = get_segment(session, name)
    if seg.builtin:
        raise Conflict(f"{name!r} is a built-in segment and cannot be deleted")
    if used_by:
        raise Conflict(f"segment {name!r} is used by the flows {', '.join(sorted(used_by))}")
    session.delete(seg)
    session.flush()
