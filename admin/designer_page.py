"""The flow designer's page: a LogicFlow canvas, a palette, a side panel, the YAML beside it.

The page is a shell: ``static/js/designer.js`` draws and edits the graph and talks to the JSON
endpoints of ``admin/designer_api.py`` (YAML ⇄ graph, changes, publish) and ``admin/dry_run.py``.
The YAML stays the source of truth; every edit on the canvas is turned back into YAML by the
server, which validates it exactly as ``careflow validate`` does.

The script's strings are rendered here through Flask-Babel and handed over in a data attribute
(the CSP refuses inline scripts), so the designer speaks the page's language.
"""

from __future__ import annotations

from typing import Any

from flask import abort, make_response, render_template, url_for
from flask_babel import gettext as _
from flask_babel import pgettext
from sqlalchemy import select, true

from admin import bp
from admin.access import careflow, principal, requires
from engine.auth.scope import DESIGNER, role_allows, visible_customers
from engine.store.models import Customer, FlowVersion
from engine.web import CSP

#: @logicflow/extension bundles vanilla-picker, which adds its stylesheet as a <style> element when
#: the bundle loads (the same rules are in the extension's index.css). The page's CSP allows that
#: one element by its hash, so it loads without a violation; no other inline style is allowed.
#: Recompute when re-vendoring: sha256 (base64) of the text the bundle assigns to that element.
PICKER_STYLE_HASH = "'sha256-ITHmamcImsZ/Je1xrdtDLZVvRSpj1Zokb6uHXORB824='"
DESIGNER_CSP = CSP.replace("style-src 'self'", f"style-src 'self' {PICKER_STYLE_HASH}")

#: customers offered in the dry-run panel (the newest first); enough to pick a test customer
DRY_RUN_CUSTOMERS = 200


def strings() -> dict[str, str]:
    """Every text designer.js shows, in the user's language."""
    return {
        # step types (palette and panel)
        "kind.task": _("Task"), "kind.action": pgettext("step type", "Action"), "kind.decision": _("Decision"),
        "kind.parallel": _("Parallel"), "kind.join": _("Join"), "kind.wait": _("Wait"),
        "kind.set": _("Set values"), "kind.update_customer": _("Update customer"),
        "kind.assign_owner": _("Assign owner"), "kind.subflow": _("Subflow"), "kind.end": _("End"),
        # canvas controls
        "zoom_in": _("Zoom in"), "zoom_out": _("Zoom out"), "fit": _("Fit"), "undo": _("Undo"), "redo": _("Redo"),
        "auto_layout": _("Auto-layout"),
        # panel
        "step": _("Step"), "flow": _("Flow settings"), "edit_step": _("Step to edit"), "no_selection": _("Select a step on the canvas, or add one from the palette."),
        "step_id": _("Step ID"), "name_zh": _("Name (Chinese)"), "name_en": _("Name (English)"),
        "title_zh": _("Task title (Chinese)"), "title_en": _("Task title (English)"),
        "next": _("Next step"), "none": _("(none)"), "delete_step": _("Delete step"),
        "form": _("Form"), "assignee": _("Assignee"), "by_role": _("By role"), "by_user": _("By user"),
        "by_expr": _("By expression"), "strategy": _("Strategy"), "due": _("Due in"), "reminders": _("Reminders"),
        "before": _("before due"), "after": _("after due"), "escalation": _("Escalation"), "after_time": _("after"),
        "to_role": _("to role"), "timeout_after": _("Timeout after"), "timeout_step": _("On timeout go to"),
        "connector": _("Connector"), "preferred": _("customer's preferred channel"),
        "params": _("Parameters (templates allowed)"), "param": _("Parameter"), "value_zh": _("Value (Chinese)"),
        "value_en": _("Value (English, optional)"), "wait_for_reply": _("Wait for the result"),
        "cases": _("Cases (first true wins)"), "when": pgettext("decision", "Condition"), "goes_to": _("go to"),
        "otherwise": _("otherwise"), "add_case": _("Add case"), "branches": _("Branches"), "add_branch": _("Add branch"),
        "duration": _("Wait for"), "until": _("Until (expression)"), "event": _("Until event"),
        "values": _("Values"), "variable": _("Variable"), "value": _("Value"), "add_value": _("Add value"),
        "fields": _("Customer fields"), "role": _("Role"), "subflow": _("Flow to start"), "outcome": _("Outcome"),
        "remove": _("Remove"), "add": _("Add"), "amount": _("Amount"), "unit": _("Unit"),
        "unit.minutes": _("minutes"), "unit.hours": _("hours"), "unit.days": _("days"), "unit.weeks": _("weeks"),
        "unit.business_days": _("business days"), "unit.business_hours": _("business hours"),
        "timeout": _("timeout"), "overdue": _("overdue"), "send_back": _("send back"),
        # flow settings
        "flow_id": _("Flow ID"), "timezone": _("Time zone"), "triggers": _("Triggers"),
        "trigger_type": _("Trigger"), "trigger.manual": _("Started by hand"), "trigger.form": _("Form submitted"),
        "trigger.schedule": _("Schedule"), "trigger.date": _("Date (birthday)"),
        "trigger.customer_event": _("Customer event"), "trigger.segment": _("Segment"),
        "date_field": _("Date field"), "at": _("At (HH:MM)"), "lunar": _("Lunar birthdays"), "feb29": _("29 February in other years"),
        "offset_days": _("Days before (-) or after (+)"), "customers": _("Only customers where"), "cron": _("Cron"),
        "customer_from": _("Customer from"), "event_kind": _("Event"), "field": _("Field"), "segment": _("Segment"),
        "enrollment": _("Enrollment"), "concurrent": _("At the same time"), "reenroll": _("Enrol again"),
        "reenroll_after": _("Enrol again after"),
        # YAML, problems, publish, dry run
        "yaml_invalid": _("The YAML cannot be read; the canvas shows the last readable version."),
        "problems": _("Problems"), "no_problems": _("No problems: the flow can be published."),
        "line": _("line"), "saving": _("Checking…"), "request_failed": _("The server did not answer (%(status)s)."),
        "changes_title": _("Changes against the running version"), "unchanged": _("Nothing changed against the running version."),
        "no_changes": _("No change to steps, connections, triggers or settings: only positions or formatting."),
        "new_flow": _("This flow is not deployed yet: publishing creates version 1."),
        "running": _("Running version v%(version)s has %(count)s running instances; they stay on it."),
        "published": _("Published %(flow)s as version %(version)s."),
        "not_changed": _("Nothing changed: this is already version %(version)s."),
        "fix_first": _("Fix the problems before publishing."),
        "dry_outcome": _("Outcome"), "dry_status": _("Status"), "dry_path": _("Path"), "dry_messages": _("Messages"),
        "dry_tasks": _("Tasks"), "dry_none": _("None."), "skipped": _("not sent"),
        "choose_customer": _("Choose a customer."),
        "status.completed": _("completed"), "status.waiting": _("waiting"), "status.failed": _("failed"),
        "status.horizon": _("stopped at the horizon"),
        "status.cancelled": _("cancelled"),
    }


def _customers() -> list[dict[str, Any]]:
    """Customers the user may dry-run a flow for (as admin/dry_run.py allows: designers any)."""
    who = principal()
    seen = true() if DESIGNER in who.roles else visible_customers(who)
    with careflow().session() as s:
        rows = s.execute(select(Customer.id, Customer.name).where(seen)
                         .order_by(Customer.id.desc()).limit(DRY_RUN_CUSTOMERS)).all()
    return [{"id": cid, "name": name} for cid, name in rows]


def _page(flow_id: str | None) -> Any:
    urls = {
        "palette": url_for("admin.designer_palette"),
        "graph": url_for("admin.designer_graph"),
        "yaml": url_for("admin.designer_yaml"),
        "changes": url_for("admin.designer_changes"),
        "publish": url_for("admin.designer_publish"),
        "dry_run": url_for("admin.designer_dry_run"),
        "source": url_for("admin.designer_source", flow_id=flow_id) if flow_id else "",
    }
    response = make_response(render_template(
        "admin/designer.html", flow_id=flow_id, urls=urls, strings=strings(), customers=_customers(),
        can_deploy=role_allows(principal(), "flows.deploy"), wide=True))
    response.headers["Content-Security-Policy"] = DESIGNER_CSP
    return response


@bp.get("/designer")
@requires("flows.read")
def designer_page() -> Any:
    return _page(None)


@bp.get("/designer/<ident:flow_id>")
@requires("flows.read")
def designer_flow_page(flow_id: str) -> Any:
    with careflow().session() as s:
        if s.scalars(select(FlowVersion.id).where(FlowVersion.flow_id == flow_id).limit(1)).first() is None:
            abort(404)
    return _page(flow_id)
