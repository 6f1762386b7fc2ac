"""Rows as the API shows them, and scoped queries the views share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from engine.errors import CustomerLookupError, InstanceLookupError, TaskLookupError
from engine.auth.scope import Principal, visible_customers, visible_instances, visible_tasks
from engine.core import DELETED
from engine.segments.operations import grading_dict
from engine.store.models import Customer, FlowVersion, Incident, Instance, Task, TaskComment, TimelineEntry

T = TypeVar("T")


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def page(session: Session, query: Select[Any], page_no: int, per_page: int) -> tuple[list[Any], int]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = list(session.scalars(query.offset((page_no - 1) * per_page).limit(per_page)))
    return rows, total


def paged(items: Sequence[Any], total: int, page_no: int, per_page: int) -> dict[str, Any]:
    return {"items": list(items), "total": total, "page": page_no, "per_page": per_page}


# ----- tasks ------------------------------------------------------------------------------------------


def task_dict(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "instance_id": t.instance_id,
        "step": t.step_id,
        "form": t.form_id,
        "title": dict(t.title or {}),
        "role": t.role,
        "assignee": t.assignee,
        "status": t.status,
        "due_at": iso(t.due_at),
        "created_at": iso(t.created_at),
        "completed_at": iso(t.completed_at),
        "completed_by": t.completed_by,
        "escalation_level": t.escalation_level,
        "initial": dict(t.initial or {}),
        "data": t.data,
        "readonly": list(t.readonly or []),
        "hidden": list(t.hidden or []),
    }


def visible_task(session: Session, who: Principal, task_id: int) -> Task:
    task = session.scalars(select(Task).where(Task.id == task_id, visible_tasks(who))).first()
    if task is None:
        raise TaskLookupError(task_id)
    return task


def comment_dict(c: TaskComment) -> dict[str, Any]:
    return {"id": c.id, "at": iso(c.at), "author": c.author, "kind": c.kind, "body": c.body}


# ----- instances --------------------------------------------------------------------------------------


def instance_dict(i: Instance, version: int) -> dict[str, Any]:
    tokens = (i.state or {}).get("tokens") or {}
    return {
        "id": i.id,
        "flow": i.flow_id,
        "version": version,
        "customer_id": i.customer_id,
        "status": i.status,
        "outcome": i.outcome,
        "started_at": iso(i.started_at),
        "ended_at": iso(i.ended_at),
        "started_by": i.started_by,
        "current_steps": sorted({t["step"] for t in tokens.values()}),
    }


def versions_of(session: Session, instances: Sequence[Instance]) -> dict[int, int]:
    ids = sorted({i.flow_version_id for i in instances})
    if not ids:
        return {}
    return dict(session.execute(select(FlowVersion.id, FlowVersion.version).where(FlowVersion.id.in_(ids))).all())


def visible_instance(session: Session, who: Principal, instance_id: int) -> Instance:
    instance = session.scalars(select(Instance).where(Instance.id == instance_id, visible_instances(who))).first()
    if instance is None:
        raise InstanceLookupError(instance_id)
    return instance


def incident_dict(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "instance_id": i.instance_id,
        "step": i.step_id,
        "outbox_id": i.outbox_id,
        "kind": i.kind,
        "message": i.message,
        "status": i.status,
        "resolution": i.resolution,
        "created_at": iso(i.created_at),
        "resolved_at": iso(i.resolved_at),
        "resolved_by": i.resolved_by,
    }


# ----- customers --------------------------------------------------------------------------------------


def customer_out(c: Customer) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "phone": c.phone,
        "email": c.email,
        "birthday": iso(c.birthday),
        "birthday_calendar": c.birthday_calendar,
        "region": c.region,
        "grade": c.grade,
        "expected_value": c.expected_value,
        "owner": c.owner,
        "tags": list(c.tags or []),
        "preferred_channel": c.preferred_channel,
        "language": c.language,
        "consent": dict(c.consent or {}),
        "status": c.status,
        "last_purchase_at": iso(c.last_purchase_at),
        "purchase_count": c.purchase_count,
        "purchase_total": c.purchase_total,
        "attributes": dict(c.attributes or {}),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "first_purchase_at": iso(c.first_purchase_at),
        **grading_dict(c),
    }


def visible_customer(session: Session, who: Principal, customer_id: int) -> Customer:
    customer = session.scalars(
        select(Customer).where(Customer.id == customer_id, Customer.status != DELETED, visible_customers(who))
    ).first()
    if customer is None:
        raise CustomerLookupError(customer_id)
    return customer


def timeline_dict(t: TimelineEntry) -> dict[str, Any]:
    return {
        "id": t.id,
        "at": iso(t.at),
        "kind": t.kind,
        "title": dict(t.title or {}),
        "data": dict(t.data or {}),
        "instance_id": t.instance_id,
    }
