"""Human tasks: my inbox, one task, claim, complete, hand over, send back, comments."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g
from sqlalchemy import or_, select

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import locale
from engine.api.present import comment_dict, page, paged, task_dict, visible_task
from engine.api.schemas import EXAMPLES, CommentIn, CommentOut, CompleteIn, HandOverIn, SendBackIn, TaskOut, TaskQuery, page_of
from engine.auth.scope import Principal, visible_tasks
from engine.store.models import Task, TaskComment

bp = APIBlueprint("tasks", __name__, url_prefix="/api/tasks", tag="Tasks")

WORK_ERRORS = {403: "Not your task, or not your role", 409: "Already completed, cancelled or claimed by someone else"}


def _task(task_id: int) -> dict[str, Any]:
    """The task after the caller acted on it (it may have left their scope, e.g. when sent back)."""
    with careflow().session() as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task_dict(task)


def _ensure_visible(task_id: int) -> None:
    with careflow().session() as s:
        visible_task(s, g.principal, task_id)


@bp.get("")
@bp.auth_required(token_auth)
@bp.input(TaskQuery, location="query", arg_name="query")
@bp.output(page_of(TaskOut))
@requires("tasks.read")
def list_tasks(query: dict[str, Any]) -> Any:
    """My inbox (assigned to me, or unclaimed in one of my roles), or every task I may see."""
    who: Principal = g.principal
    q = select(Task).where(Task.status == query["status"], visible_tasks(who))
    if query["view"] == "inbox":
        mine = [Task.assignee == who.username]
        if who.roles:
            mine.append(Task.assignee.is_(None) & Task.role.in_(sorted(who.roles)))
        if query["status"] != "open":
            mine.append(Task.completed_by == who.username)
        q = q.where(or_(*mine))
    if query.get("role"):
        q = q.where(Task.role == query["role"])
    if query.get("assignee"):
        q = q.where(Task.assignee == query["assignee"])
    if query.get("instance_id"):
        q = q.where(Task.instance_id == query["instance_id"])
    order = (Task.due_at.is_(None), Task.due_at, Task.id)
    with careflow().session() as s:
        rows, total = page(s, q.order_by(*order), query["page"], query["per_page"])
        items = [task_dict(t) for t in rows]
    return paged(items, total, query["page"], query["per_page"])


@bp.get("/<id:task_id>")
@bp.auth_required(token_auth)
@bp.output(TaskOut)
@requires("tasks.read")
def get_task(task_id: int) -> Any:
    """One task, with its prefilled values and (once completed) its answers."""
    with careflow().session() as s:
        return task_dict(visible_task(s, g.principal, task_id))


@bp.post("/<id:task_id>/claim")
@bp.auth_required(token_auth)
@bp.output(TaskOut)
@bp.doc(responses=WORK_ERRORS)
@requires("tasks.work")
def claim(task_id: int) -> Any:
    """Take an unclaimed task of one of your roles."""
    _ensure_visible(task_id)
    careflow().claim(task_id, g.principal.username)
    return _task(task_id)


@bp.post("/<id:task_id>/complete")
@bp.auth_required(token_auth)
@bp.input(CompleteIn, arg_name="body", example=EXAMPLES[CompleteIn])
@bp.output(TaskOut)
@bp.doc(responses={**WORK_ERRORS, 422: "The answers do not satisfy the form; details name each field"})
@requires("tasks.work")
def complete(task_id: int, body: dict[str, Any]) -> Any:
    """Complete a task with the form's answers; a second completion gets 409."""
    _ensure_visible(task_id)
    careflow().complete(task_id, body["data"], g.principal.username, locale=locale())
    return _task(task_id)


@bp.post("/<id:task_id>/hand-over")
@bp.auth_required(token_auth)
@bp.input(HandOverIn, arg_name="body", example=EXAMPLES[HandOverIn])
@bp.output(TaskOut)
@bp.doc(responses=WORK_ERRORS)
@requires("tasks.work")
def hand_over(task_id: int, body: dict[str, Any]) -> Any:
    """Give the task to another user (who must have the task's role)."""
    _ensure_visible(task_id)
    careflow().hand_over(task_id, g.principal.username, body["to"], body["comment"])
    return _task(task_id)


@bp.post("/<id:task_id>/send-back")
@bp.auth_required(token_auth)
@bp.input(SendBackIn, arg_name="body", example=EXAMPLES[SendBackIn])
@bp.output(TaskOut)
@bp.doc(responses=WORK_ERRORS)
@requires("tasks.work")
def send_back(task_id: int, body: dict[str, Any]) -> Any:
    """Return the work to an earlier step the flow allows, saying why."""
    _ensure_visible(task_id)
    careflow().send_back(task_id, g.principal.username, body["to_step"], body["comment"])
    return _task(task_id)


@bp.get("/<id:task_id>/comments")
@bp.auth_required(token_auth)
@bp.output(CommentOut(many=True))
@requires("tasks.read")
def comments(task_id: int) -> Any:
    """Comments, claims, hand-overs and send-backs, oldest first."""
    with careflow().session() as s:
        visible_task(s, g.principal, task_id)
        rows = s.scalars(select(TaskComment).where(TaskComment.task_id == task_id).order_by(TaskComment.id))
        return [comment_dict(c) for c in rows]


@bp.post("/<id:task_id>/comments")
@bp.auth_required(token_auth)
@bp.input(CommentIn, arg_name="body", example=EXAMPLES[CommentIn])
@bp.output(CommentOut, status_code=201)
@requires("tasks.comment")
def add_comment(task_id: int, body: dict[str, Any]) -> Any:
    """Add a comment to a task."""
    _ensure_visible(task_id)
    careflow().comment(task_id, g.principal.username, body["body"])
    with careflow().session() as s:
        row = s.scalars(
            select(TaskComment).where(TaskComment.task_id == task_id, TaskComment.author == g.principal.username,
                                      TaskComment.kind == "comment").order_by(TaskComment.id.desc()).limit(1)
        ).one()
        return comment_dict(row), 201
