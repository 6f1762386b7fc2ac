"""Grading (RFM, A/B/C), churn risk, segments that trigger flows, survey answers and NPS."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.orm import Session

from engine.segments.grading import recompute_grades
from engine.segments.membership import recompute_memberships
from engine.segments.settings import load as load_settings
from engine.store.instances import Runtime


def recompute(session: Session, rt: Runtime, customer_ids: Collection[int] | None = None) -> dict[str, Any]:
    """Grades, RFM and churn risk, then every segment's members (starting the flows entries trigger)."""
    settings = load_settings(session)
    grading = recompute_grades(session, rt.now, settings, customer_ids)
    membership = recompute_memberships(session, rt, settings, customer_ids)
    return {"grading": grading.as_dict(), "segments": membership.as_dict()}


__all__ = ["recompute"]
