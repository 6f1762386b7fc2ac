"""The Flask application: sign-in and the status page, the REST API (``engine.api``) and the
public customer-link pages.

Security settings (all ``CAREFLOW_``-prefixed environment variables or ``create_app`` config):

* ``SECRET_KEY``: signs sessions, CSRF tokens and customer links. Without it a random key is
  made per process, so sessions and links die on restart: set it in production.
* ``SESSION_COOKIE_SECURE``: ``true``/``false``. Unset, cookies are ``Secure`` except on plain
  HTTP to a loopback address (``careflow run`` on http://127.0.0.1) and in tests.
* Cookies are always ``HttpOnly`` and ``SameSite=Lax``; a session lasts 8 hours at most.
* Every cookie-authenticated form (sign-in, sign-out, customer links) needs its CSRF token; the
  API is exempt because it accepts only Bearer tokens.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from apiflask import APIFlask
from flask import Flask, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import func, select

import admin
from engine import api, i18n, inbox, web
from engine.executors import celery_init_app
from engine.core import Careflow
from engine.store.db import database_url
from engine.store.definitions import latest_flow_versions
from engine.store.models import Incident, Instance, Task

DEFAULTS: Mapping[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    # None: Secure unless the request came over plain HTTP to a loopback address (see below).
    "SESSION_COOKIE_SECURE": None,
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "WTF_CSRF_TIME_LIMIT": 3600,
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


class CareflowSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the ``Secure`` flag decided per request when unset."""

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = app.config.get("SESSION_COOKIE_SECURE")
        if configured is not None:
            return bool(configured)
        if app.testing:
            return False
        host = (request.host or "").rsplit(":", 1)[0] if not request.host.startswith("[") else request.host.split("]")[0] + "]"
        return request.is_secure or host not in LOOPBACK_HOSTS


class LoginUser(UserMixin):
    def __init__(self, user: Mapping[str, Any], epoch: int):
        self.username = user["username"]
        self.id = f"{user['username']}:{epoch}"
        self.display_name = user["display_name"]
        self.roles = list(user["roles"])
        #: zh, en, or None (not chosen): the pages' language after sign-in (engine.i18n)
        self.language = user.get("language")


_safe_next = web.safe_next

#: the built-in roles' names for people; custom roles show as they are spelled
ROLE_LABELS = {
    "admin": _l("Administrator"),
    "designer": _l("Designer"),
    "account_manager": _l("Account manager"),
    "team_lead": _l("Team lead"),
    "service_agent": _l("Service agent"),
    "service_lead": _l("Service lead"),
}


def role_label(role: str) -> str:
    return str(ROLE_LABELS.get(role, role))


def _as_bool(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value


def create_app(config: Mapping[str, Any] | None = None, engine: Careflow | None = None) -> APIFlask:
    app = APIFlask(__name__, title="Careflow API", version="0.1.0", spec_path="/api/openapi.json", docs_path=None)
    app.config.from_mapping(DEFAULTS)
    if config is None:
        app.config.from_prefixed_env("CAREFLOW")
    else:
        app.config.update(config)
    app.config["SESSION_COOKIE_SECURE"] = _as_bool(app.config.get("SESSION_COOKIE_SECURE"))
    # A random key per process logs everyone out on restart; set CAREFLOW_SECRET_KEY to keep sessions.
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("CAREFLOW_SECRET_KEY") or secrets.token_hex(32)
    app.session_interface = CareflowSessionInterface()
    careflow = engine or Careflow(app.config.get("DATABASE_URL") or database_url())
    app.extensions["careflow"] = careflow
    celery_init_app(app)  # app.extensions["celery"] when CAREFLOW_BROKER_URL is set (distributed mode)

    csrf = CSRFProtect(app)
    api.init_app(app, csrf)

    i18n.init_app(app)
    web.init_app(app)
    app.jinja_env.globals["role_label"] = role_label
    app.register_blueprint(inbox.bp)
    app.register_blueprint(admin.bp)

    login = LoginManager(app)
    login.login_view = "login_form"
    login.login_message = _l("Please sign in to see this page.")
    login.login_message_category = "info"
    login.session_protection = "strong"

    @login.user_loader
    def load_user(user_id: str) -> LoginUser | None:
        username, _, epoch = user_id.rpartition(":")
        if not username or not epoch.isdigit():
            return None
        user = careflow.session_user(username, int(epoch))
        return LoginUser(user, int(epoch)) if user else None

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        if request.is_json:  # a page's fetch() (the designer): an answer it can show
            message = _("For your security, please go back, reload the page and submit again.")
            problem = {"message": message, "line": 0, "column": 0, "path": "$", "node": None, "edge": None}
            return {"error": message, "problems": [problem]}, 400
        return render_template("csrf_error.html"), 400

    @app.get("/login")
    @app.doc(hide=True)
    def login_form() -> Any:
        return render_template("login.html", error=None)

    @app.post("/login")
    @app.doc(hide=True)
    def login_post() -> Any:
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        result = careflow.login(username, password, request.remote_addr or "-")
        if result.locked_until is not None:
            wait = max(1, int((result.locked_until - careflow.clock.now()).total_seconds()))
            minutes = (wait + 59) // 60
            error = _("Too many failed sign-ins; try again in %(minutes)s min.", minutes=minutes)
            return render_template("login.html", error=error), 429, {"Retry-After": str(wait)}
        if result.user is None:
            return render_template("login.html", error=_("Wrong user name or password.")), 401
        # A fresh session: nothing an attacker planted before sign-in survives it.
        session.clear()
        login_user(LoginUser(result.user, result.session_epoch))
        session.permanent = True
        return redirect(_safe_next(request.args.get("next", "")) or url_for("home"))

    @app.post("/logout")
    @app.doc(hide=True)
    @login_required
    def logout() -> Any:
        careflow.logout(current_user.username, request.remote_addr)
        logout_user()
        session.clear()
        return redirect(url_for("login_form"))

    @app.get("/")
    @app.doc(hide=True)
    @login_required
    def home() -> str:
        with careflow.session() as s:
            flows = [(v.flow_id, v.version, v.name) for v in latest_flow_versions(s)]
            counts = dict(s.execute(select(Instance.status, func.count()).group_by(Instance.status)).all())
            open_tasks = s.scalar(select(func.count()).select_from(Task).where(Task.status == "open"))
            incidents = s.scalar(select(func.count()).select_from(Incident).where(Incident.status == "open"))
        return render_template("home.html", user=current_user, flows=flows, counts=counts,
                               open_tasks=open_tasks, incidents=incidents)

    return app
