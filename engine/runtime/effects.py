"""Effects: what an advance asks the outside world to do, as plain data.

The interpreter never performs I/O; the store applies these effects in the same transaction that
saves the new state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.runtime.records import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class CreateTask:
    token: str
    step: str
    form: str
    title: Mapping[str, str]
    assignee: Mapping[str, Any]
    due_at: datetime | None
    approval: str = "any"
    readonly: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Cancel the open tasks of a token (or of every token when ``token`` is None)."""

    token: str | None
    reason: str = "cancelled"


@quick_init
@dataclass(frozen=True, slots=True)
class SetTimer:
    token: str
    kind: str  # wait, event_timeout, task_reminder, task_escalation, task_timeout
    due_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class CancelTimers:
    """Cancel pending timers of a token (or of every token when ``token`` is None)."""

    token: str | None


@quick_init
@dataclass(frozen=True, slots=True)
class SendMessage:
    token: str
    step: str
    connector: str
    params: Mapping[str, Any]
    effect_key: str
    max_attempts: int
    backoff_seconds: float
    wait: bool


@quick_init
@dataclass(frozen=True, slots=True)
class UpdateCustomer:
    fields: Mapping[str, Any]
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    note: Mapping[str, str] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class EscalateTasks:
    token: str
    to_role: str
    level: int


@quick_init
@dataclass(frozen=True, slots=True)
class RemindTasks:
    token: str
    when: str  # "before" or "after" the due time


@quick_init
@dataclass(frozen=True, slots=True)
class StartSubflow:
    token: str
    flow: str
    data: Mapping[str, Any]
    wait: bool


@quick_init
@dataclass(frozen=True, slots=True)
class RaiseIncident:
    token: str
    step: str
    message: str


@quick_init
@dataclass(frozen=True, slots=True)
class ResolveIncidents:
    token: str
    resolution: str


@quick_init
@dataclass(frozen=True, slots=True)
class Timeline:
    kind: str
    title: Mapping[str, str]
    data: Mapping[str, Any] = field(default_factory=dict)


Effect = (
    CreateTask
    | CancelTasks
    | SetTimer
    | CancelTimers
    | SendMessage
    | UpdateCustomer
    | EscalateTasks
    | RemindTasks
    | StartSubflow
    | RaiseIncident
    | ResolveIncidents
    | Timeline
)
