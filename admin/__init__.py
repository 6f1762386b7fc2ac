"""The operations staff's and admins' pages (flows, instances, connectors, users, audit, dashboard).

One blueprint, ``admin.bp``, mounted at ``/admin`` by ``engine.app.create_app``. Its templates
(``admin/templates``) extend the engine's ``layout.html``; its catalogs live in
``admin/translations`` and are merged with the engine's (see ``engine.i18n``). Pages appear in
the navigation through ``engine.web.nav_item(endpoint, label, roles)``.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static",
               static_url_path="/static")
