"""The audit log with filters (actor, action or ``area.`` prefix, target, dates); admins only."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import render_template, request
from flask_babel import gettext as _

from admin import bp
from admin.access import careflow, requires
from engine.i18n import TIMEZONE

PER_PAGE = 50


def _day(text: str, field: str, errors: dict[str, list[str]], end: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        errors[field] = [_("Enter a date like 2026-11-24.")]
        return None
    start = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=ZoneInfo(TIMEZONE))
    return start


@bp.get("/audit")
@requires("audit.read")
def audit() -> Any:
    args = {k: request.args.get(k, "").strip() for k in ("actor", "action", "target_type", "target_id", "since", "until")}
    errors: dict[str, list[str]] = {}
    filters: dict[str, Any] = {k: args[k] for k in ("actor", "action", "target_type", "target_id") if args[k]}
    since = _day(args["since"], "since", errors)
    until = _day(args["until"], "until", errors, end=True)
    if since:
        filters["since"] = since
    if until:
        filters["until"] = until
    page_no = max(1, request.args.get("page", 1, type=int) or 1)
    entries, total = ([], 0) if errors else careflow().audit_entries(**filters, offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE)
    return render_template("admin/audit.html", entries=entries, total=total, page=page_no, per_page=PER_PAGE,
                           args=args, errors=errors), 422 if errors else 200
