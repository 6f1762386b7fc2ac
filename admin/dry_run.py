"""The designer's dry run: ``POST /admin/designer/api/dry-run`` (see engine/designer/dry_run.py).

The body is ``{"source": YAML, "customer_id": int, "answers": {STEP_ID: ...}?, "start": ISO?, "data": {...}?}``;
the answer is the run's report, or 422 ``{"problems": [...]}`` when it cannot begin. Nothing is
sent and the real database is only read, so reading flows (``flows.read``) is enough, but the
customer must be one the user may see: staff see the customers of their record scope, designers
(who may start any flow for any customer) every customer. CSRF applies as to every admin POST
(the page sends ``X-CSRFToken``).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from flask import jsonify, request
from sqlalchemy import select

from admin import bp
from admin.access import careflow, principal, requires
from engine.api.flows import MAX_FLOW_CHARS
from engine.auth.scope import DESIGNER, visible_customers
from engine.designer.dry_run import MAX_ID, DryRunInvalid, dry_run, problem
from engine.i18n import lang
from engine.store.models import Customer

_MESSAGES = {
    "body": ("请求体必须是 JSON 对象", "The body must be a JSON object"),
    "source": ("source 必须是流程的 YAML 文本（最多 {n} 个字符）", "source must be the flow's YAML text (at most {n} characters)"),
    "customer": ("customer_id 必须是客户编号（1 到 {high} 的整数），而不是 {value}",
                 "customer_id must be a customer's id (a whole number from 1 to {high}), not {value}"),
    "no_customer": ("找不到编号为 {id} 的客户", "No customer by the id {id} was found"),
    "start": ("start 必须是 ISO-8601 时间：{error}", "start must be an ISO-8601 date-time: {error}"),
    "data": ("data 必须是对象", "data must be an object"),
    "busy": ("已有试运行正在进行，请稍后再试", "A dry run is already running, try again in a moment"),
}

#: Dry runs at once in this process: each copies the customer, users, flows and forms into a
#: temporary database and plays up to MAX_ROUNDS rounds in the request, so a few are plenty.
MAX_RUNNING = 2
RETRY_AFTER_SECONDS = 5
RUNNING = threading.BoundedSemaphore(MAX_RUNNING)


def _text(key: str, **values: Any) -> str:
    zh, en = _MESSAGES[key]
    return (en if lang() == "en" else zh).format(**values)


def _refused(key: str, path: str, **values: Any) -> Any:
    return jsonify({"problems": [problem(_text(key, **values), path=path)]}), 422


def _may_see(customer_id: int) -> bool:
    who = principal()
    if DESIGNER in who.roles:
        return True
    with careflow().session() as s:
        return s.scalar(select(Customer.id).where(Customer.id == customer_id, visible_customers(who))) is not None


@bp.post("/designer/api/dry-run")
@requires("flows.read")
def designer_dry_run() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _refused("body", "$")
    source = body.get("source")
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_FLOW_CHARS:
        return _refused("source", "$.source", n=MAX_FLOW_CHARS)
    customer_id = body.get("customer_id")
    if isinstance(customer_id, str) and customer_id.strip().isdigit():
        customer_id = int(customer_id)
    if not isinstance(customer_id, int) or isinstance(customer_id, bool) or not 1 <= customer_id <= MAX_ID:
        shown = json.dumps(customer_id, ensure_ascii=False)
        return _refused("customer", "$.customer_id", high=MAX_ID, value=shown if len(shown) <= 40 else shown[:37] + "...")
    if not _may_see(customer_id):
        return _refused("no_customer", "$.customer_id", id=customer_id)  # the same answer as for no such customer
    start = None
    if body.get("start"):
        # An <input type=datetime-local> sends no zone: the dry run reads it in the flow's time zone.
        try:
            start = datetime.fromisoformat(str(body["start"]).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            return _refused("start", "$.start", error=exc)
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        return _refused("data", "$.data")
    if not RUNNING.acquire(blocking=False):
        busy = jsonify({"problems": [problem(_text("busy"))]})
        busy.status_code, busy.headers["Retry-After"] = 429, str(RETRY_AFTER_SECONDS)
        return busy
    try:
        report = dry_run(careflow(), source, customer_id, answers=body.get("answers"), start=start, data=data,
                         language=lang())
    except DryRunInvalid as exc:
        return jsonify({"problems": exc.problems}), 422
    finally:
        RUNNING.release()
    return jsonify(report)
