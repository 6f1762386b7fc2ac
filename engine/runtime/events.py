"""Events: what happened to an instance, as plain data the interpreter reacts to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.runtime.records import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Start:
    data: Mapping[str, Any] = field(default_factory=dict)
    trigger: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class TaskDone:
    token: str
    gen: int
    data: Mapping[str, Any]
    user: str | None = None
    task_id: int | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class SendBack:
    token: str
    gen: int
    to_step: str
    comment: str = ""
    user: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class TimerFired:
    token: str
    gen: int
    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class Message:
    """A named event delivered to the instance (e.g. ``customer_replied``)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class ActionDone:
    token: str
    gen: int
    result: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class ActionFailed:
    token: str
    gen: int
    message: str


@quick_init
@dataclass(frozen=True, slots=True)
class SubflowDone:
    token: str
    gen: int
    outcome: str
    variables: Mapping[str, Any] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class Retry:
    """An admin retries the step a token is stuck on."""

    token: str


@quick_init
@dataclass(frozen=True, slots=True)
class Skip:
    """An admin skips the step a token is stuck on, moving to its next step."""

    token: str


@quick_init
@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = "cancelled"


Event = (
    Start | TaskDone | SendBack | TimerFired | Message | ActionDone | ActionFailed | SubflowDone | Retry | Skip | Cancel
)
