"""What every web page shares: the layout's navigation, the language switch, security headers.

Pages extend ``layout.html`` (see its blocks) and are listed in the navigation with
``nav_item(endpoint, label, roles)``: an entry shows only when its endpoint is registered and the
signed-in user has one of its roles (``None``: every signed-in user). Labels are lazy gettext
strings so they follow the page's language.

Every HTML response carries a Content-Security-Policy without inline scripts or styles: page
scripts are files under ``static/js``, and htmx sends the CSRF token in the ``X-CSRFToken``
header that ``layout.html`` puts on ``<body>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for
from flask_babel import LazyString
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from engine.i18n import LOCALES

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)

bp = Blueprint("web", __name__)


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: LazyString | str
    roles: frozenset[str] | None
    order: int


NAV: list[NavItem] = []


def nav_item(endpoint: str, label: LazyString | str, roles: Iterable[str] | None = None, order: int = 100) -> None:
    """List a page in the navigation (idempotent per endpoint)."""
    NAV[:] = [item for item in NAV if item.endpoint != endpoint]
    NAV.append(NavItem(endpoint, label, frozenset(roles) if roles is not None else None, order))
    NAV.sort(key=lambda item: item.order)


def visible_nav(roles: Iterable[str]) -> list[NavItem]:
    held = set(roles)
    return [item for item in NAV
            if item.endpoint in current_app.view_functions and (item.roles is None or "admin" in held or item.roles & held)]


def safe_next(target: str | None) -> str | None:
    """Only same-site relative paths: an absolute target would be an open redirect.

    Browsers read "/\\host" as "//host", so backslashes are refused too.
    """
    from urllib.parse import urlsplit

    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or urlsplit(target).netloc:
        return None
    return target


@bp.post("/lang")
def switch_language() -> Any:
    """The language switch: remembered in the session, and as the signed-in user's own language
    (so it holds on their next sign-in too); back to the page it was pressed on."""
    chosen = request.form.get("lang", "")
    if chosen in LOCALES:
        session["lang"] = chosen
        if current_user.is_authenticated and getattr(current_user, "language", None) != chosen:
            current_app.extensions["careflow"].update_profile(current_user.username, {"language": chosen})
    return redirect(safe_next(request.form.get("next")) or url_for("home"))


CHANNEL_LABELS = {
    "email": _l("E-mail"), "sms": _l("SMS"), "wecom": _l("WeCom"), "phone": _l("Phone call"),
    "dingtalk": _l("DingTalk"), "feishu": _l("Feishu"),
}


def channel_label(channel: str) -> str:
    return str(CHANNEL_LABELS.get(channel, channel))


def html_errors(blueprint: Blueprint) -> None:
    """Answer 403, 404 and 413 inside a blueprint's pages with a page in the user's language.

    (The app-wide handlers answer JSON for the API; pages' blueprints call this instead.)
    """

    @blueprint.errorhandler(413)
    def too_large(exc: Any) -> Any:
        limit = (current_app.config.get("MAX_CONTENT_LENGTH") or 0) // (1024 * 1024)
        return render_template("message.html", title=_("The upload is too large"),
                               text=_("A form may send at most %(mb)s MB; choose a smaller file.", mb=limit)), 413

    @blueprint.errorhandler(404)
    def not_found(exc: Any) -> Any:
        return render_template("message.html", title=_("Not found"),
                               text=_("This page does not exist, or you may not see it.")), 404

    @blueprint.errorhandler(403)
    def forbidden(exc: Any) -> Any:
        return render_template("message.html", title=_("Not allowed"), text=_("Your roles do not allow this page.")), 403


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals["channel_label"] = channel_label

    @app.context_processor
    def navigation() -> dict[str, Any]:
        signed_in = current_user.is_authenticated
        items = visible_nav(current_user.roles) if signed_in else []
        return {"nav_items": items, "current_endpoint": request.endpoint}

    @app.after_request
    def security_headers(response: Any) -> Any:
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


nav_item("home", _l("Overview"), order=10)
