"""Segment memberships: who is in each segment, kept by the recompute, and the flows entries start.

An entry is a new ``segment_member`` row and a leave is its deletion, in the same transaction as
the instances they start: the primary key makes a second recompute racing this one fail instead
of entering (and starting flows for) the same customers twice.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from engine.segments.filters import member_ids
from engine.segments.settings import GradingSettings
from engine.store.definitions import flow_of, latest_flow_versions
from engine.store.instances import NotEnrolled, Runtime, start_instance
from engine.store.models import Customer, Segment, SegmentMember

log = logging.getLogger(__name__)

#: Customers a segment trigger starts no flow for.
NOT_STARTED = ("lost", "deleted")
_CHUNK = 500


@dataclass
class MembershipReport:
    entered: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)
    instances_started: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"entered": self.entered, "left": self.left, "members": self.members, "instances_started": self.instances_started}


def segment_flows(session: Session) -> list[tuple[str, str, str]]:
    """(flow id, segment name, enter|leave) of every deployed segment trigger."""
    out = []
    for version in latest_flow_versions(session):
        flow = flow_of(version)
        for trig in flow.triggers:
            if trig.type == "segment" and trig.segment:
                out.append((flow.id, trig.segment, trig.event or "enter"))
    return out


def segment_memberships(session: Session) -> dict[int, list[str]]:
    """customer id → names of the segments the customer is in (as of the last recompute)."""
    out: dict[int, list[str]] = {}
    query = select(SegmentMember.customer_id, Segment.name).join(Segment, Segment.id == SegmentMember.segment_id)
    for cid, name in session.execute(query.order_by(SegmentMember.customer_id, Segment.name)):
        out.setdefault(cid, []).append(name)
    return out


def recompute_memberships(
    session: Session, rt: Runtime, settings: GradingSettings, customer_ids: Collection[int] | None = None,
    names: Iterable[str] | None = None,
) -> MembershipReport:
    report = MembershipReport()
    query = select(Segment).order_by(Segment.name)
    if names is not None:
        query = query.where(Segment.name.in_(list(names)))
    triggers = segment_flows(session)
    wanted = set(customer_ids) if customer_ids is not None else None
    for seg in session.scalars(query).all():
        now_in = member_ids(session, seg.filter, rt.now, settings.timezone)
        before = set(session.scalars(select(SegmentMember.customer_id).where(SegmentMember.segment_id == seg.id)))
        if wanted is not None:
            now_in &= wanted
            before &= wanted
        entered, left = sorted(now_in - before), sorted(before - now_in)
        if entered:
            for i in range(0, len(entered), _CHUNK):
                session.execute(insert(SegmentMember.__table__), [
                    {"segment_id": seg.id, "customer_id": cid, "entered_at": rt.now} for cid in entered[i:i + _CHUNK]])
        for i in range(0, len(left), _CHUNK):
            session.execute(delete(SegmentMember).where(
                SegmentMember.segment_id == seg.id, SegmentMember.customer_id.in_(left[i:i + _CHUNK])))
        seg.recomputed_at = rt.now
        report.entered[seg.name], report.left[seg.name] = len(entered), len(left)
        report.members[seg.name] = _count(session, seg.id)
        for flow_id, name, event in triggers:
            if name != seg.name:
                continue
            report.instances_started += _start(session, rt, flow_id, seg.name, event, entered if event == "enter" else left)
    session.flush()
    return report


def _count(session: Session, segment_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == segment_id)) or 0)


def _start(session: Session, rt: Runtime, flow_id: str, segment: str, event: str, customer_ids: list[int]) -> int:
    """Start the flow for each customer that entered (or left), under the flow's enrollment policy."""
    if not customer_ids:
        return 0
    startable: list[int] = []
    for i in range(0, len(customer_ids), _CHUNK):
        startable += session.scalars(select(Customer.id).where(
            Customer.id.in_(customer_ids[i:i + _CHUNK]), Customer.status.not_in(NOT_STARTED)))
    started = 0
    trigger = {"type": "segment", "segment": segment, "event": event}
    for cid in sorted(startable):
        try:
            with session.begin_nested():
                start_instance(session, rt, flow_id, customer_id=cid, trigger=trigger)
            started += 1
        except NotEnrolled:
            continue
    return started
