"""Task reminders and escalations that reach the employee: an e-mail and/or an IM message.

A reminder or escalation always writes a ``notification`` row (the inbox shows it). Besides, for
each person it concerns, this module queues outbox messages in the same transaction, so they are
durable, retried and sent once like every other message (the effect key names the task, the
reminder and the person). Who it concerns: a reminder goes to the task's assignee, or to every
active user of its role while nobody has claimed it; an escalation goes to every active user of
the role the task moved to.

How it reaches them is the user's choice (``app_user.notify``: email, im, both, none). IM
messages go to a group robot: the one configured for the user's team, else the global one, with
an @mention when the user has an IM id. When the chosen way is not possible (no e-mail address,
no robot for the team), the other one is used, so that a reminder is not silently lost; ``none``
sends nothing. Texts are in the user's language (Chinese when not chosen), with a deep link to the
task page under the public base URL.

These are staff messages: their outbox rows have no customer and the category ``staff``, so a
customer's consent, the marketing cap and the customer timeline never apply to them.

Settings, in ``app_setting`` under ``reminders`` (``careflow connectors reminders --set``):
``base_url`` (else the ``CAREFLOW_BASE_URL`` environment variable, else http://127.0.0.1:5000),
``email`` (the connector e-mails go through, default the ``email`` channel), ``im`` (the global
robot, e.g. ``feishu/care-team``) and ``teams`` (a robot per team, e.g. ``{"north": "wecom/north"}``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import FieldError, SubmissionInvalid
from engine.store.customers import users_in_role
from engine.store.models import Task, User
from engine.store.settings import merge_setting, stored_setting

KEY = "reminders"
#: The outbox category of staff messages: never counted against a customer's consent or caps.
CATEGORY = "staff"
DEFAULT_BASE_URL = "http://127.0.0.1:5000"
SHOWN_TZ = ZoneInfo("Asia/Shanghai")
_CONNECTOR = {"type": "string", "pattern": r"^[a-z0-9_]{1,64}(/[A-Za-z0-9_.-]{1,64})?$"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "base_url": {"type": ["string", "null"], "pattern": r"^https?://[^\s/]+(/[^\s]*)?$"},
        "email": {"anyOf": [{"type": "null"}, _CONNECTOR]},
        "im": {"anyOf": [{"type": "null"}, _CONNECTOR]},
        "teams": {"type": "object", "additionalProperties": _CONNECTOR},
    },
}


_HINTS = {
    "base_url": "base_url must be an http(s) address such as https://care.example.com",
    "email": "email must be a connector or channel name, or TYPE/NAME",
    "im": "im must be a robot connector as TYPE/NAME, such as feishu/care-team",
    "teams": "teams maps team names to robot connectors, such as {\"north\": \"wecom/north\"}",
}


@dataclass(frozen=True)
class ReminderSettings:
    base_url: str | None = None
    email: str = "email"
    im: str | None = None
    teams: Mapping[str, str] = field(default_factory=dict)

    def public_base_url(self) -> str:
        return (self.base_url or os.environ.get("CAREFLOW_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    def robot_for(self, team: str | None) -> str | None:
        return self.teams.get(team or "") or self.im

    def as_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "effective_base_url": self.public_base_url(), "email": self.email,
                "im": self.im, "teams": dict(self.teams)}


def load(session: Session) -> ReminderSettings:
    stored = stored_setting(session, KEY)
    return ReminderSettings(base_url=stored.get("base_url"), email=stored.get("email") or "email",
                            im=stored.get("im"), teams=dict(stored.get("teams") or {}))


def save(session: Session, values: Mapping[str, Any], now: datetime, by: str | None) -> ReminderSettings:
    """Merge ``values`` into the stored settings (``null`` clears one)."""
    errors = []
    for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(dict(values)):
        name = str(e.absolute_path[0]) if e.absolute_path else ""
        errors.append(FieldError(e.json_path, name, _HINTS.get(name, e.message)[:300], str(e.validator)))
    if errors:
        raise SubmissionInvalid(errors)
    merge_setting(session, KEY, values, now, by)
    return load(session)


# ----- who, how, what ---------------------------------------------------------------------------


def recipients(session: Session, task: Task, kind: str) -> list[User]:
    """The assignee, else the users of the task's role (for an escalation: of the new role)."""
    if kind != "escalated" and task.assignee:
        user = session.scalars(select(User).where(User.username == task.assignee, User.active.is_(True))).first()
        return [user] if user is not None else []
    return users_in_role(session, task.role) if task.role else []


def media(user: User, robot: str | None) -> list[str]:
    """``email`` and/or ``im``: the user's choice, or the other way when the chosen one is impossible."""
    choice = user.notify or "email"
    if choice == "none":
        return []
    possible = {"email": bool(user.email), "im": robot is not None}
    wanted = [m for m in ("email", "im") if choice in (m, "both") and possible[m]]
    if wanted:
        return wanted
    return [m for m in ("email", "im") if possible[m]][:1]


_SUBJECTS = {
    "reminder_before": {"zh": "任务即将到期：{title}", "en": "Task due soon: {title}"},
    "reminder_after": {"zh": "任务已逾期：{title}", "en": "Task overdue: {title}"},
    "escalated": {"zh": "任务已升级给您：{title}", "en": "Task escalated to you: {title}"},
}
_BODY = {
    "zh": "{name}，您好：\n\n{subject}\n{due}\n打开任务：{url}\n\n"
          "（Careflow 自动发送。在“个人设置”页面可以选择用邮件、企业 IM 接收提醒，或不接收。）\n",
    "en": "Hello {name},\n\n{subject}\n{due}\nOpen the task: {url}\n\n"
          "(Sent by Careflow. On the \"My profile\" page you can choose e-mail, IM or no reminders.)\n",
}
_DUE = {"zh": "截止时间：{at}（北京时间）\n", "en": "Due: {at} (Beijing time)\n"}
_IM = {"zh": "{due}打开任务：{url}", "en": "{due}Open the task: {url}"}


def texts(task: Task, kind: str, language: str, url: str, name: str) -> tuple[str, str, str]:
    """(subject, e-mail body, IM text) of one reminder in ``language`` (zh or en)."""
    title_map = task.title if isinstance(task.title, Mapping) else {}
    title = " ".join(str(title_map.get(language) or title_map.get("zh") or title_map.get("en") or task.step_id).split())
    subject = _SUBJECTS.get(kind, _SUBJECTS["reminder_before"])[language].format(title=title)
    due = ""
    if task.due_at is not None:
        at = task.due_at if task.due_at.tzinfo else task.due_at.replace(tzinfo=ZoneInfo("UTC"))
        due = _DUE[language].format(at=at.astimezone(SHOWN_TZ).strftime("%Y-%m-%d %H:%M"))
    return (subject, _BODY[language].format(name=name, subject=subject, due=due, url=url),
            _IM[language].format(due=due, url=url))


def outbox_rows(session: Session, task: Task, kind: str, occurrence: int, now: datetime) -> list[dict[str, Any]]:
    """The outbox rows that tell the people concerned about this reminder or escalation.

    ``occurrence`` tells repeated reminders of one task apart (the reminder count, or the
    escalation level), so each one has its own effect keys and none is sent twice.
    """
    from engine.inbox import task_url  # the web pages own the address; imported late (no cycle)

    people = recipients(session, task, kind)
    if not people:
        return []
    settings = load(session)
    url = task_url(task.id, settings.public_base_url())
    rows = []
    for user in people:
        robot = settings.robot_for(user.team)
        language = user.language if user.language in ("zh", "en") else "zh"
        subject, body, im_text = texts(task, kind, language, url, user.display_name or user.username)
        for medium in media(user, robot):
            if medium == "email":
                connector, payload = settings.email, {"to": user.email, "subject": subject, "text": body}
            else:
                assert robot is not None
                connector = robot
                payload = {"subject": subject, "text": im_text}
                if user.im_id:
                    payload["mention"] = [user.im_id]
            rows.append({
                "effect_key": f"task:{task.id}:{kind}:{occurrence}:{user.username}:{medium}",
                "instance_id": task.instance_id, "token": task.token, "gen": task.gen, "step_id": task.step_id,
                "customer_id": None, "connector": connector, "payload": payload, "category": CATEGORY,
                "status": "pending", "wait": False, "attempts": 0, "max_attempts": 5, "backoff_seconds": 60.0,
                "next_attempt_at": now, "created_at": now,
            })
    return rows
