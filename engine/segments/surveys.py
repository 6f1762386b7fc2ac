"""Survey answers: satisfaction (1–5) and NPS (0–10) given through customer links.

An answer is stored as a ``survey_answer`` row (with its instance and flow), as the customer's
latest score, and a detractor (NPS 0–6) starts complaint handling for the customer, under the
complaint flow's enrollment policy. NPS = % promoters (9–10) − % detractors (0–6).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.store.customers import add_timeline, customer_by_id
from engine.store.instances import NotEnrolled, Runtime, start_instance
from engine.store.models import Instance, SurveyAnswer

log = logging.getLogger(__name__)

#: Forms whose answers are survey scores, and the field each score is in.
SURVEY_FIELDS: dict[str, dict[str, str]] = {
    "satisfaction_survey": {"satisfaction": "score", "nps": "nps"},
    "nps_survey": {"nps": "score"},
}
DETRACTOR_MAX = 6
PROMOTER_MIN = 9
COMPLAINT_FLOW = "complaint"


@dataclass(frozen=True, slots=True)
class Recorded:
    answers: list[int]
    complaint_instance: int | None


def record_answer(session: Session, rt: Runtime, instance: Instance, form_id: str, data: Mapping[str, Any]) -> Recorded | None:
    """Store the scores of a survey answer; start a complaint for a detractor. None for other forms."""
    fields = SURVEY_FIELDS.get(form_id)
    if fields is None:
        return None
    ids: list[int] = []
    scores: dict[str, int] = {}
    for kind, key in fields.items():
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            scores[kind] = value
            row = SurveyAnswer(customer_id=instance.customer_id, instance_id=instance.id, flow_id=instance.flow_id,
                               form_id=form_id, kind=kind, score=value, answered_at=rt.now)
            session.add(row)
            session.flush()
            ids.append(row.id)
    complaint = None
    customer = customer_by_id(session, instance.customer_id) if instance.customer_id is not None else None
    if customer is not None and scores:
        if "nps" in scores:
            customer.last_nps = scores["nps"]
        if "satisfaction" in scores:
            customer.last_satisfaction = scores["satisfaction"]
        customer.last_survey_at = rt.now
        add_timeline(session, customer.id, rt.now, "survey", {
            "zh": "调查回复：" + "，".join(f"{'NPS' if k == 'nps' else '满意度'} {v}" for k, v in scores.items()),
            "en": "Survey answer: " + ", ".join(f"{'NPS' if k == 'nps' else 'satisfaction'} {v}" for k, v in scores.items()),
        }, {"scores": scores, "form": form_id}, instance.id)
        if scores.get("nps", 10) <= DETRACTOR_MAX:
            complaint = _open_complaint(session, rt, customer.id, scores["nps"], str(data.get("comment") or ""))
    return Recorded(ids, complaint)


def _open_complaint(session: Session, rt: Runtime, customer_id: int, score: int, comment: str) -> int | None:
    intake = {
        "subject": f"NPS 低分 {score} 分 / NPS detractor, score {score}",
        "description": comment.strip() or f"客户在 NPS 调查中打了 {score} 分 / The customer gave {score} in the NPS survey",
    }
    try:
        with session.begin_nested():
            return start_instance(session, rt, COMPLAINT_FLOW, customer_id=customer_id, data={"complaint_intake": intake},
                                  trigger={"type": "survey", "kind": "nps", "score": score}).id
    except NotEnrolled:
        return None


def nps_of(scores: list[int]) -> dict[str, Any]:
    n = len(scores)
    promoters = sum(1 for s in scores if s >= PROMOTER_MIN)
    detractors = sum(1 for s in scores if s <= DETRACTOR_MAX)
    return {
        "answers": n, "promoters": promoters, "passives": n - promoters - detractors, "detractors": detractors,
        "nps": round(100.0 * (promoters - detractors) / n, 1) if n else None,
    }


def nps_report(session: Session, by: str, start: date | None, end: date | None, tz: str = "Asia/Shanghai") -> dict[str, Any]:
    """NPS per month (``YYYY-MM`` in ``tz``) or per flow, over answers from ``start`` to ``end`` inclusive."""
    zone = ZoneInfo(tz)
    # Days beyond these would overflow when shifted to UTC; no answer is that old or that new.
    if start is not None and start < _FIRST:
        start = _FIRST
    if end is not None and end > _LAST:
        end = _LAST
    query = select(SurveyAnswer.flow_id, SurveyAnswer.score, SurveyAnswer.answered_at).where(SurveyAnswer.kind == "nps")
    if start is not None:
        query = query.where(SurveyAnswer.answered_at >= datetime.combine(start, time(0), zone))
    if end is not None:
        query = query.where(SurveyAnswer.answered_at < datetime.combine(end, time(0), zone) + _DAY)
    groups: dict[str, list[int]] = defaultdict(list)
    everything: list[int] = []
    for flow_id, score, at in session.execute(query):
        key = at.astimezone(zone).strftime("%Y-%m") if by == "month" else (flow_id or "")
        groups[key].append(score)
        everything.append(score)
    return {
        "by": by, "from": start.isoformat() if start else None, "to": end.isoformat() if end else None,
        "total": nps_of(everything),
        "groups": [{"key": key, **nps_of(scores)} for key, scores in sorted(groups.items())],
    }



_DAY = timedelta(days=1)
_FIRST, _LAST = date(1970, 1, 1), date(9000, 1, 1)
