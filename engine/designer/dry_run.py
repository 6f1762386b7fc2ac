"""Dry run: a flow played for one customer on a virtual clock, with nothing sent and nothing real touched.

The real engine runs, not a copy of its rules: a throwaway Careflow on a temporary SQLite file
gets a copy of what the flow reads (the customer with their segment memberships and orders, the
deployed forms and flows, the users without passwords, the connector configurations without secrets
or provider settings, and the customer's recent marketing messages, which the weekly caps count),
the flow is deployed there
from the given YAML (a draft may be tried before it is published), and it is started for the
customer. The connectors of that Careflow are stand-ins of the same names, channels and message
schemas that only record what they are given, so templates are rendered, channels routed and
consent and frequency caps applied by the real dispatcher, but nothing leaves the
machine. The real database is only read.

The clock is a ``FixedClock``. The run loops: fire what is due and deliver the outbox; answer the
open tasks (with the answers given for their step, else with defaults built from the form); let
an event arrive when the answers say so; else jump the clock to the next timer. It stops when the
instance ends (``completed``), when nothing more can happen (``waiting``: an event without a
timeout that the answers do not bring), on an incident (``failed``), or at the horizon
(``horizon``: 400 days of virtual time or 200 rounds).

``answers`` maps step ids to what happens there:

* a task step: the form's answers, e.g. ``{"call": {"reason": "price", "recovered": false}}``, or
  ``{"$timeout": true}``: nobody answers, so reminders, escalations and the task's ``on_timeout`` happen;
* a wait for an event: ``{"event": true, "data": {...}}`` makes the event arrive at once (its data
  defaults to the default answers of the form named like the event, if there is one); without it
  the wait times out as it would if the customer never answered;
* a list instead of one value gives the answers of successive visits of the step (a loop back);
  visits beyond the list get the default. One value is used for every visit.

See docs/dry-run.md.
"""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import delete, event, func, inspect, select
from sqlalchemy.orm import Session

from connectors.base import Connector, ConnectorError, Delivery, Message
from connectors.channels import recipient
from connectors.registry import Registry
from engine import forms
from engine.clock import FixedClock, as_utc
from engine.core import Careflow
from engine.errors import DefinitionInvalid, EngineError, Problem, SubmissionInvalid
from engine.flow.loader import load_flow_text
from engine.flow.model import Flow, split_connector
from engine.outbox import CAP_WINDOW, SUPPRESSED
from engine.schedule import TickReport, fire_due_timers
from engine.secrets import SecretBox
from engine.store import definitions as defs
from engine.store.db import make_engine, migrate
from engine.store.models import (
    ConnectorConfig,
    Customer,
    CustomerOrder,
    FlowVersion,
    FormVersion,
    HistoryEntry,
    Incident,
    Instance,
    OutboxMessage,
    Segment,
    SegmentMember,
    Task,
    Timer,
    User,
)

#: How far the virtual clock may run, and how many rounds (due work, an answer or a clock jump) a run may take.
HORIZON = timedelta(days=400)
MAX_ROUNDS = 200
#: The answer that leaves a task unanswered: ``{"$timeout": true}`` (no form field can be named so).
UNANSWERED = "$timeout"
#: Who completes a task nobody in the copied users may complete (a sandbox-only admin).
DRY_RUN_USER = "careflow-dry-run"
#: The ids a customer can have (a signed 64-bit column) and the years a run may start in.
MAX_ID = 2**63 - 1
START_YEARS = (1970, 9000)

_TEXTS: dict[str, tuple[str, str]] = {
    "chose": ("走向 {target}", "went to {target}"),
    "waited": ("等到 {at}", "waited until {at}"),
    "event_timeout": ("未等到事件 {event}，超时", "no {event} event came: timed out"),
    "event_received": ("收到事件 {event}", "the {event} event came"),
    "task_given": ("按给定答案完成", "completed with the given answers"),
    "task_default": ("按默认答案完成", "completed with default answers"),
    "task_timeout": ("任务超时", "the task timed out"),
    "reminder": ("已发提醒", "a reminder was sent"),
    "escalated": ("已升级给 {role}", "escalated to {role}"),
    "subflow": ("子流程 {flow}", "subflow {flow}"),
    "incident": ("出错：{message}", "failed: {message}"),
    "start_data": ("以表单 {form} 的默认答案启动", "started with default answers of the form {form}"),
    "no_customer": ("找不到编号为 {id} 的客户", "No customer by the id {id} was found"),
    "bad_answers": ("answers 必须是以步骤 id 为键的对象", "answers must be an object keyed by step id"),
    "bad_answer": ("步骤 {step} 的答案必须是对象或对象列表", "the answers for step {step} must be an object or a list of objects"),
    "invalid_answer": ("步骤 {step} 的答案无效：{errors}", "the answers for step {step} are invalid: {errors}"),
    "waiting": ("步骤 {step} 在等待事件 {event}，且没有超时；在 answers 中给出 {{\"{step}\": {{\"event\": true}}}} 让事件到来",
                "step {step} waits for the {event} event and has no timeout; answer {{\"{step}\": {{\"event\": true}}}} to make it come"),
    "horizon": ("模拟在 {at} 停止：超过 {days} 天或 {rounds} 轮", "the run stopped at {at}: beyond {days} days or {rounds} rounds"),
    "delivery": ("步骤 {step} 的消息未能发出：{message}", "the message of step {step} could not be sent: {message}"),
    "message_invalid": ("步骤 {step} 渲染出的消息不符合 {connector} 的格式：{message}",
                        "the message step {step} rendered does not fit {connector}: {message}"),
    "unanswered": ("步骤 {step} 的任务无人处理，且没有超时（on_timeout）", "nobody answers the task of step {step}, and it has no on_timeout"),
    "start_failed": ("无法启动流程：{message}", "the flow could not start: {message}"),
    "bad_start": ("start 必须在 {low} 年到 {high} 年之间，而不是 {value}", "start must lie in the years {low} to {high}, not {value}"),
    "bad_customer": ("customer_id 必须是 1 到 {high} 之间的整数，而不是 {value}",
                     "customer_id must be a whole number from 1 to {high}, not {value}"),
    "cancelled": ("流程实例被取消：{reason}", "the instance was cancelled: {reason}"),
}


def _t(language: str, key: str, **values: Any) -> str:
    zh, en = _TEXTS[key]
    return (en if language == "en" else zh).format(**values)


def problem(message: str, *, node: str | None = None, path: str = "$", line: int = 0, column: int = 0,
            edge: str | None = None) -> dict[str, Any]:
    """A problem as the designer's endpoints give them (see the designer's contract)."""
    return {"message": message, "line": line, "column": column, "path": path, "node": node, "edge": edge}


class DryRunInvalid(EngineError):
    """The dry run could not begin: the flow does not load, the customer or the answers are wrong."""

    code = "dry_run_invalid"
    status = 422

    def __init__(self, problems: list[dict[str, Any]]):
        super().__init__("; ".join(p["message"] for p in problems))
        self.problems = problems


# ----- the recording connectors -----------------------------------------------------------------


@dataclass
class Recorder:
    """What the stand-in connectors were given, by effect key (the outbox row's)."""

    sent: dict[str, Message] = field(default_factory=dict)

    def send(self, message: Message) -> Delivery:
        self.sent[message.effect_key] = message
        return Delivery(provider_ref=f"dry-run-{len(self.sent)}")


def recording_registry(real: Registry, recorder: Recorder) -> Registry:
    """A registry with the real one's names, each a stand-in that records instead of sending.

    Channels (``email``, ``sms``, ``preferred``) are kept as they are: they only choose the route
    and never send. Every other connector becomes a class with the same name, channel,
    idempotency, settings and message schemas, and a ``send`` that records.
    """
    registry = Registry()
    for name in sorted(real.names()):
        connector = real.get(name)
        if getattr(connector, "routes", False):
            registry.register(connector, name)
            continue
        attrs: dict[str, Any] = {key: getattr(connector, key) for key in
                                 ("name", "channel", "idempotent", "settings_schema", "message_schema")}
        if hasattr(connector, "configurable"):
            attrs["configurable"] = connector.configurable

        def send(self: Any, message: Message, settings: Mapping[str, Any]) -> Delivery:
            return recorder.send(message)

        attrs["send"] = send
        registry.register(type(f"DryRun{type(connector).__name__}", (), attrs)(), name)
    return registry


# ----- copying what the flow reads ------------------------------------------------------------------


def _columns(obj: Any, **overrides: Any) -> dict[str, Any]:
    values = {attr.key: getattr(obj, attr.key) for attr in inspect(type(obj)).column_attrs}
    values.update(overrides)
    return values


def _routes(registry: Registry, type_: str) -> bool:
    try:
        return bool(getattr(registry.get(type_), "routes", False))
    except LookupError:
        return False


@dataclass
class Snapshot:
    """Rows of the real database the run needs, as column dicts (read in one session)."""

    rows: list[tuple[type, dict[str, Any]]]
    copied_outbox: int


def snapshot(cf: Careflow, customer_id: int, start: datetime) -> Snapshot:
    rows: list[tuple[type, dict[str, Any]]] = []
    with cf.sessions() as s:
        customer = s.get(Customer, customer_id)
        if customer is None or customer.status == "deleted":
            raise LookupError(customer_id)
        for user in s.scalars(select(User).order_by(User.id)):
            rows.append((User, _columns(user, password_hash=None, session_epoch=0)))
        rows.append((Customer, _columns(customer)))
        for segment in s.scalars(select(Segment).order_by(Segment.id)):
            rows.append((Segment, _columns(segment)))
        for member in s.scalars(select(SegmentMember).where(SegmentMember.customer_id == customer_id)):
            rows.append((SegmentMember, _columns(member)))
        for order in s.scalars(select(CustomerOrder).where(CustomerOrder.customer_id == customer_id)):
            rows.append((CustomerOrder, _columns(order, import_id=None)))
        for config in s.scalars(select(ConnectorConfig).order_by(ConnectorConfig.id)):
            # Names, types and whether enabled; settings only of channels (their provider and weekly
            # cap decide the route), since the stand-in providers need none. No secret is copied.
            settings = dict(config.settings) if _routes(cf.registry, config.type) else {}
            rows.append((ConnectorConfig, _columns(config, settings=settings, secrets={})))
        newest_forms = select(FormVersion.form_id, func.max(FormVersion.version).label("v")).group_by(FormVersion.form_id).subquery()
        for form in s.scalars(select(FormVersion).join(
                newest_forms, (FormVersion.form_id == newest_forms.c.form_id) & (FormVersion.version == newest_forms.c.v))):
            rows.append((FormVersion, _columns(form)))
        for version in defs.latest_flow_versions(s):
            rows.append((FlowVersion, _columns(version)))
        # The marketing messages the weekly caps count (instance ids dropped: those instances are not copied).
        recent = s.scalars(select(OutboxMessage).where(
            OutboxMessage.customer_id == customer_id, OutboxMessage.category == "marketing",
            OutboxMessage.status == "sent", OutboxMessage.sent_at >= start - CAP_WINDOW, OutboxMessage.sent_at <= start))
        copied = 0
        for message in recent:
            copied += 1
            rows.append((OutboxMessage, {
                "effect_key": f"real:{message.id}", "connector": message.connector, "payload": {}, "channel": message.channel,
                "category": message.category, "status": "sent", "attempts": message.attempts,
                "max_attempts": message.max_attempts, "backoff_seconds": message.backoff_seconds,
                "next_attempt_at": message.next_attempt_at, "created_at": message.created_at, "sent_at": message.sent_at,
                "customer_id": customer_id,
            }))
    return Snapshot(rows, copied)


_schema_lock = threading.Lock()
_schema_file: Path | None = None


def _empty_database(folder: Path) -> Path:
    """A fresh database file in ``folder``: a copy of one migrated once per process (migrating takes long)."""
    global _schema_file
    with _schema_lock:
        if _schema_file is None or not _schema_file.exists():
            home = Path(tempfile.mkdtemp(prefix="careflow-dry-run-schema-"))
            engine = make_engine(f"sqlite:///{home / 'schema.db'}")
            try:
                migrate(engine)
            finally:
                engine.dispose()  # the last connection closed: the WAL is checked into the file
            atexit.register(shutil.rmtree, home, True)
            _schema_file = home / "schema.db"
        target = folder / "dry-run.db"
        shutil.copyfile(_schema_file, target)
    return target


@contextmanager
def sandbox(cf: Careflow, start: datetime, recorder: Recorder) -> Iterator[tuple[Careflow, FixedClock]]:
    """A throwaway Careflow on a temporary SQLite file, with recording connectors and a fixed clock."""
    with tempfile.TemporaryDirectory(prefix="careflow-dry-run-") as folder:
        clock = FixedClock(start)
        box = Careflow(
            f"sqlite:///{_empty_database(Path(folder))}", clock=clock, calendar=cf.load_calendar(),
            registry=recording_registry(cf.registry, recorder), connector_settings=cf.connector_settings,
            secrets=SecretBox([Fernet.generate_key()]), migrate_schema=False,
        )

        @event.listens_for(box.db, "connect")
        def _throwaway(dbapi_conn: Any, _record: Any) -> None:
            # Nothing here must survive a power cut: skip the fsyncs that make SQLite durable.
            dbapi_conn.execute("PRAGMA synchronous=OFF")

        try:
            yield box, clock
        finally:
            box.close()


# ----- default answers ----------------------------------------------------------------------------------


def _sample(item: forms.FormField, now: datetime, customer: Mapping[str, Any]) -> Any:
    """A plausible value for a field: its first option, its minimum, a short text..."""
    schema = item.schema
    if item.options:
        first = item.options[0][0]
        return [first] if "array" in _types(schema) else first
    types = _types(schema)
    if types & {"integer", "number"}:
        value: float = 0
        if isinstance(schema.get("minimum"), (int, float)):
            value = schema["minimum"]
        elif isinstance(schema.get("exclusiveMinimum"), (int, float)):
            value = schema["exclusiveMinimum"] + 1
        elif isinstance(schema.get("maximum"), (int, float)) and schema["maximum"] < 0:
            value = schema["maximum"]
        return int(value) if "integer" in types or float(value).is_integer() else value
    if "boolean" in types:
        return True
    if "array" in types:
        return []
    if "object" in types:
        return {}
    fmt = schema.get("format")
    if fmt == "email":
        return customer.get("email") or "dry-run@example.com"
    if fmt == "phone":
        return customer.get("phone") or "+8613800138000"
    if fmt == "date":
        return now.date().isoformat()
    if fmt == "date-time":
        return now.isoformat()
    text = "试运行 dry run"
    low = int(schema.get("minLength") or 0)
    if len(text) < low:
        text = (text + " ") * (low // len(text) + 1)
    high = schema.get("maxLength")
    return text[: int(high)] if isinstance(high, int) else text


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    return set(declared) if isinstance(declared, list) else set()


def default_answers(form: forms.Form, initial: Mapping[str, Any], now: datetime, customer: Mapping[str, Any]) -> dict[str, Any]:
    """Answers a form accepts: its prefill and defaults, then a value for each required field.

    A field named like a customer's field (``name``, ``phone``...) takes the customer's value, any
    other a sample (``_sample``). Fields required only under a condition (``if``/``then``) are
    filled when validation asks for them; when the form still refuses (one of several fields
    needed, ``anyOf``), every empty field is filled once more.
    """
    values = dict(initial)

    def value_for(item: forms.FormField) -> Any:
        known = customer.get(item.name)
        if known not in (None, "", [], {}) and not isinstance(known, dict):
            return known
        return _sample(item, now, customer)

    for item in form.fields:
        if item.name in values:
            continue
        if "default" in item.schema:
            values[item.name] = copy.deepcopy(item.schema["default"])
        elif item.required:
            values[item.name] = value_for(item)
    filled_all = False
    for _round in range(5):
        try:
            forms.check_submission(form, values, current=initial)
            break
        except SubmissionInvalid as exc:
            missing = [e.field for e in exc.errors if e.code == "required" and e.field and e.field not in values]
            if missing:
                for name in missing:
                    try:
                        values[name] = value_for(form.field(name))
                    except KeyError:
                        return values
            elif not filled_all:
                filled_all = True
                for item in forms.visible_fields(form, values):
                    values.setdefault(item.name, value_for(item))
            else:
                break  # left to the completion, which reports it
    return values


# ----- the run ----------------------------------------------------------------------------------------


@dataclass
class _Answers:
    """The answers given per step, consumed one per visit when given as a list."""

    given: Mapping[str, Any]
    used: dict[str, int] = field(default_factory=dict)
    by_visit: dict[tuple[int, str, int], Any] = field(default_factory=dict)

    def take(self, step: str, visit: tuple[int, str, int]) -> Any:
        if visit in self.by_visit:
            return self.by_visit[visit]
        value = self.given.get(step)
        if isinstance(value, list):
            index = self.used.get(step, 0)
            self.used[step] = index + 1
            value = value[index] if index < len(value) else None
        self.by_visit[visit] = value
        return value


def _check_answers(answers: Any, language: str) -> dict[str, Any]:
    if answers is None:
        return {}
    if not isinstance(answers, dict):
        raise DryRunInvalid([problem(_t(language, "bad_answers"), path="$.answers")])
    for step, value in answers.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise DryRunInvalid([problem(_t(language, "bad_answer", step=step), node=str(step), path=f"$.answers.{step}")])
    return answers


def flow_problems(exc: DefinitionInvalid, source: str, language: str = "en") -> list[dict[str, Any]]:
    """The loader's problems with the step each one is about (from ``$.steps[N]`` in its path)."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError:
        data = None
    steps = data.get("steps") if isinstance(data, dict) else None
    out = []
    for p in exc.problems:
        node = None
        if p.path.startswith("$.steps[") and isinstance(steps, list):
            index = p.path[len("$.steps["):].split("]", 1)[0]
            if index.isdigit() and int(index) < len(steps) and isinstance(steps[int(index)], dict):
                node = str(steps[int(index)].get("id")) if steps[int(index)].get("id") is not None else None
        out.append(problem(p.text(language), node=node, path=p.path, line=p.line, column=p.column))
    return out


def dry_run(
    cf: Careflow,
    source: str,
    customer_id: int,
    *,
    answers: Mapping[str, Any] | None = None,
    start: datetime | None = None,
    data: Mapping[str, Any] | None = None,
    language: str = "zh",
    horizon: timedelta = HORIZON,
    max_rounds: int = MAX_ROUNDS,
) -> dict[str, Any]:
    """Play the flow in ``source`` for a customer; see the module's docstring. Raises DryRunInvalid.

    ``start`` defaults to the clock's now; without a zone it is read in the flow's time zone.
    """
    language = "en" if language == "en" else "zh"
    if not isinstance(customer_id, int) or isinstance(customer_id, bool) or not 1 <= customer_id <= MAX_ID:
        raise DryRunInvalid([problem(_t(language, "bad_customer", high=MAX_ID, value=customer_id), path="$.customer_id")])
    if start is not None and not START_YEARS[0] <= start.year <= START_YEARS[1]:
        # Beyond these the zone conversion or the horizon leaves what a datetime can hold.
        raise DryRunInvalid([problem(_t(language, "bad_start", low=START_YEARS[0], high=START_YEARS[1],
                                        value=start.isoformat()), path="$.start")])
    given = _check_answers(answers, language)
    with cf.sessions() as s:
        catalog = defs.catalog(s, cf.registry)
    try:
        flow = load_flow_text(source, "dry-run", catalog)
    except DefinitionInvalid as exc:
        raise DryRunInvalid(flow_problems(exc, source, language)) from None
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=ZoneInfo(flow.timezone))  # a form's datetime-local: the flow's own time
    begin = as_utc(start) if start is not None else cf.clock.now()
    try:
        snap = snapshot(cf, customer_id, begin)
    except LookupError:
        raise DryRunInvalid([problem(_t(language, "no_customer", id=customer_id), path="$.customer_id")]) from None
    recorder = Recorder()
    with sandbox(cf, begin, recorder) as (box, clock):
        with box.sessions.begin() as s:
            # The migrations seed some rows (the built-in segments): the real ones replace them.
            for model in reversed(list(dict.fromkeys(model for model, _values in snap.rows))):
                s.execute(delete(model))
            for model, values in snap.rows:
                s.add(model(**values))
        try:
            box.deploy_flow_text(source, "dry-run")
        except DefinitionInvalid as exc:  # only if the copy lacks something the real catalog has
            raise DryRunInvalid(flow_problems(exc, source, language)) from None
        run = _Run(box, clock, flow, customer_id, _Answers(given), language, begin + horizon, max_rounds)
        run.play(data)
        return run.report(recorder)


class _Run:
    def __init__(self, box: Careflow, clock: FixedClock, flow: Flow, customer_id: int, answers: _Answers,
                 language: str, until: datetime, max_rounds: int):
        self.box, self.clock, self.flow, self.customer_id = box, clock, flow, customer_id
        self.answers, self.language, self.until, self.max_rounds = answers, language, until, max_rounds
        self.started_at = clock.now()
        self.instance_id: int | None = None
        self.status = "running"
        self.problems: list[dict[str, Any]] = []
        self.answered: dict[int, str] = {}  # task id -> given / default
        self.handled_events: set[tuple[int, str, int]] = set()
        self.left_open: set[int] = set()  # tasks the answers leave unanswered
        self.start_note = ""

    def t(self, key: str, **values: Any) -> str:
        return _t(self.language, key, **values)

    def customer(self) -> dict[str, Any]:
        from engine.store.customers import customer_dict, get_customer

        with self.box.sessions() as s:
            return customer_dict(get_customer(s, self.customer_id))

    # --- playing ------------------------------------------------------------------------------

    def start_data(self, data: Mapping[str, Any] | None) -> dict[str, Any]:
        """What a form-triggered flow would start with: the given data, else the form's defaults."""
        if data is not None:
            return dict(data)
        for trigger in self.flow.triggers:
            if trigger.type == "form" and trigger.form:
                with self.box.sessions() as s:
                    form = defs.latest_form(s, trigger.form)
                customer = self.customer()
                context = {"customer": customer, "vars": {}, "instance": {}}
                self.start_note = self.t("start_data", form=trigger.form)
                return {trigger.form: forms.check_submission(
                    form, default_answers(form, forms.prefill(form, context), self.clock.now(), customer))}
        return {}

    def play(self, data: Mapping[str, Any] | None) -> None:
        try:
            self.loop(data)
        except _Stop:
            pass  # the reason is already in the status and the problems

    def loop(self, data: Mapping[str, Any] | None) -> None:
        try:
            self.instance_id = self.box.start(self.flow.id, customer_id=self.customer_id, data=self.start_data(data))
        except (EngineError, LookupError, ValueError) as exc:
            self.problems.append(problem(self.t("start_failed", message=str(exc))))
            self.status = "failed"
            return
        for _round in range(self.max_rounds):
            self.due_work()
            if self.ended() or self.stuck():
                return
            if self.answer_task() or self.bring_event():
                continue
            next_at = self.next_due()
            if next_at is None:
                self.status = "waiting"
                self.explain_waiting()
                return
            if next_at > self.until:
                break
            self.clock.set(max(next_at, self.clock.now()))
        self.status = "horizon"
        self.problems.append(problem(self.t("horizon", at=self.clock.now().isoformat(),
                                            days=(self.until - self.started_at).days, rounds=self.max_rounds)))

    def due_work(self) -> None:
        fire_due_timers(self.box.sessions, self.box.runtime, TickReport())
        self.box.dispatch()

    def root(self, s: Session) -> Instance:
        instance = s.get(Instance, self.instance_id)
        assert instance is not None
        return instance

    def ended(self) -> bool:
        with self.box.sessions() as s:
            root = self.root(s)
            status, reason = root.status, root.outcome
            if status == "running":
                return False
            # A step's own incident (a delivery's problem is listed with its message, as in stuck()).
            incidents = list(s.scalars(select(Incident).where(Incident.instance_id == root.id, Incident.status == "open",
                                                              Incident.outbox_id.is_(None)).order_by(Incident.id)))
        if status == "cancelled":
            self.status = "cancelled"
            self.problems.append(problem(self.t("cancelled", reason=reason or "-")))
        elif incidents:
            self.status = "failed"
            self.problems += [problem(i.message, node=i.step_id) for i in incidents]
        else:
            self.status = "completed"
        return True

    def stuck(self) -> bool:
        """An open incident on a step (or on a message the flow waits for) ends the run as ``failed``."""
        with self.box.sessions() as s:
            incidents = list(s.scalars(select(Incident).where(Incident.status == "open").order_by(Incident.id)))
            waiting_messages = {m.id for m in s.scalars(select(OutboxMessage).where(OutboxMessage.wait.is_(True)))}
        blocking = [i for i in incidents if i.outbox_id is None or i.outbox_id in waiting_messages]
        if not blocking:
            return False
        self.status = "failed"
        for incident in blocking:
            if incident.outbox_id is None:  # a delivery's problem is listed with its message
                self.problems.append(problem(incident.message, node=incident.step_id))
        return True

    def answer_task(self) -> bool:
        with self.box.sessions() as s:
            query = select(Task).where(Task.status == "open")
            if self.left_open:
                query = query.where(Task.id.not_in(self.left_open))
            task = s.scalars(query.order_by(Task.id).limit(1)).first()
            if task is None:
                return False
            users = list(s.scalars(select(User).where(User.active.is_(True)).order_by(User.id)))
            form = defs.latest_form(s, task.form_id)
        given = self.answers.take(task.step_id, (task.instance_id, task.token, task.gen))
        if isinstance(given, dict) and given.get(UNANSWERED):
            # Nobody answers: reminders, escalations and the task's own timeout take their course.
            self.left_open.add(task.id)
            return True
        if given is None:
            data = default_answers(form, task.initial or {}, self.clock.now(), self.customer())
            self.answered[task.id] = "default"
        else:
            data = {**(task.initial or {}), **given}
            self.answered[task.id] = "given"
        try:
            self.box.complete(task.id, data, self.completer(task, users), locale=self.language)
        except SubmissionInvalid as exc:
            errors = "; ".join(f"{e.field or '-'}: {e.message}" for e in exc.errors)
            self.problems.append(problem(self.t("invalid_answer", step=task.step_id, errors=errors), node=task.step_id,
                                         path=f"$.answers.{task.step_id}"))
            self.answered.pop(task.id, None)
            self.status = "failed"
            raise _Stop() from None
        return True

    def completer(self, task: Task, users: list[User]) -> str:
        """A copied user who may complete the task, else a sandbox-only admin."""
        for user in users:
            if task.assignee is not None and user.username == task.assignee:
                return user.username
        for user in users:
            if task.assignee is None and task.role in (user.roles or []):
                return user.username
        with self.box.sessions.begin() as s:
            if s.scalars(select(User).where(User.username == DRY_RUN_USER)).first() is None:
                s.add(User(username=DRY_RUN_USER, display_name="dry run", roles=["admin"], active=True,
                           created_at=self.clock.now()))
        return DRY_RUN_USER

    def event_waits(self) -> list[tuple[int, str, dict[str, Any], str]]:
        """(instance id, token, token state, step id) of every token waiting for an event."""
        with self.box.sessions() as s:
            running = list(s.scalars(select(Instance).where(Instance.status == "running").order_by(Instance.id)))
            return [(i.id, tid, token, token["step"]) for i in running for tid, token in i.state["tokens"].items()
                    if token.get("wait") and token["wait"].get("kind") == "event"]

    def bring_event(self) -> bool:
        for instance_id, tid, token, step in self.event_waits():
            visit = (instance_id, tid, int(token["gen"]))
            if visit in self.handled_events:
                continue
            self.handled_events.add(visit)
            given = self.answers.take(step, visit)
            if not (isinstance(given, dict) and given.get("event")):
                continue  # the event does not come: the wait times out, if it has a timeout
            name = str(token["wait"]["event"])
            payload = given.get("data")
            if not isinstance(payload, dict):
                payload = self.event_defaults(name)
            self.box.message(instance_id, name, payload)
            return True
        return False

    def event_defaults(self, name: str) -> dict[str, Any]:
        with self.box.sessions() as s:
            try:
                form = defs.latest_form(s, name)
            except LookupError:
                return {}
        return default_answers(form, {}, self.clock.now(), self.customer())

    def next_due(self) -> datetime | None:
        with self.box.sessions() as s:
            timer = s.scalar(select(func.min(Timer.due_at)).where(Timer.status == "pending"))
            message = s.scalar(select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.status == "pending"))
        found = [at for at in (timer, message) if at is not None]
        return min(found) if found else None

    def explain_waiting(self) -> None:
        for _instance_id, _tid, token, step in self.event_waits():
            self.problems.append(problem(self.t("waiting", step=step, event=token["wait"]["event"]), node=step))
        with self.box.sessions() as s:
            for step in s.scalars(select(Task.step_id).where(Task.status == "open").distinct()):
                self.problems.append(problem(self.t("unanswered", step=step), node=step))

    # --- the report -------------------------------------------------------------------------------

    def report(self, recorder: Recorder) -> dict[str, Any]:
        with self.box.sessions() as s:
            root = s.get(Instance, self.instance_id) if self.instance_id is not None else None
            path = self.path(s)
            messages = self.messages(s, recorder)
            tasks = self.tasks(s)
        ended_at = root.ended_at if root is not None and root.ended_at is not None else self.clock.now()
        return {
            "flow": self.flow.id,
            "timezone": self.flow.timezone,
            "customer_id": self.customer_id,
            "outcome": root.outcome if root is not None and root.status != "running" else None,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": ended_at.isoformat(),
            "path": path,
            "messages": messages,
            "tasks": tasks,
            "problems": self.problems,
        }

    def path(self, s: Session) -> list[dict[str, Any]]:
        instances = {i.id: i for i in s.scalars(select(Instance))}
        flows = {iid: defs.flow_of_version(s, i.flow_version_id) for iid, i in instances.items()}
        out: list[dict[str, Any]] = []
        last: dict[tuple[int, str], dict[str, Any]] = {}  # (instance, token) -> its current path entry
        for h in s.scalars(select(HistoryEntry).order_by(HistoryEntry.id)):
            flow = flows[h.instance_id]
            for entry in h.entries:
                kind, step, token = entry.get("type"), entry.get("step"), entry.get("token")
                current = last.get((h.instance_id, token)) if token else None
                if kind == "step_entered" and step in flow.steps:
                    item = {"step": step, "kind": flow.step(step).type, "at": h.at.isoformat(), "note": ""}
                    if h.instance_id != self.instance_id:
                        item["flow"] = flow.id
                        item["note"] = self.t("subflow", flow=flow.id)
                    elif not out and self.start_note:
                        item["note"] = self.start_note
                    out.append(item)
                    last[(h.instance_id, token)] = item
                elif current is None:
                    continue
                elif kind == "step_completed" and entry.get("chose"):
                    _note(current, self.t("chose", target=entry["chose"]))
                elif kind == "step_completed" and current["kind"] == "wait" and h.event == "TimerFired":
                    _note(current, self.t("waited", at=h.at.isoformat()))
                elif kind == "event_timeout":
                    _note(current, self.t("event_timeout", event=entry.get("event")))
                elif kind == "event_received":
                    _note(current, self.t("event_received", event=entry.get("event")))
                elif kind == "task_completed" and entry.get("task") in self.answered:
                    _note(current, self.t("task_given" if self.answered[entry["task"]] == "given" else "task_default"))
                elif kind == "task_timeout":
                    _note(current, self.t("task_timeout"))
                elif kind == "task_reminder":
                    _note(current, self.t("reminder"))
                elif kind == "task_escalated":
                    _note(current, self.t("escalated", role=entry.get("to_role")))
                elif kind == "incident":
                    _note(current, self.t("incident", message=entry.get("message")))
        return out

    def messages(self, s: Session, recorder: Recorder) -> list[dict[str, Any]]:
        customer = self.customer_data(s)
        out = []
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.instance_id.is_not(None)).order_by(OutboxMessage.id))
        for row in rows:
            payload = dict(row.payload)
            sent = recorder.sent.get(row.effect_key)
            skipped: str | None = None
            if row.status == "suppressed":
                zh, en = SUPPRESSED.get(str(row.last_error), (str(row.last_error), str(row.last_error)))
                skipped = en if self.language == "en" else zh
            elif row.status not in ("sent", "pending", "claimed", "sending"):
                skipped = str(row.last_error or row.status)
                self.problems.append(problem(self.t("delivery", step=row.step_id, message=skipped), node=row.step_id))
            to = sent.params.get("to") if sent is not None else None
            if to is None and row.channel:
                try:
                    to = recipient(row.channel, payload, customer)
                except ConnectorError:
                    to = None
            self.check_message(s, row, payload)
            out.append({
                "step": row.step_id, "channel": row.channel, "connector": sent.connector if sent is not None else row.connector,
                "via": row.connector, "to": to, "subject": payload.get("subject"),
                "text": payload.get("text") if payload.get("text") is not None else payload.get("markdown"),
                "at": (row.sent_at or row.created_at).isoformat(), "skipped": skipped,
            })
        return out

    def customer_data(self, s: Session) -> dict[str, Any]:
        from engine.store.customers import customer_dict

        customer = s.get(Customer, self.customer_id)
        return customer_dict(customer) if customer is not None else {}

    def check_message(self, s: Session, row: OutboxMessage, payload: Mapping[str, Any]) -> None:
        """The rendered message against the schema of what the step names (deploy checked only its templates)."""
        try:
            type_, _config = split_connector(row.connector)
            if type_ not in self.box.registry.names():
                stored = s.scalars(select(ConnectorConfig).where(ConnectorConfig.name == row.connector)).first()
                if stored is None:
                    return
                type_ = stored.type
            schema = self.box.registry.get(type_).message_schema
        except LookupError:
            return
        validator = jsonschema.Draft202012Validator(dict(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        for error in validator.iter_errors(dict(payload)):
            self.problems.append(problem(self.t("message_invalid", step=row.step_id, connector=row.connector,
                                                message=error.message), node=row.step_id))

    def tasks(self, s: Session) -> list[dict[str, Any]]:
        out = []
        for task in s.scalars(select(Task).order_by(Task.id)):
            title = task.title.get(self.language) or task.title.get("zh") or next(iter(task.title.values()), task.step_id)
            out.append({
                "step": task.step_id, "form": task.form_id, "title": title,
                "assignee": task.assignee or (f"@{task.role}" if task.role else None),
                "due": task.due_at.isoformat() if task.due_at else None,
                "answers": task.data if task.status == "completed" else None,
                "answered_by": self.answered.get(task.id),
                "status": task.status,
            })
        return out


class _Stop(Exception):
    """Ends the loop early (the reason is already in the run's status and problems)."""


def _note(item: dict[str, Any], text: str) -> None:
    item["note"] = f"{item['note']}; {text}" if item["note"] else text


__all__ = ["HORIZON", "MAX_ROUNDS", "DryRunInvalid", "Recorder", "default_answers", "dry_run", "problem", "snapshot",
           "recording_registry"]
