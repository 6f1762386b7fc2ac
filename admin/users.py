"""Users, their roles, and API tokens (created and revoked here; a new token is shown once).

The same facade methods and rules as the API: ``users.admin`` and ``tokens.admin`` (admins), an
admin cannot deactivate themselves or drop their own admin role, every change is audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from admin import bp
from admin.access import careflow, principal, requires
from engine.auth.users import UserLookupError
from engine.errors import Conflict, EngineError, SubmissionInvalid
from engine.inbox.profile import reminder_error, reminder_form
from engine.roles import BUILTIN_ROLES

SCOPES = ("read", "write", "admin")
#: what each field must look like, in the page's language (the engine's messages are English)
FIELD_RULES = {
    "username": _l("A user name is 1–64 lowercase letters, digits, “.”, “_” or “-”."),
    "display_name": _l("The display name must be 1–100 characters."),
    "email": _l("Not an e-mail address."),
    "roles": _l("Roles are lowercase letters, digits and “_”."),
    "team": _l("At most 64 characters."),
    "region": _l("At most 64 characters."),
    "password": _l("A password has 10 to 256 characters."),
    "language": _l("Choose Chinese, English or the browser's language."),
    "notify": _l("Choose how reminders reach the user."),
    "im_id": _l("1 to 64 letters, digits, _ . @ or -, without spaces."),
}


def _field_errors(exc: SubmissionInvalid, values: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for e in exc.errors:
        message = reminder_error(e.field, values.get(e.field))  # the value named, as on "My profile"
        errors.setdefault(e.field, []).append(message or str(FIELD_RULES.get(e.field, e.message)))
    return errors


def _roles_from_form() -> list[str]:
    roles = [r for r in request.form.getlist("roles") if r]
    extra = request.form.get("custom_roles", "")
    roles += [r.strip() for r in extra.replace("，", ",").split(",") if r.strip()]
    return list(dict.fromkeys(roles))


def _known_roles() -> list[str]:
    custom = {r for u in careflow().users() for r in u["roles"]} - BUILTIN_ROLES
    return sorted(BUILTIN_ROLES) + sorted(custom)


@bp.get("/users")
@requires("users.admin")
def users() -> Any:
    return render_template("admin/users.html", users=careflow().users(), roles=_known_roles(), values={}, errors={})


@bp.post("/users")
@requires("users.admin")
def create_user() -> Any:
    data: dict[str, Any] = {
        "username": request.form.get("username", "").strip(),
        "display_name": request.form.get("display_name", "").strip() or request.form.get("username", "").strip(),
        "roles": _roles_from_form(),
        **reminder_form(),
    }
    for key in ("email", "team", "region"):
        if request.form.get(key, "").strip():
            data[key] = request.form[key].strip()
    if request.form.get("password"):
        data["password"] = request.form["password"]
    try:
        careflow().create_user(data, actor=principal().username)
    except SubmissionInvalid as exc:
        errors = _field_errors(exc, data)
    except Conflict:
        errors = {"username": [_("This user name is taken.")]}
    else:
        flash(_("User %(name)s created.", name=data["username"]), "success")
        return redirect(url_for("admin.user", username=data["username"]))
    return render_template("admin/users.html", users=careflow().users(), roles=_known_roles(),
                           values={**data, "password": ""}, errors=errors), 422


def _user_or_404(username: str) -> dict[str, Any]:
    try:
        return careflow().user(username)
    except UserLookupError:
        abort(404)


@bp.get("/users/<username:username>")
@requires("users.admin")
def user(username: str) -> Any:
    return render_template("admin/user.html", user=_user_or_404(username), roles=_known_roles(), errors={},
                           tokens=careflow().list_tokens(username, include_revoked=True), scopes=SCOPES)


@bp.post("/users/<username:username>")
@requires("users.admin")
def update_user(username: str) -> Any:
    current = _user_or_404(username)
    data: dict[str, Any] = {
        "display_name": request.form.get("display_name", "").strip(),
        "roles": _roles_from_form(),
        "email": request.form.get("email", "").strip() or None,
        "team": request.form.get("team", "").strip() or None,
        "region": request.form.get("region", "").strip() or None,
        **{k: v for k, v in reminder_form().items() if k in request.form},
        "active": request.form.get("active") == "true",
    }
    if request.form.get("password"):
        data["password"] = request.form["password"]
    errors: dict[str, list[str]] = {}
    try:
        careflow().update_user(username, data, actor=principal().username)
    except SubmissionInvalid as exc:
        errors = _field_errors(exc, data)
    except Conflict as exc:
        message = (_("You cannot deactivate yourself.") if "deactivate" in str(exc)
                   else _("You cannot remove your own admin role."))
        errors = {"": [message]}
    else:
        flash(_("User %(name)s saved.", name=username), "success")
        return redirect(url_for("admin.user", username=username))
    shown = {**current, **{k: v for k, v in data.items() if k != "password"}}
    return render_template("admin/user.html", user=shown, roles=_known_roles(), errors=errors,
                           tokens=careflow().list_tokens(username, include_revoked=True), scopes=SCOPES), 422


@bp.get("/tokens")
@requires("tokens.admin")
def tokens() -> Any:
    return render_template("admin/tokens.html", tokens=careflow().list_tokens(None, include_revoked=True),
                           users=[u for u in careflow().users() if u["active"]], scopes=SCOPES, created=None, errors={})


@bp.post("/tokens")
@requires("tokens.admin")
def create_token() -> Any:
    errors: dict[str, list[str]] = {}
    username = request.form.get("user", "")
    name = request.form.get("name", "").strip()[:100]
    scopes = [s for s in request.form.getlist("scopes") if s in SCOPES]
    days_text = request.form.get("expires_in_days", "").strip()
    days: int | None = None
    if not name:
        errors["name"] = [_("Give the token a name, such as the system that will use it.")]
    if not scopes:
        errors["scopes"] = [_("Choose at least one scope.")]
    if days_text:
        if not days_text.isdigit() or not 1 <= int(days_text) <= 3650:
            errors["expires_in_days"] = [_("Enter a number of days from 1 to 3650.")]
        else:
            days = int(days_text)
    created = None
    if not errors:
        expires = careflow().clock.now() + timedelta(days=days) if days else None
        try:
            info, secret = careflow().create_token(username, scopes, name=name, actor=principal().username, expires_at=expires)
        except UserLookupError:
            errors["user"] = [_("No such user.")]
        except EngineError as exc:
            errors["scopes"] = [_("The token could not be created: %(reason)s", reason=str(exc))]
        else:
            created = {**info, "token": secret}
    page = render_template("admin/tokens.html", tokens=careflow().list_tokens(None, include_revoked=True),
                           users=[u for u in careflow().users() if u["active"]], scopes=SCOPES, created=created,
                           errors=errors, values=request.form)
    # The token text is in this response only: keep it out of every cache.
    return page, 201 if created else 422, {"Cache-Control": "no-store"}


@bp.post("/tokens/<id:token_id>/revoke")
@requires("tokens.admin")
def revoke_token(token_id: int) -> Any:
    try:
        careflow().revoke_token(token_id, actor=principal().username)
    except EngineError:
        abort(404)
    flash(_("Token revoked; it no longer works."), "success")
    back_to_user = request.form.get("user", "")
    if back_to_user:
        return redirect(url_for("admin.user", username=back_to_user))
    return redirect(url_for("admin.tokens"))
