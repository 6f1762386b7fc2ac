"""The employees' inbox and task pages.

Every list and every record goes through the API's record scope (``engine.auth.scope``): a task
or customer outside it answers 404, as in the API. Actions (claim, complete, comment, hand over,
send back) are plain HTML form posts with the CSRF token, so they work without JavaScript; the
engine's refusals come back as a message in the page's language.

Deep link to a task (for reminder e-mails and IM messages): ``task_url(task_id, base_url)``,
i.e. ``<base>/tasks/<id>``; signed-out users pass through the sign-in page and land on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from sqlalchemy import func, or_, select

from engine import forms
from engine.api.auth import careflow
from engine.auth.scope import Principal, visible_customers, visible_tasks
from engine.errors import Conflict, NotFound, PermissionDenied, SubmissionInvalid
from engine.i18n import TIMEZONE, lang
from engine.inbox import uploads
from engine.store.customers import users_in_role
from engine.store.definitions import flow_of_version, latest_flow_versions
from engine.store.models import Customer, Instance, Task, TaskComment, TimelineEntry, User
from engine.store.tasks import task_form
from engine.web import html_errors, nav_item, safe_next

bp = Blueprint("inbox", __name__)
html_errors(bp)

DUE_FILTERS = ("overdue", "today", "week", "none")
SHOW_FILTERS = ("all", "mine", "unclaimed")
TIMELINE_ON_TASK = 15


def task_url(task_id: int, base_url: str = "") -> str:
    """The address of a task's page, for messages that point at it."""
    return f"{base_url.rstrip('/')}/tasks/{int(task_id)}"


def principal() -> Principal:
    who = careflow().principal(current_user.username)
    if who is None:  # deactivated since signing in
        abort(403)
    return who


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def due_state(task: Task, now: datetime) -> str | None:
    """overdue, soon (within a day) or None: the mark a task gets in lists."""
    due = _aware(task.due_at)
    if due is None or task.status != "open":
        return None
    if due < now:
        return "overdue"
    return "soon" if due - now < timedelta(days=1) else None


def _end_of_day(now: datetime, days: int = 0) -> datetime:
    local = now.astimezone(ZoneInfo(TIMEZONE))
    end = (local + timedelta(days=days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return end.astimezone(timezone.utc)


def _inbox_query(who: Principal) -> Any:
    """Open tasks that are mine or unclaimed in one of my roles, within my record scope."""
    mine = [Task.assignee == who.username]
    if who.roles:
        mine.append(Task.assignee.is_(None) & Task.role.in_(sorted(who.roles)))
    return select(Task).where(Task.status == "open", visible_tasks(who), or_(*mine))


@bp.get("/inbox")
@login_required
def index() -> Any:
    who = principal()
    cf = careflow()
    now = cf.clock.now()
    args = request.args
    show = args.get("show") if args.get("show") in SHOW_FILTERS else "all"
    due = args.get("due") if args.get("due") in DUE_FILTERS else ""
    flow = args.get("flow", "").strip()
    customer = args.get("customer", "").strip()[:100]

    base = _inbox_query(who)
    with cf.session() as s:
        counts = {
            "mine": s.scalar(select(func.count()).select_from(base.where(Task.assignee == who.username).subquery())) or 0,
            "unclaimed": s.scalar(select(func.count()).select_from(base.where(Task.assignee.is_(None)).subquery())) or 0,
            "overdue": s.scalar(select(func.count()).select_from(base.where(Task.due_at < now).subquery())) or 0,
            "today": s.scalar(select(func.count()).select_from(
                base.where(Task.due_at >= now, Task.due_at < _end_of_day(now)).subquery())) or 0,
        }
        q = base.join(Instance, Instance.id == Task.instance_id).outerjoin(Customer, Customer.id == Instance.customer_id)
        if show == "mine":
            q = q.where(Task.assignee == who.username)
        elif show == "unclaimed":
            q = q.where(Task.assignee.is_(None))
        if due == "overdue":
            q = q.where(Task.due_at < now)
        elif due == "today":
            q = q.where(Task.due_at >= now, Task.due_at < _end_of_day(now))
        elif due == "week":
            q = q.where(Task.due_at >= now, Task.due_at < _end_of_day(now, 6))
        elif due == "none":
            q = q.where(Task.due_at.is_(None))
        if flow:
            q = q.where(Instance.flow_id == flow)
        if customer:
            q = q.where(or_(Customer.name.icontains(customer, autoescape=True),
                            Customer.phone.icontains(customer, autoescape=True)))
        q = q.add_columns(Instance.flow_id, Customer.id, Customer.name).order_by(
            Task.due_at.is_(None), Task.due_at, Task.id).limit(200)
        rows = [{"task": t, "flow_id": flow_id, "customer_id": cid, "customer_name": cname, "due": due_state(t, now)}
                for t, flow_id, cid, cname in s.execute(q).all()]
        flows = {v.flow_id: v.name for v in latest_flow_versions(s)}
    filtered = bool(show != "all" or due or flow or customer)
    return render_template("inbox/index.html", rows=rows, counts=counts, flows=flows, show=show, due=due,
                           flow=flow, customer=customer, filtered=filtered, me=who.username)


# ----- one task --------------------------------------------------------------------------------------


def _visible_task(s: Any, who: Principal, task_id: int) -> Task:
    task = s.scalars(select(Task).where(Task.id == task_id, visible_tasks(who))).first()
    if task is None:
        abort(404)
    return task


def may_work(task: Task, who: Principal) -> bool:
    if task.status != "open":
        return False
    if who.is_admin:
        return True
    if task.assignee is not None:
        return task.assignee == who.username
    return task.role is not None and task.role in who.roles


def _file_links(task: Task, form: forms.Form, values: dict[str, Any]) -> dict[str, tuple[str, str]]:
    links = {}
    for f in form.fields:
        ref = values.get(f.name)
        if f.widget == "file" and isinstance(ref, str) and uploads.path_of(task.id, ref) is not None:
            links[f.name] = (url_for("inbox.task_file", task_id=task.id, reference=ref), ref.split("/", 1)[1])
    return links


def _task_page(task_id: int, posted: dict[str, Any] | None = None, errors: list[Any] = (), status: int = 200) -> Any:  # type: ignore[assignment]
    who = principal()
    cf = careflow()
    now = cf.clock.now()
    with cf.session() as s:
        task = _visible_task(s, who, task_id)
        instance = s.get(Instance, task.instance_id)
        assert instance is not None
        form = task_form(s, task)
        flow = flow_of_version(s, instance.flow_version_id)
        step = flow.steps.get(task.step_id)
        send_back_to = [(sid, flow.steps[sid].title or flow.steps[sid].name or {"zh": sid, "en": sid})
                        for sid in (step.send_back_to if step else ()) if sid in flow.steps]
        customer = None
        timeline: list[TimelineEntry] = []
        if instance.customer_id is not None:
            customer = s.scalars(select(Customer).where(Customer.id == instance.customer_id, Customer.status != "deleted",
                                                        visible_customers(who))).first()
            if customer is not None:
                timeline = list(s.scalars(select(TimelineEntry).where(TimelineEntry.customer_id == customer.id)
                                          .order_by(TimelineEntry.id.desc()).limit(TIMELINE_ON_TASK)))
        comments = list(s.scalars(select(TaskComment).where(TaskComment.task_id == task.id).order_by(TaskComment.id)))
        colleagues = [u for u in users_in_role(s, task.role) if u.username != who.username] if task.role else []
        names = dict(s.execute(select(User.username, User.display_name)).all())
        defaults = {f.name: f.schema["default"] for f in form.fields if "default" in f.schema}
        values = dict(task.data or {}) if task.status == "completed" else {**defaults, **(task.initial or {}), **(posted or {})}
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for e in errors:
            (by_field.setdefault(e.field, []) if e.field else general).append(e.message)
        fields = forms.visible_fields(form, values)
        html = render_template(
            "inbox/task.html", task=task, instance=instance, flow_name=flow.name, form=form, fields=fields,
            values=values, errors=by_field, general=general, customer=customer, timeline=timeline, comments=comments,
            colleagues=colleagues, names=names, send_back_to=send_back_to, due=due_state(task, now),
            can_work=may_work(task, who), can_claim=task.status == "open" and task.assignee is None and may_work(task, who),
            files=_file_links(task, form, values), lang=lang(),
            live={"url": url_for("inbox.task_fields", task_id=task.id), "controls": controlling_fields(form)})
    return html, status


def controlling_fields(form: forms.Form) -> list[str]:
    """Fields that another field's ``x-show-if`` depends on."""
    return sorted({str(f.show_if["field"]) for f in form.fields if f.show_if and "field" in f.show_if})


@bp.post("/tasks/<int:task_id>/fields")
@login_required
def task_fields(task_id: int) -> Any:
    """The form's fields for the values posted so far (htmx re-renders them when a condition changes)."""
    who = principal()
    with careflow().session() as s:
        task = _visible_task(s, who, task_id)
        form = task_form(s, task)
        posted: Any = request.form
        defaults = {f.name: f.schema["default"] for f in form.fields if "default" in f.schema}
        values = {**defaults, **(task.initial or {}), **forms.coerce_form_post(form, posted)}
        values = {k: v for k, v in values.items() if v is not None}
        return render_template("inbox/_task_fields.html", fields=forms.visible_fields(form, values), values=values,
                               lang=lang(), files=_file_links(task, form, values),
                               live={"url": url_for("inbox.task_fields", task_id=task.id), "controls": controlling_fields(form)})


@bp.get("/tasks/<int:task_id>")
@login_required
def task(task_id: int) -> Any:
    return _task_page(task_id)


def _refused(exc: Exception) -> str:
    if isinstance(exc, Conflict):
        return _("This task was already completed, cancelled or claimed by someone else.")
    if isinstance(exc, PermissionDenied):
        return _("You may not do that with this task.")
    return _("This task no longer exists.")


def _back(task_id: int) -> Any:
    return redirect(safe_next(request.form.get("next")) or url_for("inbox.task", task_id=task_id))


@bp.post("/tasks/<int:task_id>/claim")
@login_required
def claim(task_id: int) -> Any:
    who = principal()
    with careflow().session() as s:
        _visible_task(s, who, task_id)
    try:
        careflow().claim(task_id, who.username)
        flash(_("You have claimed this task."), "success")
    except (Conflict, PermissionDenied, NotFound) as exc:
        flash(_refused(exc), "error")
    return _back(task_id)


@bp.post("/tasks/<int:task_id>")
@login_required
def complete(task_id: int) -> Any:
    who = principal()
    cf = careflow()
    with cf.session() as s:
        task = _visible_task(s, who, task_id)
        form = task_form(s, task)
        if not may_work(task, who):
            flash(_refused(Conflict("") if task.status != "open" else PermissionDenied("")), "error")
            return redirect(url_for("inbox.task", task_id=task_id))
    posted: Any = request.form
    data = forms.coerce_form_post(form, posted)
    for f in form.fields:
        if f.widget != "file" or f.readonly or f.hidden:
            continue
        upload = request.files.get(f.name)
        if upload is not None and upload.filename:
            data[f.name] = uploads.save(task_id, upload)
        elif isinstance(data.get(f.name), str) and uploads.path_of(task_id, data[f.name]) is None:
            data.pop(f.name)  # a reference that is not one of this task's files
    try:
        cf.complete(task_id, data, who.username, locale=lang())
    except SubmissionInvalid as exc:
        return _task_page(task_id, data, exc.errors, 422)
    except (Conflict, PermissionDenied, NotFound) as exc:
        flash(_refused(exc), "error")
        return redirect(url_for("inbox.task", task_id=task_id))
    flash(_("Task completed."), "success")
    return redirect(url_for("inbox.index"))


@bp.post("/tasks/<int:task_id>/comment")
@login_required
def comment(task_id: int) -> Any:
    who = principal()
    with careflow().session() as s:
        _visible_task(s, who, task_id)
    body = request.form.get("body", "").strip()
    if not body:
        flash(_("Write a comment first."), "error")
    elif len(body) > 4000:
        flash(_("A comment may have at most 4000 characters."), "error")
    else:
        careflow().comment(task_id, who.username, body)
        flash(_("Comment added."), "success")
    return _back(task_id)


@bp.post("/tasks/<int:task_id>/hand-over")
@login_required
def hand_over(task_id: int) -> Any:
    who = principal()
    with careflow().session() as s:
        _visible_task(s, who, task_id)
    to_user = request.form.get("to", "").strip()
    if not to_user:
        flash(_("Choose a colleague to hand the task over to."), "error")
        return _back(task_id)
    try:
        careflow().hand_over(task_id, who.username, to_user, request.form.get("comment", "").strip()[:2000])
    except (Conflict, PermissionDenied, NotFound) as exc:
        flash(_refused(exc), "error")
        return _back(task_id)
    flash(_("Task handed over to %(user)s.", user=to_user), "success")
    return redirect(url_for("inbox.index"))


@bp.post("/tasks/<int:task_id>/send-back")
@login_required
def send_back(task_id: int) -> Any:
    who = principal()
    with careflow().session() as s:
        _visible_task(s, who, task_id)
    reason = request.form.get("comment", "").strip()[:2000]
    if not reason:
        flash(_("Say why you send the task back."), "error")
        return _back(task_id)
    try:
        careflow().send_back(task_id, who.username, request.form.get("to_step", ""), reason)
    except (Conflict, PermissionDenied, NotFound) as exc:
        flash(_refused(exc), "error")
        return _back(task_id)
    flash(_("Task sent back."), "success")
    return redirect(url_for("inbox.index"))


@bp.get("/tasks/<int:task_id>/files/<path:reference>")
@login_required
def task_file(task_id: int, reference: str) -> Any:
    who = principal()
    with careflow().session() as s:
        _visible_task(s, who, task_id)
    path = uploads.path_of(task_id, reference)
    if path is None:
        abort(404)
    response = send_file(path, as_attachment=True, download_name=path.name, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


nav_item("inbox.index", _l("Inbox"), order=20)
