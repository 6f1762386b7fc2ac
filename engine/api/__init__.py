"""The REST API under ``/api``: Bearer tokens, one error shape, OpenAPI 3.1 at ``/api/openapi.json``.

``init_app`` registers every area's blueprint on an ``APIFlask`` app; the blueprints are exempt
from CSRF protection because they never read the session cookie (Bearer tokens or, for inbound
webhooks, HMAC signatures only).
"""

from __future__ import annotations

from typing import Any

from apiflask import APIFlask
from flask import request
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from engine.api import admin, connectors, customers, errors, flows, forms, hooks, imports, instances, links, meta, segments, spec, tasks
from engine.api.errors import ApiError
from engine.api.safety import ContentRejected, IdConverter, IdentConverter, SafeJSONProvider, UsernameConverter, check_text, check_value

API_BLUEPRINTS = (
    meta.bp, flows.bp, instances.bp, tasks.bp, forms.bp, customers.bp, *admin.BLUEPRINTS, connectors.bp, hooks.bp,
    imports.bp,
    segments.bp,
)


def _guard() -> None:
    """Refuse, before any view runs, input that storage would choke on."""
    if not request.path.startswith("/api/"):
        return
    for key, values in request.args.lists():
        for text in (key, *values):
            try:
                check_text(text)
            except ValueError as exc:
                raise ApiError(422, "validation_failed", details=[
                    {"path": f"$.{key}", "field": key, "message": str(exc), "code": "pattern", "location": "query"}]) from None
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.is_json and request.content_length != 0:
        try:
            value = request.get_json()  # the app's SafeJSONProvider refuses NaN, overflow and deep recursion
        except Exception as exc:
            if getattr(exc, "code", None) == 413:
                raise
            raise ApiError(400, "bad_json", errors.text("bad_json")) from None
        try:
            check_value(value)
        except ContentRejected as exc:
            field = exc.path[2:].split(".")[0].split("[")[0] if exc.path.startswith("$.") else ""
            raise ApiError(422, "validation_failed", details=[
                {"path": exc.path, "field": field, "message": str(exc), "code": "pattern", "location": "json"}]) from None


def init_app(app: APIFlask, csrf: CSRFProtect) -> None:
    app.json = SafeJSONProvider(app)
    app.url_map.converters.update(id=IdConverter, ident=IdentConverter, username=UsernameConverter)
    app.config.setdefault("AUTO_OPERATION_ID", True)
    errors.init_app(app)
    spec.init_app(app)
    app.before_request(_guard)

    @app.errorhandler(IntegrityError)
    def integrity(exc: IntegrityError) -> Any:
        # Two requests raced for the same unique value; the loser is told, nothing half-done stays.
        return errors.body("conflict", errors.STATUS_TEXT[409][1 if errors.locale() == "zh" else 2]), 409

    @app.errorhandler(StaleDataError)
    def stale(exc: StaleDataError) -> Any:
        return errors.body("conflict", errors.STATUS_TEXT[409][1 if errors.locale() == "zh" else 2]), 409

    for bp in API_BLUEPRINTS:
        csrf.exempt(bp)
        app.register_blueprint(bp)
    app.register_blueprint(links.bp)


__all__ = ["API_BLUEPRINTS", "init_app"]
