"""Mixed into ``Careflow``: recompute, segments, a customer's grading and risk, survey reports."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from engine.auth.audit import audit
from engine.clock import Clock
from engine.errors import CustomerLookupError
from engine.segments import recompute, settings as grading_settings
from engine.segments import store as seg_store
from engine.segments.membership import segment_flows
from engine.segments.surveys import nps_report
from engine.store.instances import Runtime
from engine.store.models import Customer, Segment, SegmentMember


def grading_dict(c: Customer) -> dict[str, Any]:
    """A customer's grade, RFM scores, churn risk (explained) and latest survey scores."""
    cell = f"{c.rfm_r}{c.rfm_f}{c.rfm_m}" if c.rfm_r is not None else None
    return {
        "grade": c.grade,
        "rfm": {"r": c.rfm_r, "f": c.rfm_f, "m": c.rfm_m, "cell": cell},
        "churn_score": c.churn_score,
        "churn_reason": dict(c.churn_reason) if c.churn_reason else None,
        "graded_at": c.graded_at.isoformat() if c.graded_at else None,
        "last_nps": c.last_nps,
        "last_satisfaction": c.last_satisfaction,
        "last_survey_at": c.last_survey_at.isoformat() if c.last_survey_at else None,
    }


def member_dict(c: Customer) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "region": c.region, "owner": c.owner, "status": c.status, **grading_dict(c)}


def erase_grading(session: Session, customer: Customer) -> None:
    """Part of erasing a customer: scores, churn explanation and memberships go too."""
    for name in ("first_purchase_at", "rfm_r", "rfm_f", "rfm_m", "churn_score", "churn_reason", "graded_at",
                 "last_nps", "last_satisfaction", "last_survey_at"):
        setattr(customer, name, None)
    session.execute(delete(SegmentMember).where(SegmentMember.customer_id == customer.id))


class SegmentOperations:
    """Relies on ``Careflow``'s sessions, clock and runtime."""

    sessions: sessionmaker[Session]
    clock: Clock
    runtime: Callable[[], Runtime]

    def recompute_segments(self, customer_ids: Collection[int] | None = None, *, actor: str | None = None) -> dict[str, Any]:
        """Grades, RFM, churn risk and segment memberships now, for everyone or for ``customer_ids``
        (an import calls it with the customers it created or changed); entries start their flows."""
        ids = None if customer_ids is None else sorted(set(customer_ids))
        for attempt in (1, 2):
            try:
                with self.sessions.begin() as s:
                    rt = self.runtime()
                    result = recompute(s, rt, ids)
                    if actor is not None:
                        audit(s, actor, "segments.recompute", "segment", None,
                              {"customers": result["grading"]["customers"], "entered": result["segments"]["entered"]}, at=rt.now)
                    return result
            except IntegrityError:
                # Another recompute entered the same customers first and committed; run again on its result.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def segments(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            counts = dict(s.execute(select(SegmentMember.segment_id, func.count()).group_by(SegmentMember.segment_id)).all())
            return [seg_store.segment_dict(seg, counts.get(seg.id, 0)) for seg in s.scalars(select(Segment).order_by(Segment.name))]

    def segment(self, name: str) -> dict[str, Any]:
        with self.sessions() as s:
            seg = seg_store.get_segment(s, name)
            count = s.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == seg.id))
            out = seg_store.segment_dict(seg, int(count or 0))
            out["flows"] = sorted({f"{flow}:{event}" for flow, segment, event in segment_flows(s) if segment == name})
            return out

    def create_segment(self, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            now = self.clock.now()
            seg = seg_store.create_segment(s, data, now, actor)
            audit(s, actor, "segment.create", "segment", seg.name, {"filter": seg.filter}, at=now)
            return seg_store.segment_dict(seg, 0)

    def update_segment(self, name: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            now = self.clock.now()
            seg = seg_store.update_segment(s, name, data, now, actor)
            audit(s, actor, "segment.update", "segment", seg.name, dict(data), at=now)
            return seg_store.segment_dict(seg)

    def delete_segment(self, name: str, *, actor: str | None = None) -> None:
        with self.sessions.begin() as s:
            used_by = [flow for flow, segment, _event in segment_flows(s) if segment == name]
            seg_store.delete_segment(s, name, used_by)
            audit(s, actor, "segment.delete", "segment", name, {}, at=self.clock.now())

    def segment_members(self, name: str, *, limit: int = 100, offset: int = 0, where: Any = None) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page of members by id); ``where`` narrows to the customers a caller may see."""
        with self.sessions() as s:
            seg = seg_store.get_segment(s, name)
            query = select(Customer).join(SegmentMember, SegmentMember.customer_id == Customer.id).where(
                SegmentMember.segment_id == seg.id)
            if where is not None:
                query = query.where(where)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(Customer.id).limit(limit).offset(offset))
            return int(total), [member_dict(c) for c in rows]

    def customer_grading(self, customer_id: int) -> dict[str, Any]:
        """The customer's grade, RFM cell, churn risk with its explanation, and segments."""
        with self.sessions() as s:
            c = s.get(Customer, customer_id)
            if c is None or c.status == "deleted":
                raise CustomerLookupError(customer_id)
            names = list(s.scalars(select(Segment.name).join(SegmentMember, SegmentMember.segment_id == Segment.id)
                                   .where(SegmentMember.customer_id == customer_id).order_by(Segment.name)))
            return {"id": c.id, "name": c.name, **grading_dict(c), "segments": names}

    def nps_report(self, by: str = "month", start: date | None = None, end: date | None = None) -> dict[str, Any]:
        with self.sessions() as s:
            return nps_report(s, by, start, end, grading_settings.load(s).timezone)

    def grading_settings(self) -> dict[str, Any]:
        with self.sessions() as s:
            return grading_settings.load(s).as_dict()

    def set_grading_settings(self, values: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            now = self.clock.now()
            result = grading_settings.save(s, values, now, actor).as_dict()
            audit(s, actor, "grading.settings", "setting", "grading", dict(values), at=now)
            return result
