"""Human tasks: list, claim, complete with form data, hand over, send back, comment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from engine import forms
from engine.crashpoints import crash_point
from engine.errors import Conflict, PermissionDenied, TaskLookupError
from engine.runtime import events as ev
from engine.store import customers as cust
from engine.store.definitions import flow_of, latest_form
from engine.store.instances import TASK, Runtime, Writes, deliver, deliver_with, get_instance, written_here
from engine.store.models import FlowVersion, Task, TaskComment, User


def get_task(session: Session, task_id: int) -> Task:
    task = cust.load_by_id(session, Task, _TASK_BY_ID, task_id)
    if task is None:
        raise TaskLookupError(task_id)
    return task


def list_tasks(
    session: Session,
    *,
    user: str | None = None,
    roles: Sequence[str] = (),
    role: str | None = None,
    status: str = "open",
    instance_id: int | None = None,
    limit: int = 200,
) -> list[Task]:
    """Open tasks of a user (assigned to them, or unclaimed in one of their roles), or of a role."""
    query = select(Task).where(Task.status == status)
    visible = []
    if user is not None:
        visible.append(Task.assignee == user)
        if roles:
            visible.append(Task.assignee.is_(None) & Task.role.in_(list(roles)))
    if role is not None:
        visible.append(Task.role == role)
    if visible:
        query = query.where(or_(*visible))
    if instance_id is not None:
        query = query.where(Task.instance_id == instance_id)
    return list(session.scalars(query.order_by(Task.due_at.is_(None), Task.due_at, Task.id).limit(limit)))


def _user(session: Session, username: str) -> User:
    user = session.scalars(_USER_NAMED, {"b_username": username}).first()
    if user is None or not user.active:
        raise PermissionDenied(f"no active user {username!r}")
    return user


def _may_work(task: Task, user: User) -> bool:
    if "admin" in (user.roles or []):
        return True
    if task.assignee is not None:
        return task.assignee == user.username
    return task.role is not None and task.role in (user.roles or [])


def _open(task: Task) -> None:
    if task.status != "open":
        by = f" by {task.completed_by}" if task.completed_by else ""
        raise Conflict(f"task {task.id} is already {task.status}{by}")


def claim_task(session: Session, rt: Runtime, task_id: int, username: str) -> Task:
    task = get_task(session, task_id)
    user = _user(session, username)
    _open(task)
    if task.assignee == username:
        return task
    if task.assignee is not None:
        raise Conflict(f"task {task_id} is already claimed by {task.assignee}")
    if not _may_work(task, user):
        raise PermissionDenied(f"{username} does not have the role {task.role!r} of task {task_id}")
    # Compare-and-set: of two users claiming at once, exactly one row update succeeds.
    done = session.execute(
        update(Task).where(Task.id == task_id, Task.status == "open", Task.assignee.is_(None)).values(assignee=username)
    ).rowcount
    if done != 1:
        raise Conflict(f"task {task_id} was claimed by someone else")
    session.add(TaskComment(task_id=task_id, at=rt.now, author=username, kind="claim", body=""))
    session.refresh(task)
    return task


def task_form(session: Session, task: Task) -> forms.Form:
    return forms.view(latest_form(session, task.form_id), readonly=task.readonly, hidden=task.hidden)


def complete_task(
    session: Session, rt: Runtime, task_id: int, data: Mapping[str, Any], username: str, *, locale: str = "zh"
) -> Task:
    """Validate the answer against the task's form and move the instance on (409 if already done)."""
    task = get_task(session, task_id)
    user = _user(session, username)
    _open(task)
    if not _may_work(task, user):
        raise PermissionDenied(f"{username} may not complete task {task_id}")
    form = task_form(session, task)
    cleaned = forms.check_submission(form, data, locale=locale, current=task.initial or {})
    crash_point("during_form_submit_tx")
    _complete_open_task(session, task, username, rt.now, cleaned)
    instance = get_instance(session, task.instance_id)
    writes = Writes(session)
    if instance.customer_id is not None:
        writes.timeline(
            instance.customer_id, rt.now, "task_completed",
            {"zh": f"任务完成：{task.title.get('zh', task.step_id)}", "en": f"Task done: {task.title.get('en', task.step_id)}"},
            {"by": username, "form": task.form_id, "answers": cleaned}, instance.id,
        )
    deliver_with(session, rt, instance, ev.TaskDone(task.token, task.gen, cleaned, username, task.id), writes)
    return task


def _complete_open_task(session: Session, task: Task, username: str, now: datetime, cleaned: Mapping[str, Any]) -> None:
    """Compare-and-set the task from open to completed; of two submissions exactly one wins.

    The UPDATE returns the row as stored, which becomes the loaded state of ``task``: the same as
    refreshing it afterwards (nothing later in the request changes a completed task), one query less.
    """
    session.flush()  # as the ORM would before a statement: the caller's pending changes go first
    row = session.connection().execute(
        _COMPLETE_OPEN_TASK, {"b_id": task.id, "b_by": username, "b_at": now, "b_data": cleaned}
    ).mappings().first()
    if row is None:
        raise Conflict(f"task {task.id} was completed by someone else")
    for key, value in row.items():
        set_committed_value(task, key, value)
    written_here(session, task)


# Hot statements, built once: building and hashing a statement costs more than running it.
_TASK_BY_ID = select(Task).where(Task.id == bindparam("b_id"))
_USER_NAMED = select(User).where(User.username == bindparam("b_username"))
_COMPLETE_OPEN_TASK = (
    update(TASK).where(TASK.c.id == bindparam("b_id"), TASK.c.status == "open")
    .values(status="completed", completed_by=bindparam("b_by"), completed_at=bindparam("b_at"),
            data=bindparam("b_data"), outcome="completed")
    .returning(*TASK.c)
)


def hand_over(session: Session, rt: Runtime, task_id: int, username: str, to_user: str, comment: str = "") -> Task:
    task = get_task(session, task_id)
    user = _user(session, username)
    target = _user(session, to_user)
    _open(task)
    if not _may_work(task, user):
        raise PermissionDenied(f"{username} may not hand over task {task_id}")
    if task.role and task.role not in (target.roles or []) and "admin" not in (user.roles or []):
        raise PermissionDenied(f"{to_user} does not have the role {task.role!r}")
    task.assignee = target.username
    session.add(TaskComment(task_id=task_id, at=rt.now, author=username, kind="handover", body=f"→ {to_user}: {comment}".strip()))
    return task


def send_back(session: Session, rt: Runtime, task_id: int, username: str, to_step: str, comment: str) -> Task:
    """Return the work to an earlier step the flow allows, with a comment saying why."""
    task = get_task(session, task_id)
    user = _user(session, username)
    _open(task)
    if not _may_work(task, user):
        raise PermissionDenied(f"{username} may not send back task {task_id}")
    instance = get_instance(session, task.instance_id)
    version = session.get(FlowVersion, instance.flow_version_id)
    assert version is not None
    step = flow_of(version).step(task.step_id)
    if to_step not in step.send_back_to:
        allowed = ", ".join(step.send_back_to) or "none"
        raise Conflict(f"step {task.step_id!r} may be sent back only to: {allowed}")
    if not comment.strip():
        raise Conflict("sending back needs a comment saying why")
    session.add(TaskComment(task_id=task_id, at=rt.now, author=username, kind="send_back", body=comment))
    deliver(session, rt, instance, ev.SendBack(task.token, task.gen, to_step, comment, username))
    session.refresh(task)
    return task


def add_comment(session: Session, rt: Runtime, task_id: int, username: str, body: str) -> TaskComment:
    get_task(session, task_id)
    if not body.strip():
        raise Conflict("a comment must not be empty")
    comment = TaskComment(task_id=task_id, at=rt.now, author=username, kind="comment", body=body.strip())
    session.add(comment)
    return comment
