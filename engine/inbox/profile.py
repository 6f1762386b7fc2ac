"""My profile (个人设置): a user's own language, reminder channel and IM id.

The language chosen here decides the pages after sign-in (over the browser's) and the language of
reminders; the reminder channel says how task reminders reach the user (``engine.reminders``).
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import refresh
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from engine.api.auth import careflow
from engine.errors import SubmissionInvalid
from engine.inbox.views import bp
from engine.web import nav_item

#: what each field must look like, in the page's language (the engine's messages are English)
FIELD_RULES = {
    "language": _l("Choose Chinese, English or the browser's language."),
    "notify": _l("Choose how reminders reach you."),
    "im_id": _l("1 to 64 letters, digits, _ . @ or -, without spaces."),
}


def reminder_error(name: str, value: Any) -> str | None:
    """The message for a bad language, reminder channel or IM id, naming the field and the value given."""
    shown = str(value if value is not None else "")
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    if name == "language":
        return _("Language: “%(value)s” is not offered. Choose Chinese, English or the browser's language.", value=shown)
    if name == "notify":
        return _("Task reminders: “%(value)s” is not a choice. Choose e-mail, IM, both or none.", value=shown)
    if name == "im_id":
        return _("IM user ID: “%(value)s” is not valid. Use 1 to 64 letters, digits, _ . @ or -, without spaces.",
                 value=shown)
    return None


def reminder_form() -> dict[str, Any]:
    """The language and reminder fields as posted (the profile page and the admins' user page)."""
    return {"language": request.form.get("language", "") or None, "notify": request.form.get("notify", "email"),
            "im_id": request.form.get("im_id", "").strip() or None}


def field_errors(exc: SubmissionInvalid, values: dict[str, Any] | None = None) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for e in exc.errors:
        message = reminder_error(e.field, (values or {}).get(e.field)) if values is not None else None
        errors.setdefault(e.field, []).append(message or str(FIELD_RULES.get(e.field, e.message)))
    return errors


@bp.get("/profile")
@login_required
def profile() -> Any:
    user = careflow().user(current_user.username)
    return render_template("inbox/profile.html", user=user, values=user, errors={})


@bp.post("/profile")
@login_required
def profile_save() -> Any:
    data = reminder_form()
    try:
        careflow().update_profile(current_user.username, data)
    except SubmissionInvalid as exc:
        user = careflow().user(current_user.username)
        return render_template("inbox/profile.html", user=user, values=data, errors=field_errors(exc, data)), 422
    # The session's switch choice would hide the new preference: the profile decides from now on.
    session.pop("lang", None)
    current_user.language = data["language"]
    refresh()  # the confirmation in the language just chosen
    flash(_("Your settings are saved."), "success")
    return redirect(url_for("inbox.profile"))


nav_item("inbox.profile", _l("My profile"), order=90)
