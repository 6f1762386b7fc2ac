"""Views of the employees' pages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_babel import lazy_gettext as _l
from flask_login import login_required

from engine.web import nav_item

bp = Blueprint("inbox", __name__)


@bp.get("/inbox")
@login_required
def index() -> Any:
    return render_template("inbox/index.html", tasks=[])


nav_item("inbox.index", _l("Inbox"), order=20)
