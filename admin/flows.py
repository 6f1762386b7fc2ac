"""Flows: the list, a flow's versions with its diagram and running instances, and deploying YAML.

Deploying goes through ``Careflow.deploy_flow_text`` (the REST API's path), so a flow with
problems is refused with the same located messages as ``careflow validate``; the page shows them
beside the numbered lines of the source.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select

from admin.access import careflow, principal, requires
from admin import bp
from admin.diagram import graph
from engine.api.flows import MAX_FLOW_CHARS
from engine.auth.scope import role_allows, visible_instances
from engine.errors import FlowInvalid
from engine.i18n import lang
from engine.store.definitions import flow_of, latest_flow_versions
from engine.store.models import FlowVersion, Instance


def _running_per_version(s: Any, flow_id: str) -> dict[int, int]:
    q = (select(Instance.flow_version_id, func.count())
         .where(Instance.flow_id == flow_id, Instance.status == "running", visible_instances(principal()))
         .group_by(Instance.flow_version_id))
    return {version_id: count for version_id, count in s.execute(q).all()}


def _running_per_flow(s: Any) -> dict[str, int]:
    q = (select(Instance.flow_id, func.count()).where(Instance.status == "running", visible_instances(principal()))
         .group_by(Instance.flow_id))
    return {flow_id: count for flow_id, count in s.execute(q).all()}


@bp.get("/flows")
@requires("flows.read")
def flows() -> Any:
    with careflow().session() as s:
        running = _running_per_flow(s)
        rows = [{"id": v.flow_id, "name": v.name, "version": v.version, "deployed_at": v.deployed_at,
                 "deployed_by": v.deployed_by, "running": running.get(v.flow_id, 0)} for v in latest_flow_versions(s)]
    return render_template("admin/flows.html", flows=rows, can_deploy=role_allows(principal(), "flows.deploy"))


def _version(s: Any, flow_id: str, number: int | None) -> FlowVersion:
    q = select(FlowVersion).where(FlowVersion.flow_id == flow_id)
    q = q.where(FlowVersion.version == number) if number is not None else q.order_by(FlowVersion.version.desc())
    found = s.scalars(q.limit(1)).first()
    if found is None:
        abort(404)
    return found


@bp.get("/flows/<ident:flow_id>")
@requires("flows.read")
def flow(flow_id: str) -> Any:
    number = request.args.get("version", type=int)
    with careflow().session() as s:
        version = _version(s, flow_id, number)
        versions = list(s.scalars(select(FlowVersion).where(FlowVersion.flow_id == flow_id).order_by(FlowVersion.version.desc())))
        running = _running_per_version(s, flow_id)
        instances = list(s.scalars(
            select(Instance).where(Instance.flow_version_id == version.id, Instance.status == "running",
                                   visible_instances(principal())).order_by(Instance.id.desc()).limit(50)))
        return render_template("admin/flow.html", version=version, versions=versions, running=running,
                               instances=instances, can_deploy=role_allows(principal(), "flows.deploy"))


@bp.get("/flows/<ident:flow_id>/graph.json")
@requires("flows.read")
def flow_graph(flow_id: str) -> Any:
    number = request.args.get("version", type=int)
    with careflow().session() as s:
        return jsonify(graph(flow_of(_version(s, flow_id, number))))


@bp.get("/flows/deploy")
@requires("flows.deploy")
def deploy_form() -> Any:
    source = ""
    if request.args.get("from"):
        with careflow().session() as s:
            source = _version(s, request.args["from"], None).source
    return render_template("admin/deploy.html", source=source, problems=[])


@bp.post("/flows/deploy")
@requires("flows.deploy")
def deploy() -> Any:
    upload = request.files.get("file")
    uploaded = upload is not None and bool(upload.filename)
    filename = "editor"
    if upload is not None and uploaded:
        filename = str(upload.filename).replace("\\", "/").rsplit("/", 1)[-1]
        raw = upload.read()
        try:
            source = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return _refused("", [{"line": 0, "column": 0, "message": _("The file is not UTF-8 text.")}], filename)
    else:
        source = request.form.get("source", "")
    if not source.strip():
        return _refused(source, [{"line": 0, "column": 0, "message": _("Paste a flow or choose a YAML file.")}], filename)
    if len(source) > MAX_FLOW_CHARS:
        return _refused(source, [{"line": 0, "column": 0,
                                  "message": _("A flow has at most %(n)s characters.", n=MAX_FLOW_CHARS)}], filename)
    try:
        # An uploaded file's id must match its name, as with `careflow deploy`; pasted text has no name.
        result = careflow().deploy_flow_text(source, filename if uploaded else "editor", by=principal().username)
    except FlowInvalid as exc:
        return _refused(source, [{"line": p.line, "column": p.column, "message": p.text(lang()), "path": p.path}
                                 for p in exc.problems], filename)
    if result.changed:
        flash(_("Deployed %(flow)s as version %(version)s.", flow=result.id, version=result.version), "success")
    else:
        flash(_("Nothing changed: this is already version %(version)s of %(flow)s.", flow=result.id,
                version=result.version), "info")
    return redirect(url_for("admin.flow", flow_id=result.id))


def _refused(source: str, problems: list[dict[str, Any]], filename: str) -> Any:
    lines = source.splitlines() or [""]
    marked = {p["line"] for p in problems}
    return render_template("admin/deploy.html", source=source, problems=problems, filename=filename,
                           numbered=[(n, text, n in marked) for n, text in enumerate(lines, start=1)]), 422
