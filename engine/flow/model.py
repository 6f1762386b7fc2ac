"""The typed model of a parsed flow: frozen dataclasses that keep the YAML line of each part."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

STEP_TYPES = (
    "task",
    "action",
    "decision",
    "parallel",
    "join",
    "wait",
    "set",
    "update_customer",
    "assign_owner",
    "subflow",
    "end",
)

#: Steps at which a token stops and waits for the outside world.
WAIT_STATES = frozenset({"task", "wait", "subflow"})

#: The name of an attached connector configuration (``care-team``, ``smtp-main``).
CONFIGURATION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def split_connector(reference: str) -> tuple[str, str | None]:
    """``feishu/care-team`` -> (``feishu``, ``care-team``); a plain ``feishu`` -> (``feishu``, None).

    An action step names a connector type or channel, optionally with the configuration to use
    after a slash, so that the type (and with it the message schema) is known without a database.
    """
    type_, slash, name = reference.partition("/")
    return (type_, name) if slash else (reference, None)


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time; business units are counted on the flow's business calendar."""

    minutes: float = 0
    hours: float = 0
    days: float = 0
    weeks: float = 0
    business_days: int = 0
    business_hours: float = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Duration:
        return cls(**{k: data[k] for k in data})

    @property
    def plain(self) -> timedelta:
        """The calendar part of the duration (business units excluded)."""
        return timedelta(minutes=self.minutes, hours=self.hours, days=self.days, weeks=self.weeks)

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k)}


@dataclass(frozen=True, slots=True)
class Assignee:
    role: str | None = None
    user: str | None = None
    users: tuple[str, ...] = ()
    expr: str | None = None
    strategy: str = "claim"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy}
        for key in ("role", "user", "expr"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.users:
            out["users"] = list(self.users)
        return out


@dataclass(frozen=True, slots=True)
class Case:
    when: str
    next: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Escalation:
    after: Duration
    to_role: str


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder ``before`` or ``after`` the due time (exactly one is set)."""

    offset: Duration
    before: bool


@dataclass(frozen=True, slots=True)
class Step:
    """One node of the flow. Fields that a step type does not use keep their defaults."""

    id: str
    type: str
    line: int = 0
    column: int = 0
    name: Mapping[str, str] = field(default_factory=dict)
    next: str | None = None
    # task
    form: str | None = None
    title: Mapping[str, str] = field(default_factory=dict)
    assignee: Assignee | None = None
    due: Duration | None = None
    reminders: tuple[Reminder, ...] = ()
    escalation: tuple[Escalation, ...] = ()
    timeout_after: Duration | None = None
    timeout_next: str | None = None
    approval: str = "any"
    send_back_to: tuple[str, ...] = ()
    result: str | None = None
    readonly: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    # action
    connector: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int = 5
    backoff: Duration | None = None
    wait: bool = False
    # decision
    cases: tuple[Case, ...] = ()
    default: str | None = None
    # parallel
    branches: tuple[str, ...] = ()
    # wait
    duration: Duration | None = None
    until: str | None = None
    event: str | None = None
    timeout: Duration | None = None
    on_timeout: str | None = None
    # set / update_customer
    values: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    timeline: Mapping[str, str] = field(default_factory=dict)
    # assign_owner
    role: str | None = None
    strategy: str | None = None
    # subflow
    flow: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    # end
    outcome: str = "completed"

    @property
    def result_name(self) -> str:
        """The variable under which this step's answer or result is stored."""
        return self.result or self.id

    def successors(self) -> tuple[str, ...]:
        """Every step this one can move to, in a stable order."""
        out: list[str] = []
        if self.type == "decision":
            out.extend(c.next for c in self.cases)
            if self.default:
                out.append(self.default)
        elif self.type == "parallel":
            out.extend(self.branches)
        if self.next:
            out.append(self.next)
        for extra in (self.timeout_next, self.on_timeout):
            if extra:
                out.append(extra)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class Trigger:
    type: str
    line: int = 0
    form: str | None = None
    customer_from: str = "match"
    cron: str | None = None
    timezone: str | None = None
    customers: str | None = None
    catch_up: str = "coalesce"
    field: str | None = None
    offset_days: int = 0
    at: str = "09:00"
    lunar: str = "from_customer"
    feb29: str = "feb28"
    event: str | None = None
    when: str | None = None
    #: segment triggers: the segment's name (``event`` is enter or leave)
    segment: str | None = None

    @property
    def key(self) -> str:
        """A stable identity for trigger state rows (independent of list order edits elsewhere)."""
        parts = [self.type, self.form or "", self.cron or "", self.field or "", self.event or ""]
        parts += [self.customers or "", self.at, str(self.offset_days)]
        if self.segment:
            parts.append(self.segment)
        return "|".join(parts)


@dataclass(frozen=True, slots=True)
class Enrollment:
    concurrent: str = "one_per_customer"
    reenroll: str = "always"
    reenroll_after: Duration | None = None


@dataclass(frozen=True, slots=True)
class Goal:
    when: str | None = None
    event: str | None = None
    outcome: str = "goal_reached"


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    name: Mapping[str, str]
    steps: Mapping[str, Step]
    start: str
    description: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "Asia/Shanghai"
    triggers: tuple[Trigger, ...] = ()
    enrollment: Enrollment = field(default_factory=Enrollment)
    goal: Goal | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]
