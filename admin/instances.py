"""Instances: a filtered list, and one instance with its diagram, history, variables and incidents.

Everything is limited to the instances the user may see (``visible_instances``, as in the API);
cancelling needs ``instances.cancel`` and the API's rule that only an admin, the starter or a
manager of the customer may change an instance; incidents need ``incidents.admin``.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from admin import bp
from admin.access import careflow, principal, requires
from admin.diagram import graph, visited_steps
from engine.api.instances import _manageable
from engine.api.errors import ApiError
from engine.auth.scope import role_allows, visible_instances
from engine.errors import EngineError
from engine.store.definitions import flow_of, latest_flow_versions
from engine.store.models import FlowVersion, HistoryEntry, Incident, Instance, Task

STATUSES = ("running", "completed", "cancelled", "failed")
PER_PAGE = 50


def _visible(s: Any, instance_id: int) -> Instance:
    found = s.scalars(select(Instance).where(Instance.id == instance_id, visible_instances(principal()))).first()
    if found is None:
        abort(404)
    instance: Instance = found
    return instance


@bp.get("/instances")
@requires("instances.read")
def instances() -> Any:
    flow = request.args.get("flow", "").strip()
    status = request.args.get("status", "").strip()
    customer = request.args.get("customer", "").strip()
    page_no = max(1, request.args.get("page", 1, type=int) or 1)
    errors: dict[str, list[str]] = {}
    q = select(Instance).where(visible_instances(principal()))
    if flow:
        q = q.where(Instance.flow_id == flow)
    if status:
        if status not in STATUSES:
            errors["status"] = [_("Unknown status.")]
        else:
            q = q.where(Instance.status == status)
    if customer:
        if not customer.isdigit():
            errors["customer"] = [_("A customer number is digits only.")]
        else:
            q = q.where(Instance.customer_id == int(customer))
    with careflow().session() as s:
        rows = [] if errors else list(s.scalars(q.order_by(Instance.id.desc()).offset((page_no - 1) * PER_PAGE).limit(PER_PAGE + 1)))
        versions = {v.id: v.version for v in s.scalars(select(FlowVersion).where(FlowVersion.id.in_({r.flow_version_id for r in rows})))}
        flows = [(v.flow_id, v.name) for v in latest_flow_versions(s)]
    return render_template("admin/instances.html", rows=rows[:PER_PAGE], more=len(rows) > PER_PAGE, page=page_no,
                           versions=versions, flows=flows, statuses=STATUSES, errors=errors,
                           filters={"flow": flow, "status": status, "customer": customer}), 422 if errors else 200


def _current(instance: Instance) -> list[str]:
    if instance.status != "running":
        return []
    return sorted({t["step"] for t in ((instance.state or {}).get("tokens") or {}).values()})


@bp.get("/instances/<id:instance_id>")
@requires("instances.read")
def instance(instance_id: int) -> Any:
    with careflow().session() as s:
        row = _visible(s, instance_id)
        version = s.get(FlowVersion, row.flow_version_id)
        assert version is not None
        history = list(s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance_id).order_by(HistoryEntry.id)))
        tasks = list(s.scalars(select(Task).where(Task.instance_id == instance_id).order_by(Task.id)))
        incidents = list(s.scalars(select(Incident).where(Incident.instance_id == instance_id).order_by(Incident.id)))
        who = principal()
        try:
            _manageable(s, who, row)
            may_cancel = role_allows(who, "instances.cancel")
        except ApiError:
            may_cancel = False
        return render_template("admin/instance.html", instance=row, version=version, history=history, tasks=tasks,
                               incidents=incidents, current=_current(row), variables=(row.state or {}).get("vars") or {},
                               may_cancel=may_cancel and row.status == "running",
                               may_resolve=role_allows(who, "incidents.admin"))


@bp.get("/instances/<id:instance_id>/graph.json")
@requires("instances.read")
def instance_graph(instance_id: int) -> Any:
    with careflow().session() as s:
        row = _visible(s, instance_id)
        version = s.get(FlowVersion, row.flow_version_id)
        assert version is not None
        history = s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance_id))
        data = graph(flow_of(version), _current(row), visited_steps(history))
        data["status"] = row.status
        return jsonify(data)


@bp.post("/instances/<id:instance_id>/cancel")
@requires("instances.cancel")
def cancel(instance_id: int) -> Any:
    who = principal()
    reason = request.form.get("reason", "").strip()[:200] or "cancelled"
    with careflow().session() as s:
        row = _visible(s, instance_id)
        try:
            _manageable(s, who, row)
        except ApiError:
            abort(403)
        running = row.status == "running"
    if not running:
        flash(_("This instance has already ended."), "error")
    else:
        careflow().cancel(instance_id, reason, actor=who.username)
        flash(_("The instance was cancelled."), "success")
    return redirect(url_for("admin.instance", instance_id=instance_id))


@bp.post("/incidents/<id:incident_id>/<any(retry, skip):action>")
@requires("incidents.admin")
def resolve_incident(incident_id: int, action: str) -> Any:
    with careflow().session() as s:
        incident = s.get(Incident, incident_id)
        if incident is None:
            abort(404)
        instance_id = incident.instance_id
    try:
        careflow().resolve_incident(incident_id, action, principal().username)
    except EngineError as exc:
        flash(_("The incident could not be resolved: %(reason)s", reason=str(exc)), "error")
    else:
        flash(_("Retried.") if action == "retry" else _("Skipped."), "success")
    if instance_id is not None:
        return redirect(url_for("admin.instance", instance_id=instance_id))
    return redirect(url_for("admin.connectors"))  # a delivery's incident: its message is in the delivery log
