"""The Flask application: a login page, a status page and the REST API's first routes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, jsonify, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from engine.core import Careflow
from engine.errors import EngineError
from engine.store.db import database_url
from engine.store.definitions import latest_flow_versions
from engine.store.models import Incident, Instance, Task, User

DEFAULTS: Mapping[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
}


class LoginUser(UserMixin):
    def __init__(self, user: User):
        self.id = user.username
        self.display_name = user.display_name
        self.roles = list(user.roles or [])


def create_app(config: Mapping[str, Any] | None = None, engine: Careflow | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if config is None:
        app.config.from_prefixed_env("CAREFLOW")
    else:
        app.config.update(config)
    # A random key per process logs everyone out on restart; set CAREFLOW_SECRET_KEY to keep sessions.
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("CAREFLOW_SECRET_KEY") or secrets.token_hex(32)
    careflow = engine or Careflow(app.config.get("DATABASE_URL") or database_url())
    app.extensions["careflow"] = careflow

    login = LoginManager(app)
    login.login_view = "login"
    login.session_protection = "strong"

    @login.user_loader
    def load_user(username: str) -> LoginUser | None:
        with careflow.session() as s:
            user = s.scalars(select(User).where(User.username == username, User.active.is_(True))).first()
            return LoginUser(user) if user else None

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html", error=None)

    @app.post("/login")
    def login() -> Any:
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        with careflow.session() as s:
            user = s.scalars(select(User).where(User.username == username, User.active.is_(True))).first()
            ok = user is not None and user.password_hash and check_password_hash(user.password_hash, password)
            if not ok:
                return render_template("login.html", error="用户名或密码错误 / Wrong user name or password"), 401
            login_user(LoginUser(user))
        target = request.args.get("next", "")
        # Only same-site relative paths: an absolute `next` would be an open redirect.
        # Browsers read "/\\host" as "//host", so backslashes are refused too.
        if not target.startswith("/") or target.startswith("//") or "\\" in target or urlsplit(target).netloc:
            target = url_for("home")
        return redirect(target)

    @app.post("/logout")
    @login_required
    def logout() -> Any:
        logout_user()
        return redirect(url_for("login_form"))

    @app.get("/")
    @login_required
    def home() -> str:
        with careflow.session() as s:
            flows = [(v.flow_id, v.version, v.name) for v in latest_flow_versions(s)]
            counts = dict(s.execute(select(Instance.status, func.count()).group_by(Instance.status)).all())
            open_tasks = s.scalar(select(func.count()).select_from(Task).where(Task.status == "open"))
            incidents = s.scalar(select(func.count()).select_from(Incident).where(Incident.status == "open"))
        return render_template("home.html", user=current_user, flows=flows, counts=counts,
                               open_tasks=open_tasks, incidents=incidents)

    @app.get("/api/health")
    def health() -> Any:
        with careflow.session() as s:
            s.execute(select(1))
        return jsonify({"status": "ok", "time": careflow.clock.now().isoformat()})

    @app.errorhandler(EngineError)
    def engine_error(exc: EngineError) -> Any:
        return jsonify({"error": {"code": exc.code, "message": str(exc), "details": []}}), exc.status

    @app.get("/api/instances/<int:instance_id>")
    @login_required
    def instance(instance_id: int) -> Any:
        if "admin" not in current_user.roles:
            abort(403)
        return jsonify(careflow.describe(instance_id))

    return app
