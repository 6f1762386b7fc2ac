"""The flow designer's JSON endpoints: palette, sources, YAML ⇄ graph, changes and publishing.

The page (admin/designer_page.py) keeps YAML as the source of truth and asks the server for
every conversion, so what it shows is what ``careflow validate`` and the engine see. All answers
are JSON; problems are the contract's P objects (message, line, column, path, node, edge).

Access: reading and converting need ``flows.read``; publishing needs ``flows.deploy`` and goes
through ``Careflow.deploy_flow_text`` (audited). POSTs carry the session's CSRF token in the
``X-CSRFToken`` header (Flask-WTF's CSRFProtect checks it before these views run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, abort, current_app, jsonify, make_response, request
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select

from admin import bp
from admin.access import careflow, principal
from engine.api.flows import MAX_FLOW_CHARS
from engine.auth.scope import role_allows
from engine.designer import changes as changes_mod
from engine.designer import palette as palette_mod
from engine.designer.graph import SOURCE, graph_of, read
from engine.designer.problems import as_p, located
from engine.designer.writer import GraphInvalid, to_yaml
from engine.errors import FlowInvalid, FlowLookupError, FormInvalid
from engine.flow.loader import content_hash, load_flow_text
from engine.forms import load_form_text
from engine.i18n import lang, localized
from engine.problem_text import t
from engine.roles import BUILTIN_ROLES
from engine.store import definitions as defs
from engine.store.models import ConnectorConfig, FlowVersion, FormVersion, Instance, User

F = TypeVar("F", bound=Callable[..., Any])

#: the largest version number a request may ask for (a 32-bit integer column)
MAX_VERSION = 2**31 - 1


def _requires(operation: str) -> Callable[[F], F]:
    """Like admin.access.requires, but answering in JSON: 401 signed out, 403 without the role."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return _error(_("Sign in first."), 401)
            if not role_allows(principal(), operation):
                return _error(_("Your role may not do this."), 403)
            return view(*args, **kwargs)

        wrapper._careflow_operations = (operation,)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _error(message: str, status: int) -> Any:
    return jsonify({"error": message, "problems": [_problem(message)]}), status


def _problem(message: str, path: str = "$") -> dict[str, Any]:
    return {"message": message, "line": 0, "column": 0, "path": path, "node": None, "edge": None}


def _refused(problems: list[dict[str, Any]]) -> Response:
    return make_response(jsonify({"problems": problems}), 422)


def _body() -> dict[str, Any]:
    """The request's JSON object; a 422 answer naming what cannot be read (Infinity, 1e999...) otherwise."""
    if not request.get_data(cache=True):
        return {}
    try:
        # the app's JSON provider refuses NaN, Infinity and numbers beyond a float
        body = current_app.json.loads(request.get_data(cache=True))
    except ValueError as exc:
        why = t("designer.body_json", detail=str(exc)[:120])
        abort(_refused([_problem(why.render(lang()), "$")]))
    return body if isinstance(body, dict) else {}


def _request_source(required: bool = True) -> tuple[dict[str, Any], str]:
    """The request's JSON object and its YAML text ``source``; a 422 answer explaining what is wrong
    with either otherwise (an absent source is "" when not ``required``)."""
    body = _body()
    source = body.get("source")
    if source is None and not required:
        return body, ""
    if not isinstance(source, str):
        abort(_refused([_problem(_("Send the flow's YAML text as \"source\"."), "source")]))
    if required and not source.strip():
        abort(_refused([_problem(_("The flow is empty."), "source")]))
    if len(source) > MAX_FLOW_CHARS:
        abort(_refused([_problem(_("A flow has at most %(n)s characters.", n=MAX_FLOW_CHARS), "source")]))
    return body, source


def _problems(exc: FlowInvalid, text: str) -> list[dict[str, Any]]:
    return located(list(exc.problems), text, lang())


def _catalog() -> Any:
    """What a published flow may refer to: the same catalog the deploy checks against."""
    engine = careflow()
    with engine.session() as s:
        return defs.catalog(s, engine.registry)


def _check(text: str) -> list[dict[str, Any]]:
    try:
        load_flow_text(text, SOURCE, _catalog())
    except FlowInvalid as exc:
        return _problems(exc, text)
    return []


@bp.get("/designer/api/palette")
@_requires("flows.read")
def designer_palette() -> Any:
    language = lang()
    engine = careflow()
    with engine.session() as s:
        newest = select(FormVersion.form_id, func.max(FormVersion.version).label("v")).group_by(FormVersion.form_id).subquery()
        form_rows = s.scalars(select(FormVersion).join(
            newest, (FormVersion.form_id == newest.c.form_id) & (FormVersion.version == newest.c.v))
            .order_by(FormVersion.form_id)).all()
        forms = []
        for row in form_rows:
            try:
                title = localized(dict(load_form_text(row.source, f"{row.form_id}.schema.json", row.form_id).title))
            except FormInvalid:
                title = ""
            forms.append({"id": row.form_id, "name": title or row.form_id})
        configs = s.execute(select(ConnectorConfig.name, ConnectorConfig.type).order_by(ConnectorConfig.name)).all()
        roles = set(BUILTIN_ROLES)
        for user_roles in s.scalars(select(User.roles)):
            roles.update(user_roles or [])
    connectors = [{"name": name, "type": name} for name in sorted(engine.registry.names())]
    connectors += [{"name": f"{type_}/{name}", "type": type_} for name, type_ in configs]
    return jsonify({
        "steps": palette_mod.step_types(language),
        "triggers": palette_mod.trigger_types(language),
        "forms": forms,
        "connectors": connectors,
        "roles": [{"id": role, "name": palette_mod.role_name(role, language)} for role in sorted(roles)],
    })


@bp.get("/designer/api/flows/<ident:flow_id>/source")
@_requires("flows.read")
def designer_source(flow_id: str) -> Any:
    raw = request.args.get("version")
    number = None
    if raw is not None:
        # A version is a row number: anything else is the caller's mistake, not a database error.
        number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else None
        if number is None or not 1 <= number <= MAX_VERSION:
            why = t("designer.version", limit=MAX_VERSION, value=repr(raw[:40]))
            return _refused([_problem(why.render(lang()), "version")])
    with careflow().session() as s:
        if number is None:
            try:
                version = defs.latest_flow_version(s, flow_id)
            except FlowLookupError:
                version = None
        else:
            version = s.scalars(select(FlowVersion).where(FlowVersion.flow_id == flow_id,
                                                          FlowVersion.version == number)).first()
        if version is None:
            return _error(_("No such flow or version."), 404)
        return jsonify({"flow": version.flow_id, "version": version.version, "source": version.source})


@bp.post("/designer/api/graph")
@_requires("flows.read")
def designer_graph() -> Any:
    _, source = _request_source()
    try:
        data = read(source).data
    except FlowInvalid as exc:
        return _refused([as_p(p, None, lang()) for p in exc.problems])
    return jsonify({"graph": graph_of(data, lang()), "problems": _check(source)})


@bp.post("/designer/api/yaml")
@_requires("flows.read")
def designer_yaml() -> Any:
    body, original = _request_source(required=False)
    try:
        written = to_yaml(body.get("graph"), original, lang())
    except GraphInvalid as exc:
        return _refused([_problem(_("The graph cannot be read: %(why)s", why=exc.reason(lang())), "graph")])
    text = written.text
    try:
        graph = graph_of(read(text).data, lang())
    except FlowInvalid as exc:  # e.g. a node id the page let through that YAML cannot hold
        return _refused([as_p(p, None, lang()) for p in exc.problems])
    return jsonify({"source": text, "graph": graph, "problems": [*written.notes, *_check(text)]})


def _running(s: Any, version: FlowVersion) -> int:
    # Every running instance, not only those the user may open: a count shows no record, and
    # whoever publishes must know how many instances stay on the old version.
    q = select(func.count()).select_from(Instance).where(
        Instance.flow_version_id == version.id, Instance.status == "running")
    return int(s.scalar(q) or 0)


@bp.post("/designer/api/changes")
@_requires("flows.read")
def designer_changes() -> Any:
    _, source = _request_source()
    try:
        text = read(source)
    except FlowInvalid as exc:
        return _refused([as_p(p, None, lang()) for p in exc.problems])
    new = text.data
    triggers = new.get("triggers")
    if triggers is not None and not isinstance(triggers, list):
        line, column = text.position(("triggers",))
        why = t("designer.triggers_list", value=repr(triggers)[:40])
        return _refused([{**_problem(why.render(lang()), "$.triggers"), "line": line, "column": column}])
    flow_id = new.get("id")
    if not isinstance(flow_id, str):
        return _refused([_problem(_("The flow needs an id."), "$.id")])
    language = lang()
    with careflow().session() as s:
        try:
            running = defs.latest_flow_version(s, flow_id)
        except FlowLookupError:
            running = None
        if running is None:
            changes = changes_mod.diff({}, new)
            return jsonify({"flow": flow_id, "running_version": None, "running_instances": 0, "unchanged": False,
                            "changes": [c.as_dict(language) for c in changes]})
        old = read(running.source).data
        same_text = s.scalars(select(FlowVersion.id).where(
            FlowVersion.flow_id == flow_id, FlowVersion.content_hash == content_hash(source))).first()
        return jsonify({
            "flow": flow_id,
            "running_version": running.version,
            "running_instances": _running(s, running),
            # As the deploy decides: text already deployed as some version creates no new one.
            "unchanged": same_text is not None,
            "changes": [c.as_dict(language) for c in changes_mod.diff(old, new)],
        })


@bp.post("/designer/api/publish")
@_requires("flows.deploy")
def designer_publish() -> Any:
    _, source = _request_source()
    try:
        result = careflow().deploy_flow_text(source, SOURCE, by=principal().username)
    except FlowInvalid as exc:
        return _refused(_problems(exc, source))
    return jsonify({"flow": result.id, "version": result.version, "changed": result.changed})


__all__ = ["designer_changes", "designer_graph", "designer_palette", "designer_publish", "designer_source",
           "designer_yaml"]
