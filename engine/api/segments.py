"""Segments (saved customer filters) and their members, the recompute, and the NPS report.

Members are customers, so the member list is filtered by the caller's record scope like
``GET /api/customers``; segment definitions and counts are visible to all staff.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Date, Dict, Float, Integer, List, Nested, Raw, String
from apiflask.validators import Length, OneOf, Range
from flask import g
from sqlalchemy import select

from engine.api.auth import careflow, requires, token_auth
from engine.api.present import customer_out, page, paged
from engine.api.schemas import CustomerOut, DateTimeText, PageQuery, StrictInteger, Text, page_of
from engine.auth.scope import visible_customers
from engine.core import DELETED
from engine.segments.store import get_segment
from engine.store.models import Customer, SegmentMember

bp = APIBlueprint("segments", __name__, url_prefix="/api", tag="Segments")

FILTER_DOC = ("Conditions all members meet: grade, status, region, owner, tags_any, tags_all (lists), rfm_cell "
              "(e.g. [\"555\"]), recency_score / frequency_score / monetary_score / nps / satisfaction ({min, max}), "
              "churn_risk_above, last_purchase_before / last_purchase_after (YYYY-MM-DD or {days_ago}), "
              "birthday_month (1–12 or \"current\"). 分群条件。")


class SegmentIn(Schema):
    name = Text(64, min_len=1, required=True, metadata={"pattern": "^[a-z][a-z0-9_]{0,63}$", "example": "vip_shanghai"})
    title = Raw(metadata={"description": "A text or {zh, en}.", "example": {"zh": "上海 VIP", "en": "Shanghai VIP"}})
    filter = Dict(keys=String(), load_default=dict, metadata={"description": FILTER_DOC})


class SegmentPatch(Schema):
    title = Raw(metadata={"description": "A text or {zh, en}."})
    filter = Dict(keys=String(), metadata={"description": FILTER_DOC})


class SegmentOut(Schema):
    name = String(required=True)
    title = Dict(keys=String(), values=String(), required=True)
    filter = Dict(required=True)
    builtin = Boolean(required=True)
    created_at = DateTimeText(required=True)
    updated_at = DateTimeText(required=True)
    updated_by = String(allow_none=True, required=True)
    recomputed_at = DateTimeText(allow_none=True, required=True)
    members = Integer(required=True, metadata={"description": "Members at the last recompute (all customers)."})
    flows = List(String(), metadata={"description": "flow:enter|leave of the flows this segment triggers."})


class RecomputeIn(Schema):
    customer_ids = List(StrictInteger(validate=Range(min=1, max=2**63 - 1)), validate=Length(max=100_000),
                        metadata={"description": "Only these customers (default: everyone)."})


class RecomputeOut(Schema):
    grading = Dict(required=True)
    segments = Dict(required=True)


class NpsQuery(Schema):
    by = String(load_default="month", validate=OneOf(["month", "flow"]))
    from_ = Date(data_key="from", metadata={"description": "First day (Asia/Shanghai), YYYY-MM-DD."})
    to = Date(metadata={"description": "Last day, inclusive."})


class NpsFigures(Schema):
    answers = Integer(required=True)
    promoters = Integer(required=True)
    passives = Integer(required=True)
    detractors = Integer(required=True)
    nps = Float(allow_none=True, required=True, metadata={"description": "% promoters (9–10) − % detractors (0–6)."})


class NpsGroup(NpsFigures):
    key = String(required=True, metadata={"description": "YYYY-MM, or the flow id."})


class NpsOut(Schema):
    by = String(required=True)
    from_ = String(allow_none=True, required=True, data_key="from")
    to = String(allow_none=True, required=True)
    total = Nested(NpsFigures, required=True)
    groups = List(Nested(NpsGroup), required=True)


@bp.get("/segments")
@bp.auth_required(token_auth)
@bp.output(SegmentOut(many=True))
@requires("segments.read")
def list_segments() -> Any:
    """Every segment with its member count."""
    return careflow().segments()


@bp.post("/segments")
@bp.auth_required(token_auth)
@bp.input(SegmentIn, arg_name="body", example={"name": "vip_shanghai", "title": {"zh": "上海 VIP", "en": "Shanghai VIP"},
                                               "filter": {"grade": ["A"], "region": ["上海"]}})
@bp.output(SegmentOut, status_code=201)
@bp.doc(responses={409: "A segment has this name"})
@requires("segments.manage")
def create_segment(body: dict[str, Any]) -> Any:
    """Save a filter as a segment; its members are filled in by the next recompute."""
    return careflow().create_segment(body, actor=g.principal.username), 201


@bp.get("/segments/<ident:name>")
@bp.auth_required(token_auth)
@bp.output(SegmentOut)
@requires("segments.read")
def get_segment_(name: str) -> Any:
    """One segment, its member count and the flows it triggers."""
    return careflow().segment(name)


@bp.patch("/segments/<ident:name>")
@bp.auth_required(token_auth)
@bp.input(SegmentPatch, arg_name="body", example={"filter": {"grade": ["A", "B"]}})
@bp.output(SegmentOut)
@requires("segments.manage")
def update_segment(name: str, body: dict[str, Any]) -> Any:
    """Change a segment's title or filter; members change at the next recompute."""
    careflow().update_segment(name, body, actor=g.principal.username)
    return careflow().segment(name)


@bp.delete("/segments/<ident:name>")
@bp.auth_required(token_auth)
@bp.output({}, status_code=204)
@bp.doc(responses={409: "A built-in segment, or one a deployed flow triggers on"})
@requires("segments.manage")
def delete_segment(name: str) -> Any:
    """Delete a segment no flow uses; built-in segments stay."""
    careflow().delete_segment(name, actor=g.principal.username)
    return "", 204


@bp.get("/segments/<ident:name>/members")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(page_of(CustomerOut))
@requires("customers.read")
def segment_members(name: str, query: dict[str, Any]) -> Any:
    """The members you may see, with their grade, RFM scores and churn risk."""
    with careflow().session() as s:
        seg = get_segment(s, name)
        q = (select(Customer).join(SegmentMember, SegmentMember.customer_id == Customer.id)
             .where(SegmentMember.segment_id == seg.id, Customer.status != DELETED, visible_customers(g.principal))
             .order_by(Customer.id))
        rows, total = page(s, q, query["page"], query["per_page"])
        items = [customer_out(c) for c in rows]
    return paged(items, total, query["page"], query["per_page"])


@bp.post("/grading/recompute")
@bp.auth_required(token_auth)
@bp.input(RecomputeIn, arg_name="body", example={})
@bp.output(RecomputeOut)
@requires("segments.recompute")
def recompute(body: dict[str, Any]) -> Any:
    """Recompute grades, RFM, churn risk and memberships now; entries start their flows."""
    return careflow().recompute_segments(body.get("customer_ids"), actor=g.principal.username)


@bp.get("/reports/nps")
@bp.auth_required(token_auth)
@bp.input(NpsQuery, location="query", arg_name="query")
@bp.output(NpsOut)
@requires("reports.read")
def nps(query: dict[str, Any]) -> Any:
    """NPS (% promoters − % detractors) per month (Asia/Shanghai) or per flow, from survey answers."""
    start: date | None = query.get("from_")
    end: date | None = query.get("to")
    result = careflow().nps_report(query["by"], start, end)
    result["from_"] = result.pop("from")  # the schema's name for the "from" key
    return result
