"""The public customer-link page ``/l/<token>``: one form, no sign-in, one answer.

A plain blueprint (HTML, not part of the OpenAPI document) protected by CSRF like every
cookie-backed form. A used, expired or no longer needed link answers 410, a tampered or unknown
one 400; both show a page saying so and change nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask_babel import lazy_gettext as _l

from engine import forms
from engine.api.auth import careflow
from engine.i18n import lang as locale
from engine.auth.links import LinkGone, LinkInvalid
from engine.errors import EngineError, FieldError, SubmissionInvalid

bp = Blueprint("links", __name__)

PAGES = {
    "invalid": (_l("This link is not valid"), _l("Please check that the link is complete, or contact your account manager.")),
    "gone": (_l("This link is no longer valid"),
             _l("It has been used already or has expired. If you need help, please contact your account manager.")),
    "done": (_l("Thank you!"), _l("We have received your answer.")),
}


def _message(kind: str, status: int) -> tuple[str, int, dict[str, str]]:
    title, text = PAGES[kind]
    html = render_template("link_message.html", title=str(title), text=str(text), lang=locale())
    return html, status, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _form_page(form: forms.Form, values: dict[str, Any], errors: list[FieldError], status: int) -> tuple[str, int, dict[str, str]]:
    lang = locale()
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for e in errors:
        (by_field.setdefault(e.field, []) if e.field else general).append(e.message)
    fields = forms.visible_fields(form, values)
    html = render_template("link_form.html", form=form, fields=fields, values=values, errors=by_field,
                           general=general, lang=lang, token=request.view_args["token"] if request.view_args else "")
    return html, status, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.get("/l/<path:token>")
def show(token: str) -> Any:
    try:
        _link, form = careflow().open_customer_link(token, secret=current_app.config["SECRET_KEY"])
    except LinkInvalid:
        return _message("invalid", 400)
    except (LinkGone, EngineError):
        return _message("gone", 410)
    return _form_page(form, {}, [], 200)


@bp.post("/l/<path:token>")
def submit(token: str) -> Any:
    secret = current_app.config["SECRET_KEY"]
    try:
        _link, form = careflow().open_customer_link(token, secret=secret)
    except LinkInvalid:
        return _message("invalid", 400)
    except (LinkGone, EngineError):
        return _message("gone", 410)
    posted: Any = request.form  # a MultiDict: coerce_form_post reads repeated fields with getlist
    data = forms.coerce_form_post(form, posted)
    try:
        careflow().submit_customer_link(token, data, secret=secret, locale=locale(), ip=request.remote_addr)
    except SubmissionInvalid as exc:
        return _form_page(form, data, exc.errors, 422)
    except LinkInvalid:
        return _message("invalid", 400)
    except LinkGone:
        return _message("gone", 410)
    return _message("done", 200)
