"""The operations staff's and admins' pages (flows, instances, connectors, users, audit, dashboard).

One blueprint, ``admin.bp``, mounted at ``/admin`` by ``engine.app.create_app``. Its templates
(``admin/templates``) extend the engine's ``layout.html``; its catalogs live in
``admin/translations`` and are merged with the engine's (see ``engine.i18n``). Pages appear in
the navigation through ``engine.web.nav_item(endpoint, label, roles)``.

Each area is one module; every view checks the REST API's operation for what it does
(``admin.access.requires``) and filters records with the API's record scope.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_babel import lazy_gettext as _l

from engine.web import nav_item

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static",
               static_url_path="/static")


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


@bp.errorhandler(403)
def forbidden(_exc: Exception) -> Any:
    return render_template("admin/error.html", status=403), 403


@bp.errorhandler(404)
def not_found(_exc: Exception) -> Any:
    return render_template("admin/error.html", status=404), 404


from admin import audit, connectors, dashboard, flows, imports, instances, users  # noqa: E402  (views register on bp)
from admin import designer_page  # noqa: E402,F401  (the flow designer's page)
from admin import designer_api  # noqa: E402,F401  (the designer's JSON endpoints)
from admin import dry_run  # noqa: E402,F401  (the designer's dry run: POST /admin/designer/api/dry-run)
from admin import form_designer  # noqa: E402,F401  (the form designer's pages and endpoints)

LEADS_AND_DESIGNERS = ("designer", "team_lead", "service_lead")
nav_item("admin.dashboard", _l("Dashboard"), LEADS_AND_DESIGNERS, order=50)
nav_item("admin.flows", _l("Flows"), ("designer",), order=51)
nav_item("admin.forms_list", _l("Forms"), ("designer",), order=51)
nav_item("admin.instances", _l("Instances"), LEADS_AND_DESIGNERS, order=52)
nav_item("admin.connectors", _l("Connectors"), (), order=53)
nav_item("admin.users", _l("Users"), (), order=54)
nav_item("admin.tokens", _l("Tokens"), (), order=55)
nav_item("admin.audit", _l("Audit log"), (), order=56)
nav_item("admin.import_new", _l("Import"), (), order=57)

__all__ = ["audit", "bp", "connectors", "dashboard", "flows", "imports", "instances", "users"]
