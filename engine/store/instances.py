"""Starting instances and delivering events to them: the interpreter's outcome applied as rows.

Every function takes the session first and never commits: the caller owns the transaction, so
one step transition (state, tasks, timers, outbox rows, history) commits or rolls back whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.calendar import BusinessCalendar
from engine.crashpoints import crash_point
from engine.errors import Conflict, InstanceLookupError
from engine.flow.model import Duration, Flow
from engine.runtime import effects as fx
from engine.runtime import events as ev
from engine.runtime.interpreter import Context, Outcome, advance, start_state
from engine.runtime.state import Status
from engine.store import customers as cust
from engine import forms
from engine.store.definitions import flow_of, latest_flow_version, latest_form
from engine.store.models import (
    Customer,
    Enrollment,
    FlowVersion,
    HistoryEntry,
    Incident,
    Instance,
    Notification,
    OutboxMessage,
    Task,
    Timer,
)


@dataclass
class Runtime:
    """What applying an outcome needs besides the session."""

    now: datetime
    calendar: BusinessCalendar


class NotEnrolled(Conflict):
    """Raised when the flow's enrollment policy keeps this customer out right now."""

    code = "not_enrolled"


def _instance_info(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "flow": instance.flow_id,
        "started_at": instance.started_at.isoformat(),
        "parent_id": instance.parent_id,
    }


def _check_enrollment(session: Session, flow: Flow, customer_id: int, now: datetime) -> Enrollment | None:
    row = session.scalars(
        select(Enrollment).where(Enrollment.flow_id == flow.id, Enrollment.customer_id == customer_id)
    ).first()
    if row is None:
        return None
    policy = flow.enrollment
    if policy.concurrent == "one_per_customer" and row.active_instance_id is not None:
        raise NotEnrolled(f"customer {customer_id} is already in flow {flow.id!r} (instance {row.active_instance_id})")
    if policy.reenroll == "never":
        raise NotEnrolled(f"flow {flow.id!r} enrolls customer {customer_id} only once")
    if policy.reenroll == "after":
        wait = (policy.reenroll_after or Duration(days=0)).plain
        if now < row.last_started_at + wait:
            raise NotEnrolled(f"customer {customer_id} may re-enter flow {flow.id!r} after {(row.last_started_at + wait).isoformat()}")
    return row


def start_instance(
    session: Session,
    rt: Runtime,
    flow_id: str,
    *,
    customer_id: int | None = None,
    data: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
    started_by: str | None = None,
    parent: tuple[int, str, int] | None = None,
) -> Instance:
    """Create an instance on the newest version of a flow and run it until it waits."""
    version = latest_flow_version(session, flow_id)
    flow = flow_of(version)
    customer = cust.get_customer(session, customer_id) if customer_id is not None else None
    enrollment = _check_enrollment(session, flow, customer_id, rt.now) if customer_id is not None else None
    instance = Instance(
        flow_id=flow.id,
        flow_version_id=version.id,
        customer_id=customer_id,
        status=Status.RUNNING.value,
        state=start_state(flow),
        started_at=rt.now,
        started_by=started_by,
        parent_id=parent[0] if parent else None,
        parent_token=parent[1] if parent else None,
        parent_gen=parent[2] if parent else None,
    )
    session.add(instance)
    session.flush()
    if customer_id is not None:
        if enrollment is None:
            session.add(Enrollment(flow_id=flow.id, customer_id=customer_id, active_instance_id=instance.id, last_started_at=rt.now, count=1))
        else:
            enrollment.active_instance_id = instance.id
            enrollment.last_started_at = rt.now
            enrollment.count += 1
        cust.add_timeline(
            session, customer_id, rt.now, "flow_started",
            {"zh": f"进入流程：{flow.name.get('zh', flow.id)}", "en": f"Entered flow: {flow.name.get('en', flow.id)}"},
            instance_id=instance.id,
        )
    _run(session, rt, instance, flow, customer, ev.Start(dict(data or {}), dict(trigger or {})))
    return instance


def get_instance(session: Session, instance_id: int) -> Instance:
    instance = session.get(Instance, instance_id)
    if instance is None:
        raise InstanceLookupError(instance_id)
    return instance


def deliver(session: Session, rt: Runtime, instance: Instance, event: ev.Event) -> Outcome:
    """Advance one instance by one event and apply the outcome."""
    version = session.get(FlowVersion, instance.flow_version_id)
    assert version is not None
    customer = session.get(Customer, instance.customer_id) if instance.customer_id is not None else None
    return _run(session, rt, instance, flow_of(version), customer, event)


def _run(session: Session, rt: Runtime, instance: Instance, flow: Flow, customer: Customer | None, event: ev.Event) -> Outcome:
    ctx = Context(
        now=rt.now,
        instance=_instance_info(instance),
        customer=cust.customer_dict(customer) if customer is not None else None,
        calendar=rt.calendar,
        pick_user=lambda role, strategy, c: cust.pick_user(session, role, strategy, c),
    )
    outcome = advance(flow, instance.state, event, ctx)
    instance.state = outcome.state
    instance.status = outcome.state["status"]
    instance.outcome = outcome.state.get("outcome")
    session.add(HistoryEntry(instance_id=instance.id, at=rt.now, event=type(event).__name__, entries=outcome.history))
    for effect in outcome.effects:
        _apply(session, rt, instance, customer, outcome, effect)
    if instance.status != Status.RUNNING.value:
        _ended(session, rt, instance, flow)
    return outcome


def _ended(session: Session, rt: Runtime, instance: Instance, flow: Flow) -> None:
    instance.ended_at = rt.now
    if instance.customer_id is not None:
        session.execute(
            update(Enrollment)
            .where(Enrollment.flow_id == instance.flow_id, Enrollment.customer_id == instance.customer_id,
                   Enrollment.active_instance_id == instance.id)
            .values(active_instance_id=None)
        )
        outcome = instance.outcome or instance.status
        cust.add_timeline(
            session, instance.customer_id, rt.now, "flow_ended",
            {"zh": f"流程结束：{flow.name.get('zh', flow.id)}（{outcome}）", "en": f"Flow ended: {flow.name.get('en', flow.id)} ({outcome})"},
            {"outcome": outcome}, instance.id,
        )
    if instance.parent_id is not None and instance.parent_token is not None:
        parent = get_instance(session, instance.parent_id)
        done = ev.SubflowDone(instance.parent_token, instance.parent_gen or 0, instance.outcome or "", dict(instance.state.get("vars", {})))
        deliver(session, rt, parent, done)


def _token_gen(outcome: Outcome, token: str) -> int:
    t = outcome.state["tokens"].get(token)
    return int(t["gen"]) if t else 0


def _apply(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome, effect: fx.Effect) -> None:
    if isinstance(effect, fx.CreateTask):
        _create_task(session, rt, instance, outcome, effect)
    elif isinstance(effect, fx.CancelTasks):
        q = update(Task).where(Task.instance_id == instance.id, Task.status == "open")
        if effect.token is not None:
            q = q.where(Task.token == effect.token)
        session.execute(q.values(status="cancelled", outcome=effect.reason, completed_at=rt.now))
    elif isinstance(effect, fx.SetTimer):
        session.add(Timer(instance_id=instance.id, token=effect.token, kind=effect.kind, due_at=effect.due_at,
                          status="pending", data=dict(effect.data)))
    elif isinstance(effect, fx.CancelTimers):
        q = update(Timer).where(Timer.instance_id == instance.id, Timer.status == "pending")
        if effect.token is not None:
            q = q.where(Timer.token == effect.token)
        session.execute(q.values(status="cancelled"))
    elif isinstance(effect, fx.SendMessage):
        session.add(OutboxMessage(
            effect_key=effect.effect_key, instance_id=instance.id, token=effect.token, gen=_token_gen(outcome, effect.token),
            step_id=effect.step, customer_id=instance.customer_id, connector=effect.connector, payload=dict(effect.params),
            category="marketing" if effect.params.get("category") == "marketing" else "service",
            status="pending", wait=effect.wait, attempts=0, max_attempts=effect.max_attempts,
            backoff_seconds=effect.backoff_seconds, next_attempt_at=rt.now, created_at=rt.now,
        ))
        session.flush()
        crash_point("after_outbox_insert")
    elif isinstance(effect, fx.UpdateCustomer):
        if customer is not None:
            cust.update_customer(session, customer, {**effect.fields, **_tags(customer, effect)}, rt.now)
            if effect.note:
                cust.add_timeline(session, customer.id, rt.now, "note", effect.note, dict(effect.fields), instance.id)
    elif isinstance(effect, fx.EscalateTasks):
        tasks = list(session.scalars(select(Task).where(Task.instance_id == instance.id, Task.token == effect.token, Task.status == "open")))
        for task in tasks:
            task.role = effect.to_role
            task.assignee = None
            task.escalation_level = effect.level
            session.add(Notification(role=effect.to_role, task_id=task.id, kind="escalated", at=rt.now))
    elif isinstance(effect, fx.RemindTasks):
        tasks = list(session.scalars(select(Task).where(Task.instance_id == instance.id, Task.token == effect.token, Task.status == "open")))
        for task in tasks:
            task.reminders_sent += 1
            session.add(Notification(user=task.assignee, role=None if task.assignee else task.role, task_id=task.id,
                                     kind=f"reminder_{effect.when}", at=rt.now))
    elif isinstance(effect, fx.StartSubflow):
        start_instance(session, rt, effect.flow, customer_id=instance.customer_id, data=effect.data,
                       trigger={"type": "subflow", "parent": instance.id},
                       parent=(instance.id, effect.token, _token_gen(outcome, effect.token)) if effect.wait else None)
    elif isinstance(effect, fx.RaiseIncident):
        session.add(Incident(instance_id=instance.id, token=effect.token, step_id=effect.step, kind="step_failed",
                             message=effect.message, status="open", created_at=rt.now))
    elif isinstance(effect, fx.ResolveIncidents):
        session.execute(
            update(Incident).where(Incident.instance_id == instance.id, Incident.token == effect.token, Incident.status == "open")
            .values(status="resolved", resolution=effect.resolution, resolved_at=rt.now)
        )
    elif isinstance(effect, fx.Timeline):
        if instance.customer_id is not None:
            cust.add_timeline(session, instance.customer_id, rt.now, effect.kind, effect.title, dict(effect.data), instance.id)


def _tags(customer: Customer, effect: fx.UpdateCustomer) -> dict[str, Any]:
    if not (effect.add_tags or effect.remove_tags):
        return {}
    tags = [t for t in customer.tags or [] if t not in effect.remove_tags]
    tags += [t for t in effect.add_tags if t not in tags]
    return {"tags": tags}


def _create_task(session: Session, rt: Runtime, instance: Instance, outcome: Outcome, effect: fx.CreateTask) -> None:
    spec = effect.assignee
    assignee = spec.get("user")
    role = spec.get("role")
    strategy = spec.get("strategy", "claim")
    customer = session.get(Customer, instance.customer_id) if instance.customer_id is not None else None
    customer_data = cust.customer_dict(customer) if customer is not None else None
    if assignee is None and role and strategy in ("round_robin", "least_loaded"):
        assignee = cust.pick_user(session, role, strategy, customer_data)
    context = {"customer": customer_data or {}, "vars": outcome.state["vars"], "instance": _instance_info(instance)}
    initial = forms.prefill(latest_form(session, effect.form), context)
    task = Task(
        instance_id=instance.id, token=effect.token, gen=_token_gen(outcome, effect.token), step_id=effect.step,
        form_id=effect.form, title=dict(effect.title), role=role, assignee=assignee, approval=effect.approval,
        status="open", due_at=effect.due_at, readonly=list(effect.readonly), hidden=list(effect.hidden),
        initial=initial, created_at=rt.now, escalation_level=0, reminders_sent=0,
    )
    session.add(task)
