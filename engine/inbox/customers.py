"""Customer pages: the list (search, grade/region/tag/segment filters, pages), the profile and the timeline.

Only customers within the user's record scope (``visible_customers``) are listed or shown.
"""

from __future__ import annotations

from typing import Any

from flask import abort, render_template, request
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from sqlalchemy import func, or_, select

from engine.api.auth import careflow
from engine.auth.scope import STAFF, visible_customers, visible_instances, visible_tasks
from engine.inbox.views import bp, due_state, principal
from engine.store.definitions import latest_flow_versions
from engine.store.models import Customer, Instance, Segment, SegmentMember, Task, TimelineEntry, User
from engine.web import nav_item

PER_PAGE = 25
TIMELINE_PER_PAGE = 50
GRADES = ("A", "B", "C")


def _page_arg() -> int:
    raw = request.args.get("page", "1")
    return max(1, min(int(raw), 10_000)) if raw.isdigit() else 1


def _json_text(column: Any) -> Any:
    """A JSON column as text, for a containment search that works on SQLite and PostgreSQL."""
    from sqlalchemy import String, cast

    return cast(column, String)


@bp.get("/customers")
@login_required
def customers() -> Any:
    who = principal()
    if not who.roles & STAFF:
        abort(403)
    args = request.args
    q_text = args.get("q", "").strip()[:100]
    grade = args.get("grade", "") if args.get("grade") in GRADES else ""
    region = args.get("region", "").strip()[:64]
    tag = args.get("tag", "").strip()[:64]
    segment = args.get("segment", "").strip()[:64]
    page = _page_arg()
    cf = careflow()
    base = select(Customer).where(Customer.status != "deleted", visible_customers(who))
    with cf.session() as s:
        regions = sorted(r for r in s.scalars(select(Customer.region).where(
            Customer.status != "deleted", visible_customers(who), Customer.region.is_not(None)).distinct()) if r)
        segments = list(s.scalars(select(Segment).order_by(Segment.name)))
        segment_id = next((seg.id for seg in segments if seg.name == segment), None)
        segment = segment if segment_id is not None else ""
        q = base
        if segment_id is not None:
            q = q.where(Customer.id.in_(select(SegmentMember.customer_id).where(SegmentMember.segment_id == segment_id)))
        if q_text:
            q = q.where(or_(Customer.name.icontains(q_text, autoescape=True), Customer.phone.icontains(q_text, autoescape=True),
                            Customer.email.icontains(q_text, autoescape=True)))
        if grade:
            q = q.where(Customer.grade == grade)
        if region:
            q = q.where(Customer.region == region)
        if tag:
            q = q.where(_json_text(Customer.tags).contains(f'"{tag}"', autoescape=True))
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        pages = max(1, (total + PER_PAGE - 1) // PER_PAGE)
        page = min(page, pages)
        rows = list(s.scalars(q.order_by(Customer.name, Customer.id).offset((page - 1) * PER_PAGE).limit(PER_PAGE)))
        names = dict(s.execute(select(User.username, User.display_name)).all())
        html = render_template("inbox/customers.html", customers=rows, total=total, page=page, pages=pages, q=q_text,
                               grade=grade, region=region, tag=tag, regions=regions, grades=GRADES, names=names,
                               segment=segment, segments=segments,
                               args={k: v for k, v in {"q": q_text, "grade": grade, "region": region, "tag": tag,
                                                       "segment": segment}.items() if v})
    return html


@bp.get("/customers/<int:customer_id>")
@login_required
def customer(customer_id: int) -> Any:
    who = principal()
    cf = careflow()
    now = cf.clock.now()
    page = _page_arg()
    with cf.session() as s:
        row = s.scalars(select(Customer).where(Customer.id == customer_id, Customer.status != "deleted",
                                               visible_customers(who))).first()
        if row is None:
            abort(404)
        entries = select(TimelineEntry).where(TimelineEntry.customer_id == customer_id)
        total = s.scalar(select(func.count()).select_from(entries.subquery())) or 0
        pages = max(1, (total + TIMELINE_PER_PAGE - 1) // TIMELINE_PER_PAGE)
        page = min(page, pages)
        timeline = list(s.scalars(entries.order_by(TimelineEntry.at.desc(), TimelineEntry.id.desc())
                                  .offset((page - 1) * TIMELINE_PER_PAGE).limit(TIMELINE_PER_PAGE)))
        instances = list(s.scalars(select(Instance).where(Instance.customer_id == customer_id, visible_instances(who))
                                   .order_by(Instance.id.desc()).limit(50)))
        tasks = list(s.scalars(select(Task).join(Instance, Instance.id == Task.instance_id)
                               .where(Instance.customer_id == customer_id, Task.status == "open", visible_tasks(who))
                               .order_by(Task.due_at.is_(None), Task.due_at, Task.id)))
        flows = {v.flow_id: v.name for v in latest_flow_versions(s)}
        names = dict(s.execute(select(User.username, User.display_name)).all())
        html = render_template("inbox/customer.html", customer=row, timeline=timeline, instances=instances,
                               tasks=[(t, due_state(t, now)) for t in tasks], flows=flows, names=names,
                               page=page, pages=pages, total=total)
    return html


nav_item("inbox.customers", _l("Customers"), roles=STAFF, order=30)
