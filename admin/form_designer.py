"""The form designer: the forms list, and a page that edits a form as a list of fields.

The page (``admin/static/js/form_designer.js``, Alpine's CSP build + SortableJS) edits a *design*
(``engine.forms_design``); every conversion and check happens here, in Python:

- ``POST /admin/forms/api/preview`` ``{"design", "values"?, "check"?}`` -> ``{"schema": JSON text,
  "problems": [{"field", "message", "path", "line", "column"}], "html": the fields as the inbox
  renders them (engine/templates/_form_fields.html), "controls": fields others depend on}``. With
  ``check`` the preview's values are validated too, and their errors are shown on the fields.
- ``POST /admin/forms/api/open`` ``{"text", "id"}`` -> ``{"design", "problems"}``: the raw JSON
  tab; 422 when the text is not JSON at all.
- ``POST /admin/forms/api/save`` ``{"design"}`` -> ``{"form", "version", "changed", "url"}``, or 422
  ``{"problems"}``: deployed through ``Careflow.deploy_form_text``, checked as ``careflow validate``
  checks a form file, audited.

Opening a form with constructs outside the designer's subset keeps them: such fields are shown
read-only with their JSON, the form's other rules in a read-only box, and both are saved unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import abort, jsonify, make_response, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from admin import bp
from admin.access import careflow, principal, requires
from engine import forms
from engine.auth.scope import role_allows
from engine.errors import DefinitionInvalid, SubmissionInvalid
from engine.forms_design import FIELD_TYPES, DesignProblem, design_problems, field_of_path, from_design, new_design
from engine.forms_design import schema_text, to_design
from engine.i18n import lang
from engine.store.models import FormVersion

MAX_FORM_CHARS = 200_000
_FORM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # engine.forms' rule for form ids

TYPE_LABELS = {
    "text": _l("Short text"), "textarea": _l("Long text"), "number": _l("Number"), "integer": _l("Whole number"),
    "select": _l("Drop-down list"), "radio": _l("Single choice"), "yesno": _l("Yes / no"),
    "checkbox": _l("Check box"), "checkboxes": _l("Multiple choice"), "date": _l("Date"),
    "datetime": _l("Date and time"), "phone": _l("Phone number"), "email": _l("E-mail address"),
    "rating": _l("Rating"), "file": _l("File"),
}

_MESSAGES = {
    "form_id": _l("The form ID must be letters, digits, _ or - (at most 64), such as call_back."),
    "title": _l("Give the form a title in Chinese and in English."),
    "key": _l("The field name must start with a letter and contain only letters, digits and _ (not csrf_token)."),
    "duplicate": _l("Two fields have the same name; each needs its own."),
    "type": _l("Choose the field's type."),
    "label": _l("Give the field a label in Chinese and in English."),
    "no_options": _l("Add at least one option."),
    "option_value": _l("Every option needs a value."),
    "option_duplicate": _l("Two options have the same value."),
    "not_number": _l("Minimum, maximum and lengths must be numbers."),
    "min_max": _l("The minimum is larger than the maximum."),
    "rating": _l("A rating needs a minimum and a maximum, such as 1 and 5."),
    "show_if_self": _l("A field cannot depend on itself."),
    "show_if_field": _l("The field this one depends on does not exist."),
}


def _design_message(problem: DesignProblem) -> dict[str, Any]:
    return {"field": problem.field, "message": str(_MESSAGES.get(problem.code, problem.code)), "path": "",
            "line": 0, "column": 0}


def _check(design: dict[str, Any]) -> tuple[dict[str, Any], str, list[dict[str, Any]], forms.Form | None]:
    """(schema, its text, problems, the loaded form when it has none)."""
    schema = from_design(design)
    text = schema_text(schema)
    found = design_problems(design)
    problems = [_design_message(p) for p in found]
    if problems:
        # The schema checks would mostly repeat these (in the CLI's words); they run once these are fixed.
        return schema, text, problems, None
    form_id = str(design.get("id"))
    try:
        form = forms.load_form_text(text, f"{form_id}{forms.FORM_SUFFIX}", form_id)
    except DefinitionInvalid as exc:
        problems += [{"field": field_of_path(p.path, schema), "message": p.text(lang()), "path": p.path, "line": p.line,
                      "column": p.column} for p in exc.problems]
        form = None
    return schema, text, problems, (form if not problems else None)


_SCALAR = (str, int, float, bool, type(None))
_TEXT = (dict, type(None))
# What each key of a design (and of its fields) may hold; the page always sends this shape.
_DESIGN_SHAPE: dict[str, tuple[type, ...]] = {"id": (str, type(None)), "title": _TEXT, "description": _TEXT,
                                             "order": (bool, type(None)), "fields": (list, type(None)),
                                             "extra": _TEXT}
_FIELD_SHAPE: dict[str, tuple[type, ...]] = {
    "key": (str, type(None)), "type": (str, type(None)), "label": _TEXT, "help": _TEXT, "required": (bool, type(None)),
    "options": (list, type(None)), "min": _SCALAR, "max": _SCALAR, "minLength": _SCALAR, "maxLength": _SCALAR,
    "pattern": (str, type(None)), "show_if": _TEXT, "widget_explicit": (bool, type(None)), "extra": _TEXT,
    "locked": (bool, type(None)),
}


def _shape_problem(field: str, what: str, value: Any) -> dict[str, Any]:
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return {"field": field, "message": _("%(what)s cannot be %(value)s.", what=what, value=shown), "path": what,
            "line": 0, "column": 0}


def _shape_problems(design: dict[str, Any]) -> list[dict[str, Any]]:
    """Values of the wrong JSON type in a design, each named by field, key and value."""
    found = [_shape_problem("", name, design[name]) for name, kinds in _DESIGN_SHAPE.items()
             if name in design and not isinstance(design[name], kinds)]
    fields = design.get("fields")
    for index, item in enumerate(fields if isinstance(fields, list) else []):
        where = f"fields[{index}]"
        if not isinstance(item, dict):
            found.append(_shape_problem("", where, item))
            continue
        name = item.get("key") if isinstance(item.get("key"), str) and item.get("key") else f"#{index + 1}"
        for key, kinds in _FIELD_SHAPE.items():
            if key in item and not isinstance(item[key], kinds):
                found.append(_shape_problem(name, f"{where}.{key}", item[key]))
        for number, option in enumerate(item.get("options") if isinstance(item.get("options"), list) else []):
            if not isinstance(option, dict):
                found.append(_shape_problem(name, f"{where}.options[{number}]", option))
            elif not isinstance(option.get("value"), _SCALAR):
                found.append(_shape_problem(name, f"{where}.options[{number}].value", option["value"]))
            elif not isinstance(option.get("label"), _TEXT):
                found.append(_shape_problem(name, f"{where}.options[{number}].label", option["label"]))
        show = item.get("show_if")
        if isinstance(show, dict):
            if not isinstance(show.get("field"), (str, type(None))):
                found.append(_shape_problem(name, f"{where}.show_if.field", show["field"]))
            if not isinstance(show.get("equals"), _SCALAR):
                found.append(_shape_problem(name, f"{where}.show_if.equals", show["equals"]))
    return found


def _design_from_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("design"), dict):
        abort(400)
    design: dict[str, Any] = body["design"]
    if len(json.dumps(design, ensure_ascii=False)) > MAX_FORM_CHARS:
        abort(413)
    # Not the page's shape: 422 naming each wrong value, never a crash further on.
    problems = _shape_problems(design)
    if problems:
        abort(make_response(jsonify({"problems": problems}), 422))
    return design


@bp.get("/forms")
@requires("forms.read")
def forms_list() -> Any:
    with careflow().session() as s:
        newest = select(FormVersion.form_id, func.max(FormVersion.version).label("v")).group_by(FormVersion.form_id).subquery()
        versions = list(s.scalars(select(FormVersion).join(
            newest, (FormVersion.form_id == newest.c.form_id) & (FormVersion.version == newest.c.v))
            .order_by(FormVersion.form_id)))
        rows = []
        for v in versions:
            try:
                title = json.loads(v.source).get("x-title") or {}
            except ValueError:
                title = {}
            rows.append({"id": v.form_id, "title": title, "version": v.version, "deployed_at": v.deployed_at})
    return render_template("admin/form_designer_list.html", forms=rows,
                           can_design=role_allows(principal(), "flows.deploy"))


def _page(design: dict[str, Any], existing: bool) -> Any:
    return render_template("admin/form_designer.html", design=design, existing=existing, wide=True,
                           types=[{"value": t, "label": str(TYPE_LABELS[t])} for t in FIELD_TYPES],
                           urls={"preview": url_for("admin.form_designer_preview"),
                                 "open": url_for("admin.form_designer_open"),
                                 "save": url_for("admin.form_designer_save")})


@bp.get("/forms/new")
@requires("flows.deploy")
def form_designer_new() -> Any:
    return _page(new_design(), existing=False)


@bp.get("/forms/<form_id>/design")
@requires("flows.deploy")
def form_designer(form_id: str) -> Any:
    if not _FORM_ID_RE.fullmatch(form_id):
        abort(404)
    with careflow().session() as s:
        version = s.scalars(select(FormVersion).where(FormVersion.form_id == form_id)
                            .order_by(FormVersion.version.desc()).limit(1)).first()
        if version is None:
            abort(404)
        source = version.source
    return _page(to_design(json.loads(source), form_id), existing=True)


@bp.post("/forms/api/preview")
@requires("flows.deploy")
def form_designer_preview() -> Any:
    design = _design_from_body()
    body = request.get_json()
    schema, text, problems, form = _check(design)
    html = ""
    controls: list[str] = []
    if form is not None:
        raw = body.get("values") if isinstance(body.get("values"), dict) else {}
        posted = MultiDict([(str(k), str(v)) for k, vs in raw.items() for v in (vs if isinstance(vs, list) else [vs])])
        values = {f.name: f.schema["default"] for f in form.fields if "default" in f.schema}
        values.update({k: v for k, v in forms.coerce_form_post(form, posted).items() if v is not None})
        errors: dict[str, list[str]] = {}
        if body.get("check"):
            try:
                forms.check_submission(form, values, locale=lang())
            except SubmissionInvalid as exc:
                for e in exc.errors:
                    errors.setdefault(e.field or "", []).append(e.message)
        controls = sorted({str(f.show_if["field"]) for f in form.fields if f.show_if and "field" in f.show_if})
        html = render_template("admin/form_designer_preview.html", form=form, errors=errors, lang=lang(),
                               fields=forms.visible_fields(form, values), values=values, checked=bool(body.get("check")))
    return jsonify({"schema": text, "problems": problems, "html": html, "controls": controls})


@bp.post("/forms/api/open")
@requires("flows.deploy")
def form_designer_open() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        abort(400)
    text = body["text"]
    if len(text) > MAX_FORM_CHARS:
        abort(413)
    try:
        schema = json.loads(text)
    except ValueError as exc:
        return jsonify({"problems": [{"field": "", "message": _("This is not JSON: %(error)s", error=str(exc)),
                                      "path": "", "line": getattr(exc, "lineno", 0), "column": getattr(exc, "colno", 0)}]}), 422
    if not isinstance(schema, dict):
        return jsonify({"problems": [{"field": "", "message": _("A form is a JSON object."), "path": "", "line": 1,
                                      "column": 1}]}), 422
    design = to_design(schema, str(body.get("id") or ""))
    problems = _check(design)[2]
    return jsonify({"design": design, "problems": problems})


@bp.post("/forms/api/save")
@requires("flows.deploy")
def form_designer_save() -> Any:
    design = _design_from_body()
    schema, text, problems, _form = _check(design)
    if problems:
        return jsonify({"problems": problems}), 422
    form_id = str(design["id"])
    try:
        result = careflow().deploy_form_text(text, f"{form_id}{forms.FORM_SUFFIX}", by=principal().username)
    except DefinitionInvalid as exc:  # checked just above; only a race with another deploy gets here
        return jsonify({"problems": [{"field": field_of_path(p.path, schema), "message": p.text(lang()), "path": p.path,
                                      "line": p.line, "column": p.column} for p in exc.problems]}), 422
    if result.changed:
        message = _("Saved %(form)s as version %(version)s.", form=result.id, version=result.version)
    else:
        message = _("Nothing changed: this is already version %(version)s of %(form)s.", form=result.id,
                    version=result.version)
    return jsonify({"form": result.id, "version": result.version, "changed": result.changed, "message": message,
                    "url": url_for("admin.form_designer", form_id=result.id)})
