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

from flask import Blueprint, Flask, current_app, redirect, request, session, url_for
from flask_babel import LazyString, lazy_gettext as _l
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
    """The language switch: remembered in the session, back to the page it was pressed on."""
    chosen = request.form.get("lang", "")
    if chosen in LOCALES:
        session["lang"] = chosen
    return redirect(safe_next(request.form.get("next")) or url_for("home"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

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
