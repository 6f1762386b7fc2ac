"""The tables: everything that matters is a row (ARCHITECTURE principle 2)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no BIGINT autoincrement; plain INTEGER there, BIGINT on PostgreSQL.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: comparisons are the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    # datetime.combine(d, d.time(), tz) is d.replace(tzinfo=tz) (fold kept) at a quarter of the
    # cost: replace's keyword arguments make it about 1 us, some twenty values a step transition.

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given where UTC is required")
        utc = value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)
        return datetime.combine(utc, utc.time())  # naive: time() leaves the time zone out

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else datetime.combine(value, value.time(), timezone.utc)

    # On SQLite the column is text, written and read by SQLAlchemy's DATETIME processors after
    # the two methods above: about 3 us a value, some twenty values per step transition. With
    # DATETIME's default storage format the same text is made and read in one step each
    # (tests/unit/test_utc_datetime.py compares them); any other dialect or format keeps the chain.

    def bind_processor(self, dialect: Any) -> Any:
        if _plain_sqlite_datetime(self, dialect):
            return _sqlite_bind
        if self.impl_instance.dialect_impl(dialect).bind_processor(dialect) is None:  # PostgreSQL's drivers
            return _naive_utc_bind
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if _plain_sqlite_datetime(self, dialect):
            return _sqlite_result
        return super().result_processor(dialect, coltype)


def _plain_sqlite_datetime(t: UTCDateTime, dialect: Any) -> bool:
    from sqlalchemy.dialects.sqlite import DATETIME

    impl = t.impl_instance.dialect_impl(dialect)
    return (dialect.name == "sqlite" and type(impl) is DATETIME and impl._storage_format == DATETIME._storage_format
            and impl._reg is None)


#: The last value written and its text: a request or batch writes one "now" many times (datetimes
#: are immutable, and the pair is replaced whole, so a thread never sees half of another's).
_last_bound: tuple[Any, str | None] = (None, None)


def _utc(value: datetime) -> datetime:
    """The aware datetime in UTC; a naive one is refused, as ``UTCDateTime.process_bind_param`` does."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} given where UTC is required")
    return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)


def _sqlite_bind(value: datetime | None) -> str | None:
    """UTCDateTime.process_bind_param, then SQLite DATETIME's text: 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC."""
    global _last_bound
    last = _last_bound
    if last[0] is value:
        return last[1]
    if value is None:
        return None
    text = _utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_bound = (value, text)
    return text


#: As ``_last_bound``, for dialects that take the naive datetime itself.
_last_naive: tuple[Any, datetime | None] = (None, None)


def _naive_utc_bind(value: datetime | None) -> datetime | None:
    """UTCDateTime.process_bind_param, the last value's result kept (see ``_last_bound``)."""
    global _last_naive
    last = _last_naive
    if last[0] is value:
        return last[1]
    if value is None:
        return None
    utc = _utc(value)
    naive = datetime.combine(utc, utc.time())
    _last_naive = (value, naive)
    return naive


def _sqlite_result(value: str | None) -> datetime | None:
    """SQLite DATETIME's reading (datetime.fromisoformat), then UTCDateTime.process_result_value."""
    if value is None:
        return None
    naive = datetime.fromisoformat(value)
    return datetime.combine(naive, naive.time(), timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    region: Mapped[str | None] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(64))
    #: zh or en as the user chose it; None: not chosen, the browser's language decides.
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    #: Raised to end every web session of the user (sign-out, deactivation, new password).
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: How task reminders and escalations reach the user: email, im, both or none.
    notify: Mapped[str] = mapped_column(String(8), default="email", server_default="email")
    #: The user's id on the team's IM (WeCom userid, DingTalk userId, Feishu open_id), for @mentions.
    im_id: Mapped[str | None] = mapped_column(String(128))


class FlowVersion(Base):
    """One deployed, immutable version of a flow; instances pin it."""

    __tablename__ = "flow_version"
    __table_args__ = (
        UniqueConstraint("flow_id", "version"),
        UniqueConstraint("flow_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    name: Mapped[dict[str, Any]]
    deployed_at: Mapped[datetime]
    deployed_by: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class FormVersion(Base):
    __tablename__ = "form_version"
    __table_args__ = (
        UniqueConstraint("form_id", "version"),
        UniqueConstraint("form_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    deployed_at: Mapped[datetime]


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (
        Index("ix_customer_birthday", "birthday_calendar", "birthday_key"),
        Index("ix_customer_owner", "owner"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    birthday: Mapped[date | None] = mapped_column(Date)
    birthday_calendar: Mapped[str] = mapped_column(String(8), default="solar")
    # month*100+day (solar, or lunar for lunar birthdays): the birthday trigger's index.
    birthday_key: Mapped[int | None] = mapped_column(Integer)
    region: Mapped[str | None] = mapped_column(String(64))
    grade: Mapped[str | None] = mapped_column(String(1))
    expected_value: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    preferred_channel: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8), default="zh")
    consent: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_purchase_at: Mapped[datetime | None]
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)
    purchase_total: Mapped[float] = mapped_column(Float, default=0.0)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # grading and segments (engine/segments): written by the recompute and by survey answers
    first_purchase_at: Mapped[datetime | None]
    rfm_r: Mapped[int | None] = mapped_column(Integer)
    rfm_f: Mapped[int | None] = mapped_column(Integer)
    rfm_m: Mapped[int | None] = mapped_column(Integer)
    churn_score: Mapped[float | None] = mapped_column(Float)
    churn_reason: Mapped[dict[str, Any] | None]
    graded_at: Mapped[datetime | None]
    last_nps: Mapped[int | None] = mapped_column(Integer)
    last_satisfaction: Mapped[int | None] = mapped_column(Integer)
    last_survey_at: Mapped[datetime | None]


class TimelineEntry(Base):
    """Every interaction with a customer: messages, tasks, answers, complaints."""

    __tablename__ = "timeline_entry"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[dict[str, Any]]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instance_id: Mapped[int | None] = mapped_column(BigId)


class Instance(Base):
    __tablename__ = "instance"
    __table_args__ = (Index("ix_instance_flow_customer", "flow_id", "customer_id", "status"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    flow_version_id: Mapped[int] = mapped_column(ForeignKey("flow_version.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    outcome: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[int | None] = mapped_column(BigId)
    parent_token: Mapped[str | None] = mapped_column(String(32))
    parent_gen: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    started_by: Mapped[str | None] = mapped_column(String(64))

    __mapper_args__ = {"version_id_col": revision}


class HistoryEntry(Base):
    """Append-only: one row per event an instance handled, with the steps it ran."""

    __tablename__ = "history_entry"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(BigId, index=True)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(32))
    entries: Mapped[list[Any]]


class Task(Base):
    __tablename__ = "task"
    __table_args__ = (
        Index("ix_task_open_role", "status", "role"),
        Index("ix_task_open_assignee", "status", "assignee"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    token: Mapped[str] = mapped_column(String(32))
    gen: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[dict[str, Any]]
    role: Mapped[str | None] = mapped_column(String(64))
    assignee: Mapped[str | None] = mapped_column(String(64))
    approval: Mapped[str] = mapped_column(String(8), default="any")
    status: Mapped[str] = mapped_column(String(16))  # open, completed, cancelled
    due_at: Mapped[datetime | None]
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    readonly: Mapped[list[Any]] = mapped_column(default=list)
    hidden: Mapped[list[Any]] = mapped_column(default=list)
    #: Values prefilled from the customer and the instance (x-prefill); read-only fields keep them.
    initial: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    completed_by: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(32))


class TaskComment(Base):
    __tablename__ = "task_comment"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"), index=True)
    at: Mapped[datetime]
    author: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="comment")  # comment, handover, send_back, claim
    body: Mapped[str] = mapped_column(Text)


class Notification(Base):
    """A reminder or escalation for a user; the inbox shows it, connectors may also send it."""

    __tablename__ = "notification"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user: Mapped[str | None] = mapped_column(String(64), index=True)
    role: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    read_at: Mapped[datetime | None]


class Timer(Base):
    __tablename__ = "timer"
    __table_args__ = (Index("ix_timer_due", "status", "due_at"), Index("ix_timer_lease", "lease_until"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    token: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # pending, fired, cancelled
    data: Mapped[dict[str, Any]]
    fired_at: Mapped[datetime | None]
    #: Scale-out: the fencing number of the last claim (a worker commits only with the newest one)
    #: and until when that claim stands (wall-clock time; NULL when nobody holds the timer).
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[datetime | None]


class TriggerOccurrence(Base):
    """One firing of a schedule or date trigger; the unique key makes each fire happen once."""

    __tablename__ = "trigger_occurrence"
    __table_args__ = (UniqueConstraint("flow_id", "trigger_key", "scheduled_for"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    trigger_key: Mapped[str] = mapped_column(String(512))
    scheduled_for: Mapped[datetime]
    fired_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # fired, missed
    started: Mapped[int] = mapped_column(Integer, default=0)


class Enrollment(Base):
    """One row per (flow, customer) that ever enrolled: the enrollment policy's memory."""

    __tablename__ = "enrollment"
    __table_args__ = (UniqueConstraint("flow_id", "customer_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"))
    active_instance_id: Mapped[int | None] = mapped_column(BigId)
    last_started_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=1)


class OutboxMessage(Base):
    """A side effect waiting to happen; ``effect_key`` makes one step's message unique."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    effect_key: Mapped[str] = mapped_column(String(200), unique=True)
    instance_id: Mapped[int | None] = mapped_column(BigId, index=True)
    token: Mapped[str | None] = mapped_column(String(32))
    gen: Mapped[int | None] = mapped_column(Integer)
    step_id: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(BigId)
    #: A type or channel, or ``type/configuration`` (64 + 1 + 64).
    connector: Mapped[str] = mapped_column(String(140))
    payload: Mapped[dict[str, Any]]
    #: The channel it went out on once routed (email, sms, ...), for consent and frequency caps.
    channel: Mapped[str | None] = mapped_column(String(16))
    #: "marketing" messages count against the per-customer frequency cap; "service" ones do not.
    category: Mapped[str] = mapped_column(String(16), default="service")
    # pending, sending, sent, failed, unknown, suppressed, skipped
    status: Mapped[str] = mapped_column(String(16))
    wait: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    backoff_seconds: Mapped[float] = mapped_column(Float, default=60.0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class Incident(Base):
    __tablename__ = "incident"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int | None] = mapped_column(BigId, index=True)
    token: Mapped[str | None] = mapped_column(String(32))
    step_id: Mapped[str | None] = mapped_column(String(64))
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(32))  # step_failed, delivery_failed, delivery_unknown
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, resolved
    resolution: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))


class CalendarOverride(Base):
    """An admin's correction of the business calendar: a day made working (调休) or a day off."""

    __tablename__ = "calendar_override"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    working: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(String(200))


class ConnectorConfig(Base):
    """A connector an admin attached: its type, plain settings, and encrypted secrets."""

    __tablename__ = "connector_config"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: field name → Fernet token; never returned in full, never logged.
    secrets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None] = mapped_column(String(64))


class ApiToken(Base):
    """A Bearer token of a user: only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the token, so people can tell their tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    """Append-only: who did what to which record (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_target", "target_type", "target_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str | None] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


class LoginAttempt(Base):
    """One sign-in attempt; failures per user name and address drive the lockout."""

    __tablename__ = "login_attempt"
    __table_args__ = (Index("ix_login_attempt_key", "username", "ip", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)


class WebhookEndpoint(Base):
    """An inbound webhook a shop or CRM calls, signed with its HMAC secret (stored encrypted)."""

    __tablename__ = "webhook_endpoint"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    secret: Mapped[str] = mapped_column(Text)
    #: Flows it may start and events it may deliver; empty means any.
    flows: Mapped[list[Any]] = mapped_column(default=list)
    events: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64))


class WebhookReceipt(Base):
    """A delivery acted on; the unique key makes a retried delivery act once."""

    __tablename__ = "webhook_receipt"
    __table_args__ = (UniqueConstraint("hook", "idempotency_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hook: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    body_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CustomerLink(Base):
    """A signed, expiring, single-use link that opens one form bound to one waiting instance."""

    __tablename__ = "customer_link"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    form_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class SchedulerLease(Base):
    """Which ticker is running; a stale lease is taken over (scale-out adds fencing)."""

    __tablename__ = "scheduler_lease"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    until: Mapped[datetime]


# ----- grading and segments ---------------------------------------------------------------


class Segment(Base):
    """A saved filter over customers; its members are kept in ``segment_member`` by the recompute."""

    __tablename__ = "segment"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[dict[str, Any]]
    filter: Mapped[dict[str, Any]]
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None] = mapped_column(String(64))
    recomputed_at: Mapped[datetime | None]


class SegmentMember(Base):
    """One customer in one segment since ``entered_at``; the primary key makes each entry happen once."""

    __tablename__ = "segment_member"
    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True, index=True)
    entered_at: Mapped[datetime]


class SurveyAnswer(Base):
    """A satisfaction or NPS answer a customer gave through a link: the NPS report's rows."""

    __tablename__ = "survey_answer"
    __table_args__ = (Index("ix_survey_answer_kind_at", "kind", "answered_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(BigId, index=True)
    instance_id: Mapped[int | None] = mapped_column(BigId, index=True)
    flow_id: Mapped[str | None] = mapped_column(String(64))
    form_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # nps, satisfaction
    score: Mapped[int] = mapped_column(Integer)
    answered_at: Mapped[datetime]


class AppSetting(Base):
    """An admin setting kept as JSON under a key (e.g. ``grading``)."""

    __tablename__ = "app_setting"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None] = mapped_column(String(64))
# ----- scale out (distributed mode) --------------------------------------------------------------


class StepExecution(Base):
    """The execution log: one row per unit of work a worker committed (a timer fired, a message settled).

    Written in the transaction that commits the work, so a row exists exactly when the work took
    effect; two rows for one ``(kind, ref_id)`` would mean it ran twice.
    """

    __tablename__ = "step_execution"
    __table_args__ = (Index("ix_step_execution_ref", "kind", "ref_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # timer, message
    ref_id: Mapped[int] = mapped_column(BigId)
    attempt: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[int | None] = mapped_column(BigId)
    worker: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))  # done, retry (the message goes out again later)
    at: Mapped[datetime]


__all__ = [
    "ApiToken",
    "AppSetting",
    "AuditEntry",
    "Base",
    "CalendarOverride",
    "ConnectorConfig",
    "Customer",
    "CustomerLink",
    "Enrollment",
    "FlowVersion",
    "FormVersion",
    "HistoryEntry",
    "Incident",
    "Instance",
    "LoginAttempt",
    "Notification",
    "OutboxMessage",
    "SchedulerLease",
    "Segment",
    "SegmentMember",
    "SurveyAnswer",
    "StepExecution",
    "Task",
    "TaskComment",
    "Timer",
    "TimelineEntry",
    "TriggerOccurrence",
    "User",
    "WebhookEndpoint",
    "WebhookReceipt",
]


# ----- customer import: import runs, saved column mappings, merge log, orders ------------------------

from sqlalchemy import LargeBinary  # noqa: E402


class ImportRun(Base):
    """One import of a customers or orders file: the file, its options, progress and report.

    ``done_groups`` is the commit's watermark: batches commit with it, so a crashed import resumes
    after the last whole batch.
    """

    __tablename__ = "import_run"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(8))
    encoding: Mapped[str | None] = mapped_column(String(32))
    # The file and the report can be large: loaded only when asked for, not with every batch.
    source: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    options: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    done_rows: Mapped[int] = mapped_column(Integer, default=0)
    done_groups: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict, deferred=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    committed_at: Mapped[datetime | None]


class ColumnMapping(Base):
    """A column mapping saved by name for the next file from the same source."""

    __tablename__ = "column_mapping"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    columns: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class CustomerMerge(Base):
    """Rows merged into one customer: which rows, matched on what, which fields changed (old, new)."""

    __tablename__ = "customer_merge"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    import_id: Mapped[int | None] = mapped_column(ForeignKey("import_run.id", ondelete="SET NULL"), index=True)
    at: Mapped[datetime]
    created: Mapped[bool] = mapped_column(Boolean, default=False)
    rows: Mapped[list[Any]] = mapped_column(default=list)
    matched_on: Mapped[list[Any]] = mapped_column(default=list)
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CustomerOrder(Base):
    """One purchase; ``order_id`` is unique, so importing the same order twice counts it once."""

    __tablename__ = "customer_order"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id", ondelete="CASCADE"), index=True)
    ordered_at: Mapped[datetime]
    amount: Mapped[float] = mapped_column(Float)
    import_id: Mapped[int | None] = mapped_column(ForeignKey("import_run.id", ondelete="SET NULL"), index=True)


__all__ += ["ColumnMapping", "CustomerMerge", "CustomerOrder", "ImportRun"]
