"""Connectors: attach and edit (a form made from the type's settings JSON Schema), test send,
the delivery log. Admins only (``connectors.admin``), as in the API.

Secrets are never sent back to the browser: their inputs are empty with the masked value as a
hint, and an input left empty keeps the stored secret (``save_connector`` merges it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from admin import bp
from admin.access import careflow, principal, requires
from admin.connector_help import described
from engine.api.connectors import DELIVERY_STATES
from engine.errors import Conflict, EngineError, SubmissionInvalid
from engine.secrets import secret_fields

LONG_TEXT = ("ca_cert", "template", "headers")


@dataclass(frozen=True)
class SettingField:
    """One input of a connector's settings form, derived from a JSON Schema property."""

    name: str
    kind: str  # text, number, integer, select, checkbox, password, email, textarea, url
    required: bool
    description: str
    options: tuple[Any, ...] = ()
    default: Any = None


def setting_fields(schema: Mapping[str, Any]) -> list[SettingField]:
    secrets = secret_fields(schema)
    required = set(schema.get("required", []))
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = "text"
        types = prop.get("type")
        if "enum" in prop:
            kind = "select"
        elif name in secrets:
            kind = "password"
        elif types == "boolean":
            kind = "checkbox"
        elif types in ("integer", "number"):
            kind = types
        elif prop.get("format") == "email":
            kind = "email"
        elif prop.get("format") == "uri":
            kind = "url"
        elif name in LONG_TEXT or types in ("object", "array"):
            kind = "textarea"
        fields.append(SettingField(name, kind, name in required, str(prop.get("description", "")),
                                   tuple(prop.get("enum", ())), prop.get("default")))
    return fields


def parse_settings(fields: list[SettingField], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Typed settings from the submitted form, and the inputs that are not numbers where one is needed."""
    import json

    settings: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for f in fields:
        if f.kind == "checkbox":
            settings[f.name] = form.get(f.name) == "true"
            continue
        raw = (form.get(f.name) or "").strip() if f.kind != "textarea" else (form.get(f.name) or "")
        if raw.strip() == "":
            continue  # left empty: not set (a secret keeps its stored value)
        if f.kind == "integer":
            try:
                settings[f.name] = int(raw)
            except ValueError:
                errors[f.name] = [_("Enter a whole number.")]
        elif f.kind == "number":
            try:
                settings[f.name] = float(raw)
            except ValueError:
                errors[f.name] = [_("Enter a number.")]
        elif f.kind == "textarea" and f.name not in LONG_TEXT:
            try:
                settings[f.name] = json.loads(raw)
            except ValueError:
                errors[f.name] = [_("Enter valid JSON.")]
        else:
            settings[f.name] = raw
    return settings, errors


def _types() -> dict[str, Any]:
    registry = careflow().registry
    return {name: registry.get(name) for name in sorted(registry.names())}


def _attached(name: str) -> dict[str, Any] | None:
    return next((c for c in careflow().connectors() if c["name"] == name), None)


@bp.get("/connectors")
@requires("connectors.admin")
def connectors() -> Any:
    status = request.args.get("status", "")
    return render_template("admin/connectors.html", attached=careflow().connectors(), types=_types(),
                           deliveries=careflow().delivery_log(status=status if status in DELIVERY_STATES else None, limit=50),
                           states=DELIVERY_STATES, status=status)


def _form(name: str, type_: str, values: Mapping[str, Any], masked: Mapping[str, Any], errors: Mapping[str, list[str]],
          general: list[str], new: bool, enabled: bool, status: int = 200) -> Any:
    types = _types()
    if type_ not in types:
        abort(404)
    return render_template("admin/connector.html", name=name, type_=type_, connector=types[type_], described=described,
                           fields=setting_fields(types[type_].settings_schema), values=values, masked=masked,
                           errors=errors, general=general, new=new, enabled=enabled), status


@bp.get("/connectors/new/<ident:type_>")
@requires("connectors.admin")
def new_connector(type_: str) -> Any:
    return _form("", type_, {}, {}, {}, [], True, True)


@bp.get("/connectors/<ident:name>")
@requires("connectors.admin")
def connector(name: str) -> Any:
    found = _attached(name)
    if found is None:
        abort(404)
    secrets = secret_fields(careflow().registry.get(found["type"]).settings_schema)
    plain = {k: v for k, v in found["settings"].items() if k not in secrets}
    masked = {k: v for k, v in found["settings"].items() if k in secrets}
    return _form(name, found["type"], plain, masked, {}, [], False, found["enabled"])


@bp.post("/connectors/save")
@requires("connectors.admin")
def save_connector() -> Any:
    name = request.form.get("name", "").strip()
    type_ = request.form.get("type", "")
    new = request.form.get("new") == "1"
    types = _types()
    if type_ not in types:
        abort(404)
    fields = setting_fields(types[type_].settings_schema)
    settings, errors = parse_settings(fields, request.form)
    enabled = request.form.get("enabled") == "true"
    general: list[str] = []
    existing = _attached(name) if name else None
    if new and existing is not None:
        errors["name"] = [_("A connector with this name already exists.")]
    if not errors:
        try:
            careflow().save_connector(name, type_, settings, by=principal().username, enabled=enabled)
        except SubmissionInvalid as exc:
            for e in exc.errors:
                (errors.setdefault(e.field, []) if e.field else general).append(e.message)
        except Conflict as exc:
            general.append(str(exc))
        else:
            flash(_("Connector %(name)s saved.", name=name), "success")
            return redirect(url_for("admin.connector", name=name))
    shown = {k: v for k, v in request.form.items() if k in {f.name for f in fields if f.kind != "password"}}
    masked = {k: v for k, v in (existing or {}).get("settings", {}).items() if k in secret_fields(types[type_].settings_schema)}
    return _form(name, type_, shown, masked, errors, general, new, enabled, 422)


@bp.post("/connectors/<ident:name>/test")
@requires("connectors.admin")
def test_send(name: str) -> Any:
    if _attached(name) is None:
        abort(404)
    to = request.form.get("to", "").strip()
    if not to:
        flash(_("Enter an address or phone number to send the test to."), "error")
        return redirect(url_for("admin.connector", name=name))
    text = request.form.get("text", "").strip() or _("Careflow test message")
    try:
        result = careflow().test_send(name, to[:254], text[:2000], _("Careflow test"))
    except EngineError as exc:
        flash(_("The test could not be sent: %(reason)s", reason=str(exc)), "error")
    else:
        if result["status"] == "sent":
            flash(_("Test message sent to %(to)s.", to=to), "success")
        else:
            flash(_("The test message was not sent (%(status)s): %(error)s", status=result["status"],
                    error=result["error"] or "-"), "error")
    return redirect(url_for("admin.connector", name=name))
