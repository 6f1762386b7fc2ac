"""Instances: start, list, get, cancel, deliver an event, create a customer link."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apiflask import APIBlueprint
from flask import current_app, g, request
from sqlalchemy import select

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import ApiError, forbidden, references, text
from engine.api.present import (
    incident_dict,
    instance_dict,
    page,
    paged,
    task_dict,
    versions_of,
    visible_customer,
    visible_instance,
)
from engine.api.schemas import (
    EXAMPLES,
    CancelIn,
    EventIn,
    InstanceDetailOut,
    InstanceOut,
    InstanceQuery,
    LinkIn,
    LinkOut,
    StartIn,
    page_of,
)
from engine.auth.operations import waits_for
from engine.auth.scope import Principal, managed_customers, visible_instances
from engine.errors import CustomerLookupError, FlowLookupError, FormLookupError
from engine.store.models import Customer, FlowVersion, HistoryEntry, Incident, Instance, Task

bp = APIBlueprint("instances", __name__, url_prefix="/api/instances", tag="Instances")


def _manageable(s: Any, who: Principal, instance: Instance) -> None:
    """Changing an instance needs an admin, its starter, or a manager of its customer."""
    if who.is_admin or instance.started_by == who.username:
        return
    if instance.customer_id is not None:
        managed = s.scalars(select(Customer.id).where(Customer.id == instance.customer_id, managed_customers(who))).first()
        if managed is not None:
            return
    raise forbidden()


def _detail(s: Any, instance: Instance) -> dict[str, Any]:
    version = s.get(FlowVersion, instance.flow_version_id)
    tasks = s.scalars(select(Task).where(Task.instance_id == instance.id).order_by(Task.id))
    incidents = s.scalars(select(Incident).where(Incident.instance_id == instance.id).order_by(Incident.id))
    history = s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance.id).order_by(HistoryEntry.id))
    return {
        **instance_dict(instance, version.version if version else 0),
        "variables": dict((instance.state or {}).get("vars") or {}),
        "tasks": [task_dict(t) for t in tasks],
        "incidents": [incident_dict(i) for i in incidents],
        "history": [{"at": h.at.isoformat(), "event": h.event, "entries": list(h.entries or [])} for h in history],
    }


def _summary(instance_id: int) -> dict[str, Any]:
    with careflow().session() as s:
        instance = s.get(Instance, instance_id)
        assert instance is not None
        version = s.get(FlowVersion, instance.flow_version_id)
        return instance_dict(instance, version.version if version else 0)


@bp.post("")
@bp.auth_required(token_auth)
@bp.input(StartIn, arg_name="body", example=EXAMPLES[StartIn])
@bp.output(InstanceOut, status_code=201)
@bp.doc(responses={409: "The flow's enrollment policy keeps this customer out",
                   422: "Invalid body, or no such flow or customer (in your scope)"})
@requires("instances.start")
def start(body: dict[str, Any]) -> Any:
    """Start an instance of a flow, for a customer in your scope or without one."""
    who: Principal = g.principal
    customer_id = body.get("customer_id")
    with references(customer_id=CustomerLookupError, flow=FlowLookupError):
        if customer_id is not None:
            with careflow().session() as s:
                visible_customer(s, who, customer_id)
                managed = s.scalars(select(Customer.id).where(Customer.id == customer_id, managed_customers(who))).first()
                if managed is None:
                    raise forbidden()
        instance_id = careflow().start(body["flow"], customer_id=customer_id, data=body.get("data") or {},
                                       started_by=who.username)
    return _summary(instance_id), 201


@bp.get("")
@bp.auth_required(token_auth)
@bp.input(InstanceQuery, location="query", arg_name="query")
@bp.output(page_of(InstanceOut))
@requires("instances.read")
def list_instances(query: dict[str, Any]) -> Any:
    """Instances you may see, newest first; filter by flow, status, customer."""
    who: Principal = g.principal
    q = select(Instance).where(visible_instances(who))
    if query.get("flow"):
        q = q.where(Instance.flow_id == query["flow"])
    if query.get("status"):
        q = q.where(Instance.status == query["status"])
    if query.get("customer_id"):
        q = q.where(Instance.customer_id == query["customer_id"])
    with careflow().session() as s:
        rows, total = page(s, q.order_by(Instance.id.desc()), query["page"], query["per_page"])
        versions = versions_of(s, rows)
        items = [instance_dict(i, versions.get(i.flow_version_id, 0)) for i in rows]
    return paged(items, total, query["page"], query["per_page"])


@bp.get("/<id:instance_id>")
@bp.auth_required(token_auth)
@bp.output(InstanceDetailOut)
@requires("instances.read")
def get_instance(instance_id: int) -> Any:
    """Status, current steps, variables, tasks, incidents and history."""
    with careflow().session() as s:
        return _detail(s, visible_instance(s, g.principal, instance_id))


@bp.post("/<id:instance_id>/cancel")
@bp.auth_required(token_auth)
@bp.input(CancelIn, arg_name="body", example=EXAMPLES[CancelIn])
@bp.output(InstanceOut)
@bp.doc(responses={409: "The instance has already ended"})
@requires("instances.cancel")
def cancel(instance_id: int, body: dict[str, Any]) -> Any:
    """Cancel a running instance; its open tasks and timers are cancelled with it."""
    with careflow().session() as s:
        instance = visible_instance(s, g.principal, instance_id)
        _manageable(s, g.principal, instance)
        if instance.status != "running":
            raise ApiError(409, "conflict", f"instance {instance_id} is {instance.status}")
    careflow().cancel(instance_id, body["reason"], actor=g.principal.username)
    return _summary(instance_id)


@bp.post("/<id:instance_id>/events")
@bp.auth_required(token_auth)
@bp.input(EventIn, arg_name="body", example=EXAMPLES[EventIn])
@bp.output(InstanceOut)
@bp.doc(responses={409: "The instance does not wait for this event"})
@requires("instances.event")
def deliver_event(instance_id: int, body: dict[str, Any]) -> Any:
    """Deliver a named event (customer_replied, order_paid…) to a waiting instance."""
    with careflow().session() as s:
        instance = visible_instance(s, g.principal, instance_id)
        _manageable(s, g.principal, instance)
        if not waits_for(s, instance, body["event"]):
            raise ApiError(409, "not_waiting", text("not_waiting", event=body["event"]))
    careflow().message(instance_id, body["event"], body["data"], actor=g.principal.username)
    return _summary(instance_id)


@bp.post("/<id:instance_id>/links")
@bp.auth_required(token_auth)
@bp.input(LinkIn, arg_name="body", example=EXAMPLES[LinkIn])
@bp.output(LinkOut, status_code=201)
@bp.doc(responses={409: "The instance has already ended"})
@requires("instances.link")
def create_link(instance_id: int, body: dict[str, Any]) -> Any:
    """A signed, single-use link for the customer: it opens the form and resumes the instance."""
    with careflow().session() as s:
        instance = visible_instance(s, g.principal, instance_id)
        _manageable(s, g.principal, instance)
    with references(form=FormLookupError):
        link = careflow().customer_link(
            instance_id, body["form"], body["event"], timedelta(hours=body["ttl_hours"]),
            secret=current_app.config["SECRET_KEY"], base_url=request.host_url, by=g.principal.username,
        )
    return link, 201



