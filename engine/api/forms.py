"""Forms: list, schema with UI hints, submit (which may start flows)."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g
from sqlalchemy import func, select

from engine import forms
from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import locale, references
from engine.errors import CustomerLookupError
from engine.api.schemas import EXAMPLES, FormDetailOut, FormOut, SubmissionIn, SubmissionOut
from engine.store.definitions import latest_form
from engine.store.models import FormVersion

bp = APIBlueprint("forms", __name__, url_prefix="/api/forms", tag="Forms")


def field_dict(f: forms.FormField) -> dict[str, Any]:
    return {
        "name": f.name,
        "label": dict(f.label),
        "widget": f.widget,
        "required": f.required,
        "help": dict(f.help or {}),
        "options": [{"value": value, "label": dict(label)} for value, label in f.options],
        "show_if": dict(f.show_if) if f.show_if is not None else None,
        "prefill": f.prefill,
    }


def _versions(s: Any) -> dict[str, int]:
    return dict(s.execute(select(FormVersion.form_id, func.max(FormVersion.version)).group_by(FormVersion.form_id)).all())


@bp.get("")
@bp.auth_required(token_auth)
@bp.output(FormOut(many=True))
@requires("forms.read")
def list_forms() -> Any:
    """The newest version of every deployed form."""
    with careflow().session() as s:
        out = []
        for form_id, version in sorted(_versions(s).items()):
            form = latest_form(s, form_id)
            out.append({"id": form_id, "version": version, "title": dict(form.title)})
        return out


@bp.get("/<ident:form_id>")
@bp.auth_required(token_auth)
@bp.output(FormDetailOut)
@requires("forms.read")
def get_form(form_id: str) -> Any:
    """The form's JSON Schema and its fields with labels, widgets and options in zh and en."""
    with careflow().session() as s:
        form = latest_form(s, form_id)
        version = _versions(s).get(form_id, 0)
        return {"id": form.id, "version": version, "title": dict(form.title), "schema": dict(form.schema),
                "field_list": [field_dict(f) for f in form.fields]}


@bp.post("/<ident:form_id>/submissions")
@bp.auth_required(token_auth)
@bp.input(SubmissionIn, arg_name="body", example=EXAMPLES[SubmissionIn])
@bp.output(SubmissionOut, status_code=201)
@bp.doc(responses={422: "The answers do not satisfy the form; details name each field"})
@requires("forms.submit")
def submit(form_id: str, body: dict[str, Any]) -> Any:
    """Validate the answers and start every flow the form triggers (new customer, complaint…)."""
    with references(data=CustomerLookupError):
        result = careflow().submit_form(form_id, body["data"], user=g.principal.username, locale=locale())
    return result, 201
