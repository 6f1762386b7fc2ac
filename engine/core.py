"""``Careflow``: the engine as one object, each method one transaction.

The CLI, the REST API and tests use this facade; the functions it calls in ``engine.store``,
``engine.outbox`` and ``engine.schedule`` take a session and leave committing to it.
"""

from __future__ import annotations

import gc
import logging
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from connectors.registry import Registry
from engine import forms
from engine.auth.audit import audit, audit_many
from engine.auth.hooks import rotate_secrets as rotate_webhook_secrets
from engine.auth.operations import SecurityOperations
from engine.calendar import BusinessCalendar
from engine.clock import Clock, SystemClock
from engine.crashpoints import crash_point
from engine.errors import Conflict, CustomerLookupError, EngineError, NotFound
from engine.outbox import DispatchReport, dispatch_due, retry_message, settle_message
from engine.runtime import events as ev
from engine.schedule import TickReport, fire_due_timers, fire_triggers
from engine.segments.jobs import run_daily_recompute
from engine.segments.operations import SegmentOperations, erase_grading
from engine.store import customers as cust
from engine.store import definitions as defs
from engine.secrets import SecretBox
from engine.store import connectors as conn_store
from engine.store import tasks as task_store
from engine.store import batch as batch_store
from engine.store.connectors import Resolver
from engine.store.db import make_engine, make_sessionmaker, migrate
from engine.store.instances import NotEnrolled, Runtime, columns_of, deliver, get_instance, start_instance
from engine.store.models import (
    CalendarOverride,
    ConnectorConfig,
    Customer,
    FlowVersion,
    Incident,
    Instance,
    OutboxMessage,
    Task,
    TimelineEntry,
)

log = logging.getLogger(__name__)

#: What fails one request of a batch: a refusal of the engine, or the database's (a lost optimistic
#: lock, a unique constraint). The batch is then retried one request per transaction.
BATCH_ERRORS = (EngineError, SQLAlchemyError)

_collector_lock = threading.Lock()
_collector_pauser: object | None = None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the span of one batch transaction, then on again.

    A batch's objects (rows, loaded objects, their states) live until it commits, so the
    collector's young-generation passes, one every 700 net allocations, walk and promote them
    again and again for nothing: some 14 us of collection per instance of the benchmark's batches,
    6 us with the pause. Paused, the garbage a batch leaves in reference cycles waits at most until
    it ends: the collector, enabled again, runs at the next allocation (its counts are past their
    thresholds) and frees it, so memory stays bounded by one batch. Only the call that turned it
    off turns it on again, and only if it was on: a caller's own ``gc.disable()`` is kept, and of
    overlapping batches in threads the first to end lets the collector run.
    """
    global _collector_pauser
    token = object()
    with _collector_lock:
        mine = _collector_pauser is None and gc.isenabled()
        if mine:
            gc.disable()
            _collector_pauser = token
    try:
        yield
    finally:
        if mine:
            with _collector_lock:
                _collector_pauser = None
                gc.enable()


#: The status of a customer whose personal data was erased (see ``Careflow.delete_customer``).
DELETED = "deleted"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_FLOWS = PROJECT_ROOT / "workflows"
BUILTIN_FORMS = PROJECT_ROOT / "forms"


class Careflow(SecurityOperations, SegmentOperations):
    #: Whether the cyclic garbage collector is paused during a batch transaction (see
    #: ``collector_paused``); False leaves it to the process's own settings.
    pause_collector_in_batches = True

    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock | None = None,
        calendar: BusinessCalendar | None = None,
        registry: Registry | None = None,
        connector_settings: Mapping[str, Mapping[str, Any]] | None = None,
        secrets: SecretBox | None = None,
        migrate_schema: bool = True,
    ):
        self.url = database_url
        self.db = make_engine(database_url)
        if migrate_schema:
            migrate(self.db)
        self.sessions = make_sessionmaker(self.db)
        self.clock: Clock = clock or SystemClock()
        self._fixed_calendar = calendar
        self.calendar = calendar or self.load_calendar()
        self.registry = registry or Registry()
        self.connector_settings = dict(connector_settings or {})
        self.secrets = secrets or SecretBox.from_env()
        self.resolve = Resolver(self.sessions, self.secrets, self.registry, self.connector_settings)

    def close(self) -> None:
        self.db.dispose()

    def load_calendar(self) -> BusinessCalendar:
        """The business calendar with the admins' overrides from the database.

        Every tick reads the overrides, since another process may have changed them; the calendar
        is built again only when they differ from the current one's, which keeps the working days
        it worked out per year instead of working them out again after each tick.
        """
        if self._fixed_calendar is not None:
            return self._fixed_calendar
        with self.sessions() as s:
            overrides = {day: working for day, working in s.execute(select(CalendarOverride.day, CalendarOverride.working))}
        current = getattr(self, "calendar", None)  # none yet while the engine is built
        if current is None or current.overrides != overrides:
            self.calendar = BusinessCalendar(overrides=overrides)
        return self.calendar

    def set_calendar_day(self, day: date, working: bool | None, note: str | None = None) -> None:
        """Make a day working or off (``None`` removes the override) and reload the calendar."""
        with self.sessions.begin() as s:
            row = s.get(CalendarOverride, day)
            if working is None:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(CalendarOverride(day=day, working=working, note=note))
            else:
                row.working, row.note = working, note
        self.load_calendar()

    @contextmanager
    def transition(self) -> Iterator[Session]:
        """One step transition: everything it changes commits together, or nothing does."""
        with self.sessions.begin() as s:
            yield s
            crash_point("before_step_tx_commit")
        crash_point("after_step_tx_commit")

    def runtime(self) -> Runtime:
        return Runtime(now=self.clock.now(), calendar=self.calendar)

    def session(self) -> Session:
        return self.sessions()

    # ----- definitions ------------------------------------------------------------------

    def deploy(self, paths: Iterable[str | Path], by: str | None = None) -> list[defs.Deployed]:
        with self.sessions.begin() as s:
            results = defs.deploy_paths(s, paths, self.clock.now(), self.registry, by)
            for r in results:
                if r.changed:
                    audit(s, by, f"{r.kind}.deploy", r.kind, r.id, {"version": r.version, "source": r.source}, at=self.clock.now())
            return results

    def deploy_builtins(self) -> list[defs.Deployed]:
        return self.deploy([BUILTIN_FORMS, BUILTIN_FLOWS], by="system")

    def deploy_flow_text(self, text: str | bytes, source: str, by: str | None = None) -> defs.Deployed:
        with self.sessions.begin() as s:
            cat = defs.catalog(s, self.registry)
            result = defs.deploy_flow(s, text, source, self.clock.now(), cat, by)
            if result.changed:
                audit(s, by, "flow.deploy", "flow", result.id, {"version": result.version, "source": source}, at=self.clock.now())
            return result

    def deploy_form_text(self, text: str | bytes, source: str, by: str | None = None) -> defs.Deployed:
        """Check a form as `careflow validate` does and deploy it as a new version (the id comes from
        source, ``<id>.schema.json``); raises FormInvalid with every problem; audited like deploy."""
        with self.sessions.begin() as s:
            result = defs.deploy_form(s, text, source, self.clock.now())
            if result.changed:
                audit(s, by, "form.deploy", "form", result.id, {"version": result.version, "source": source}, at=self.clock.now())
            return result

    # ----- instances ----------------------------------------------------------------------

    def start(
        self, flow_id: str, *, customer_id: int | None = None, data: Mapping[str, Any] | None = None,
        started_by: str | None = None,
    ) -> int:
        with self.transition() as s:
            instance = start_instance(s, self.runtime(), flow_id, customer_id=customer_id, data=data,
                                      trigger={"type": "manual"}, started_by=started_by)
            if started_by is not None:
                audit(s, started_by, "instance.start", "instance", instance.id,
                      {"flow": flow_id, "customer_id": customer_id, "data": dict(data or {})}, at=instance.started_at)
            return instance.id

    def send_event(self, instance_id: int, event: ev.Event) -> None:
        with self.transition() as s:
            deliver(s, self.runtime(), get_instance(s, instance_id), event)

    def message(self, instance_id: int, name: str, data: Mapping[str, Any] | None = None, *, actor: str | None = None) -> None:
        """Deliver a named event (``customer_replied``...) to a waiting instance."""
        payload = dict(data or {})
        self._event(instance_id, ev.Message(name, payload), actor, "instance.event", {"event": name, "data": payload})

    def cancel(self, instance_id: int, reason: str = "cancelled", *, actor: str | None = None) -> None:
        self._event(instance_id, ev.Cancel(reason), actor, "instance.cancel", {"reason": reason})

    def _event(self, instance_id: int, event: ev.Event, actor: str | None, action: str, data: dict[str, Any]) -> None:
        with self.transition() as s:
            rt = self.runtime()
            deliver(s, rt, get_instance(s, instance_id), event)
            if actor is not None:
                audit(s, actor, action, "instance", instance_id, data, at=rt.now)

    def resolve_incident(self, incident_id: int, action: str, by: str | None = None) -> None:
        """Act on an incident.

        For a failed step: ``retry`` runs it again, ``skip`` moves on to the next step. For a
        delivery: ``retry`` sends the message again, ``skip`` gives it up, and ``confirm`` records
        it as delivered after the admin checked with the provider (an ``unknown`` send).
        """
        if action not in ("retry", "skip", "confirm"):
            raise ValueError(f"unknown incident action {action!r}; use retry, skip or confirm")
        with self.transition() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                raise NotFound(incident_id, f"No incident by the id {incident_id!r} was found")
            if incident.status != "open":
                raise Conflict(f"incident {incident_id} is already {incident.status} ({incident.resolution})")
            rt = self.runtime()
            if by is not None:
                audit(s, by, f"incident.{action}", "incident", incident_id, {"instance_id": incident.instance_id}, at=rt.now)
            if incident.outbox_id is not None:
                if action == "retry":
                    retry_message(s, rt, incident.outbox_id, by)
                else:
                    settle_message(s, rt, incident.outbox_id, "sent" if action == "confirm" else "skipped", by)
                return
            if action == "confirm" or incident.instance_id is None or incident.token is None:
                raise Conflict(f"incident {incident_id} has no {'delivery to confirm' if action == 'confirm' else 'step to ' + action}")
            event: ev.Event = ev.Retry(incident.token) if action == "retry" else ev.Skip(incident.token)
            deliver(s, rt, get_instance(s, incident.instance_id), event)
            incident.resolved_by = by

    def describe(self, instance_id: int) -> dict[str, Any]:
        with self.sessions() as s:
            instance = get_instance(s, instance_id)
            version = s.get(FlowVersion, instance.flow_version_id)
            assert version is not None
            tasks = s.scalars(select(Task).where(Task.instance_id == instance_id).order_by(Task.id))
            incidents = s.scalars(select(Incident).where(Incident.instance_id == instance_id).order_by(Incident.id))
            from engine.store.models import HistoryEntry

            history = s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance_id).order_by(HistoryEntry.id))
            return {
                "id": instance.id,
                "flow": instance.flow_id,
                "version": version.version,
                "customer_id": instance.customer_id,
                "status": instance.status,
                "outcome": instance.outcome,
                "started_at": instance.started_at.isoformat(),
                "ended_at": instance.ended_at.isoformat() if instance.ended_at else None,
                "current_steps": sorted({t["step"] for t in instance.state["tokens"].values()}),
                "variables": instance.state["vars"],
                "tasks": [task_summary(t) for t in tasks],
                "incidents": [
                    {"id": i.id, "step": i.step_id, "kind": i.kind, "message": i.message, "status": i.status}
                    for i in incidents
                ],
                "history": [
                    {"at": h.at.isoformat(), "event": h.event, "entries": h.entries} for h in history
                ],
            }

    # ----- tasks --------------------------------------------------------------------------

    def tasks(self, *, user: str | None = None, role: str | None = None, instance_id: int | None = None) -> list[dict[str, Any]]:
        with self.sessions() as s:
            roles: list[str] = []
            if user is not None:
                from engine.store.models import User

                u = s.scalars(select(User).where(User.username == user)).first()
                roles = list(u.roles) if u else []
            return [task_summary(t) for t in task_store.list_tasks(s, user=user, roles=roles, role=role, instance_id=instance_id)]

    def claim(self, task_id: int, user: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            rt = self.runtime()
            task = task_store.claim_task(s, rt, task_id, user)
            audit(s, user, "task.claim", "task", task_id, {"instance_id": task.instance_id}, at=rt.now)
            return task_summary(task)

    def complete(self, task_id: int, data: Mapping[str, Any], user: str, locale: str = "zh") -> dict[str, Any]:
        with self.transition() as s:
            rt = self.runtime()
            task = task_store.complete_task(s, rt, task_id, data, user, locale=locale)
            audit(s, user, "task.complete", "task", task_id,
                  {"instance_id": task.instance_id, "step": task.step_id, "form": task.form_id, "data": task.data}, at=rt.now)
            return task_summary(task)

    def hand_over(self, task_id: int, user: str, to_user: str, comment: str = "") -> dict[str, Any]:
        with self.sessions.begin() as s:
            rt = self.runtime()
            task = task_store.hand_over(s, rt, task_id, user, to_user, comment)
            audit(s, user, "task.hand_over", "task", task_id, {"instance_id": task.instance_id, "to": to_user, "comment": comment}, at=rt.now)
            return task_summary(task)

    def send_back(self, task_id: int, user: str, to_step: str, comment: str) -> dict[str, Any]:
        with self.transition() as s:
            rt = self.runtime()
            task = task_store.send_back(s, rt, task_id, user, to_step, comment)
            audit(s, user, "task.send_back", "task", task_id, {"instance_id": task.instance_id, "to_step": to_step, "comment": comment}, at=rt.now)
            return task_summary(task)

    def comment(self, task_id: int, user: str, body: str) -> None:
        with self.sessions.begin() as s:
            rt = self.runtime()
            task_store.add_comment(s, rt, task_id, user, body)
            audit(s, user, "task.comment", "task", task_id, {"body": body}, at=rt.now)

    # ----- customers and forms --------------------------------------------------------------

    def create_customer(self, data: Mapping[str, Any], *, fire_triggers: bool = True, actor: str | None = None) -> int:
        with self.transition() as s:
            rt = self.runtime()
            customer = cust.create_customer(s, data, rt.now)
            if actor is not None:
                audit(s, actor, "customer.create", "customer", customer.id, cust.customer_dict(customer), at=rt.now)
            if fire_triggers:
                self._customer_event(s, rt, customer, "created", [])
            return customer.id

    def update_customer(self, customer_id: int, data: Mapping[str, Any], *, actor: str | None = None) -> list[str]:
        with self.transition() as s:
            rt = self.runtime()
            customer = cust.get_customer(s, customer_id)
            if customer.status == DELETED:
                raise CustomerLookupError(customer_id)
            changed = cust.update_customer(s, customer, data, rt.now)
            if changed:
                if actor is not None:
                    values = cust.customer_dict(customer)
                    audit(s, actor, "customer.update", "customer", customer_id,
                          {"changed": changed, "values": {k: values.get(k) for k in changed}}, at=rt.now)
                self._customer_event(s, rt, customer, "updated", changed)
            return changed

    def delete_customer(self, customer_id: int, *, actor: str | None = None) -> dict[str, Any]:
        """Erase a customer's personal data and stop everything running for them.

        Running instances are cancelled (their open tasks and timers with them) and pending
        messages to the customer are skipped. The row stays as a tombstone (status ``deleted``,
        no name, phone, e-mail, birthday, tags or attributes) so that instances, tasks and the
        audit log keep pointing at the same customer id; the timeline is removed. A deleted
        customer is not found by the API, by form matching or by triggers.
        """
        with self.sessions.begin() as s:
            rt = self.runtime()
            customer = cust.get_customer(s, customer_id)
            if customer.status == DELETED:
                raise CustomerLookupError(customer_id)
            running = list(s.scalars(
                select(Instance).where(Instance.customer_id == customer_id, Instance.status == "running").order_by(Instance.id)
            ))
            for instance in running:
                deliver(s, rt, instance, ev.Cancel("customer_deleted"))
            skipped = s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.customer_id == customer_id, OutboxMessage.status == "pending")
                .values(status="skipped", last_error="customer deleted")
            ).rowcount
            s.execute(delete(TimelineEntry).where(TimelineEntry.customer_id == customer_id))
            customer.name = "已删除 / deleted"
            for field in ("phone", "email", "birthday", "birthday_key", "region", "grade", "expected_value", "owner",
                          "preferred_channel", "last_purchase_at"):
                setattr(customer, field, None)
            erase_grading(s, customer)
            customer.tags, customer.attributes, customer.consent = [], {}, {}
            customer.status = DELETED
            customer.updated_at = rt.now
            result = {"id": customer_id, "cancelled_instances": [i.id for i in running], "skipped_messages": skipped}
            if actor is not None:
                audit(s, actor, "customer.delete", "customer", customer_id, result, at=rt.now)
            return result

    def _customer_event(self, s: Session, rt: Runtime, customer: Customer, event: str, changed: list[str]) -> list[int]:
        started = []
        for version in defs.latest_flow_versions(s):
            flow = defs.flow_of(version)
            for trig in flow.triggers:
                if trig.type != "customer_event":
                    continue
                if trig.event == "field_changed":
                    if event != "updated" or trig.field not in changed:
                        continue
                elif trig.event != event:
                    continue
                if trig.when:
                    from engine import expr

                    if not expr.compile_expression(trig.when).evaluate({"customer": cust.customer_dict(customer), "now": rt.now}):
                        continue
                try:
                    with s.begin_nested():
                        started.append(start_instance(s, rt, flow.id, customer_id=customer.id,
                                                      trigger={"type": "customer_event", "event": event, "changed": changed}).id)
                except NotEnrolled:
                    pass
                break
        return started

    def submit_form(self, form_id: str, data: Mapping[str, Any], *, user: str | None = None, locale: str = "zh") -> dict[str, Any]:
        """Validate a form submission and start every flow it triggers."""
        with self.transition() as s:
            rt = self.runtime()
            form = defs.latest_form(s, form_id)
            cleaned = forms.check_submission(form, data, locale=locale)
            started: list[int] = []
            customer_id: int | None = None
            for version in defs.latest_flow_versions(s):
                flow = defs.flow_of(version)
                for trig in flow.triggers:
                    if trig.type != "form" or trig.form != form_id:
                        continue
                    customer_id = self._customer_for_form(s, rt, trig.customer_from, cleaned, customer_id)
                    try:
                        with s.begin_nested():
                            started.append(start_instance(
                                s, rt, flow.id, customer_id=customer_id, data={form_id: cleaned},
                                trigger={"type": "form", "form": form_id}, started_by=user,
                            ).id)
                    except NotEnrolled:
                        pass
            if user is not None:
                audit(s, user, "form.submit", "form", form_id,
                      {"data": cleaned, "customer_id": customer_id, "instances": started}, at=rt.now)
            return {"form": form_id, "data": cleaned, "customer_id": customer_id, "instances": started}

    def _customer_for_form(self, s: Session, rt: Runtime, mode: str, data: Mapping[str, Any], known: int | None) -> int | None:
        if known is not None:
            return known
        if data.get("customer_id"):
            return cust.get_customer(s, int(data["customer_id"])).id
        phone = data.get("phone") or data.get("contact_phone")
        email = data.get("email") or data.get("contact_email")
        found = cust.find_customer(s, phone, email)
        if found is not None:
            return found.id
        if mode == "create":
            fields = {k: v for k, v in data.items() if k in cust.PROFILE_FIELDS or k == "consent_marketing"}
            if "consent_marketing" in fields:
                consent = bool(fields.pop("consent_marketing"))
                fields["consent"] = {"email": consent, "sms": consent}
            return cust.create_customer(s, fields, rt.now).id
        return None

    # ----- connectors ------------------------------------------------------------------------

    def save_connector(self, name: str, type_: str, settings: Mapping[str, Any], *, by: str | None = None,
                       enabled: bool = True) -> dict[str, Any]:
        """Attach or change a connector; secrets are stored encrypted and shown masked."""
        with self.sessions.begin() as s:
            row = conn_store.save_config(s, self.secrets, self.registry, name, type_, settings,
                                         now=self.clock.now(), by=by, enabled=enabled)
            shown = conn_store.masked(row, self.secrets)
            audit(s, by, "connector.save", "connector", name, {"type": row.type, "enabled": row.enabled,
                  "settings": dict(row.settings), "secret_fields": sorted(row.secrets)}, at=self.clock.now())
            return shown

    def reminder_settings(self) -> dict[str, Any]:
        """How task reminders reach employees: base URL of the links, e-mail connector, IM robots."""
        from engine import reminders

        with self.sessions() as s:
            return reminders.load(s).as_dict()

    def set_reminder_settings(self, values: Mapping[str, Any], *, by: str | None = None) -> dict[str, Any]:
        from engine import reminders

        with self.sessions.begin() as s:
            now = self.clock.now()
            result = reminders.save(s, values, now, by).as_dict()
            audit(s, by, "reminders.settings", "setting", reminders.KEY, dict(values), at=now)
            return result

    def connectors(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.scalars(select(ConnectorConfig).order_by(ConnectorConfig.name))
            return [conn_store.masked(r, self.secrets) for r in rows]

    def set_connector_enabled(self, name: str, enabled: bool, *, by: str | None = None) -> None:
        with self.sessions.begin() as s:
            conn_store.get_config(s, name).enabled = enabled
            audit(s, by, "connector.enable" if enabled else "connector.disable", "connector", name, {}, at=self.clock.now())

    def rotate_secrets(self, *, by: str | None = None) -> int:
        with self.sessions.begin() as s:
            count = conn_store.rotate_secrets(s, self.secrets)
            count += rotate_webhook_secrets(s, self.secrets)
            audit(s, by, "secrets.rotate", None, None, {"values": count}, at=self.clock.now())
            return count

    def test_send(self, name: str, to: str, text: str, subject: str | None = None) -> dict[str, Any]:
        """Send one message now through a connector or channel; it is logged like any other."""
        effect_key = f"test:{name}:{uuid.uuid4().hex}"
        with self.sessions.begin() as s:
            now = self.clock.now()
            payload = {"to": to, "text": text, **({"subject": subject} if subject else {})}
            s.add(OutboxMessage(effect_key=effect_key, connector=name, payload=payload, status="pending",
                                attempts=0, max_attempts=1, backoff_seconds=0, next_attempt_at=now, created_at=now))
        self.dispatch()
        with self.sessions() as s:
            row = s.scalars(select(OutboxMessage).where(OutboxMessage.effect_key == effect_key)).one()
            return {"status": row.status, "error": row.last_error, "provider_ref": row.provider_ref}

    def preview(self, flow_id: str, step_id: str, *, customer_id: int | None = None,
                variables: Mapping[str, Any] | None = None, language: str | None = None) -> dict[str, Any]:
        """What an action step would send, rendered for a customer (or sample data); nothing is sent."""
        from engine import expr
        from engine.runtime.interpreter import localize

        with self.sessions() as s:
            flow = defs.flow_of(defs.latest_flow_version(s, flow_id))
            customer = cust.customer_dict(cust.get_customer(s, customer_id)) if customer_id is not None else SAMPLE_CUSTOMER
        try:
            step = flow.step(step_id)
        except KeyError:
            raise NotFound(step_id, f"flow {flow_id!r} has no step {step_id!r}") from None
        if step.type != "action":
            raise NotFound(step_id, f"step {step_id!r} of flow {flow_id!r} is a {step.type}, not an action")
        lang = language or customer.get("language") or "zh"
        context = {"customer": customer, "vars": dict(variables or {}), "now": self.clock.now(),
                   "instance": {"id": 0, "flow": flow_id, "started_at": self.clock.now().isoformat()}}
        params = expr.render_value(localize(dict(step.params), lang), context)
        return {"flow": flow_id, "step": step_id, "connector": step.connector, "language": lang, "params": params}

    def delivery_log(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
            if status:
                query = query.where(OutboxMessage.status == status)
            return [
                {"id": m.id, "connector": m.connector, "channel": m.channel, "status": m.status, "attempts": m.attempts,
                 "customer_id": m.customer_id, "instance_id": m.instance_id, "step": m.step_id, "error": m.last_error,
                 "created_at": m.created_at.isoformat(), "sent_at": m.sent_at.isoformat() if m.sent_at else None}
                for m in s.scalars(query)
            ]

    # ----- time -----------------------------------------------------------------------------

    def tick(self) -> dict[str, Any]:
        """Everything due at the clock's now: timers, triggers, then the outbox."""
        report = TickReport()
        self.load_calendar()  # another process may have changed the overrides
        fire_due_timers(self.sessions, self.runtime, report)
        fire_triggers(self.sessions, self.runtime, report)
        run_daily_recompute(self.sessions, self.runtime, report)
        # Triggers may have started instances whose first steps are already due.
        fire_due_timers(self.sessions, self.runtime, report)
        sent = self.dispatch()
        return {**report.as_dict(), "outbox": sent.__dict__}

    def dispatch(self) -> DispatchReport:
        total = DispatchReport()
        while True:
            report = dispatch_due(self.sessions, self.runtime, self.resolve)
            for key in ("sent", "retried", "failed", "suppressed", "unknown"):
                setattr(total, key, getattr(total, key) + getattr(report, key))
            if report.sent + report.failed + report.suppressed + report.retried == 0:
                return total

    # ----- customer import (engine/imports.py) ----------------------------------------------------

    def after_import(self, customer_ids: Sequence[int], *, created: Collection[int] = (),
                     changed: Mapping[int, Sequence[str]] | None = None, start_flows: bool = False) -> list[int]:
        """Called once an import has committed, with every customer it created or changed.

        With ``start_flows`` the customer events fire as for customers created or changed through
        the API (``created`` for new ones, ``updated`` with the changed fields for the others), so
        onboarding starts for imported customers; without it (the default for imports) no
        customer event fires. Grades, RFM, churn risk and segment memberships are recomputed for
        these customers either way: the flows that select by grade or segment (follow-up, win-back,
        segment triggers) must see imported purchase figures at once, not after the next nightly
        recompute, which would start the same segment flows anyway. Returns the ids of the
        instances started by customer events.
        """
        if customer_ids:
            self.recompute_segments(customer_ids)
        if not start_flows:
            return []
        new, changed = set(created), dict(changed or {})
        started: list[int] = []
        for customer_id in customer_ids:
            with self.transition() as s:
                rt = self.runtime()
                customer = cust.get_customer(s, customer_id)
                if customer.status == DELETED:
                    continue
                if customer_id in new:
                    started += self._customer_event(s, rt, customer, "created", [])
                elif changed.get(customer_id):
                    started += self._customer_event(s, rt, customer, "updated", list(changed[customer_id]))
        return started

    # ----- batches (engine/store/batch.py) ---------------------------------------------------

    def _batch_collector(self) -> AbstractContextManager[None]:
        return collector_paused() if self.pause_collector_in_batches else nullcontext()

    def start_batch(
        self, flow_id: str, customer_ids: Iterable[int], *, data: Mapping[str, Any] | None = None,
        started_by: str | None = None,
    ) -> list[int | Exception]:
        """``start`` for each customer, all in one transaction when every start succeeds.

        If any fails, that transaction is rolled back and each start runs in its own, as ``start``
        would: one failing start costs the others nothing. Returns, per customer in order, the
        new instance's id or the error its start raised.
        """
        ids = list(customer_ids)
        try:
            with self._batch_collector(), self.transition() as s:
                rt = self.runtime()
                instances = batch_store.start_instances(s, rt, flow_id, ids, data=data, trigger={"type": "manual"},
                                                        started_by=started_by)
                if started_by is not None:
                    audit_many(s, [(started_by, "instance.start", "instance", instance.id,
                                    {"flow": flow_id, "customer_id": instance.customer_id, "data": dict(data or {})})
                                   for instance in instances], at=rt.now)
                return [instance.id for instance in instances]
        except BATCH_ERRORS as exc:
            log.info("batch of %d starts failed (%s); starting them one by one", len(ids), exc)
        results: list[int | Exception] = []
        for customer_id in ids:
            try:
                results.append(self.start(flow_id, customer_id=customer_id, data=data, started_by=started_by))
            except BATCH_ERRORS as exc:
                results.append(exc)
        return results

    def complete_batch(
        self, answers: Iterable[tuple[int, Mapping[str, Any], str]], locale: str = "zh",
    ) -> list[dict[str, Any] | Exception]:
        """``complete`` for each (task id, answer, user), all in one transaction when every one
        succeeds; otherwise each in its own (see ``start_batch``). Returns, per answer in order,
        the task's summary or the error its completion raised."""
        items = list(answers)
        try:
            with self._batch_collector(), self.transition() as s:
                rt = self.runtime()

                def audited(answered: list[Task]) -> None:
                    audit_many(s, [(user, "task.complete", "task", task.id, {"instance_id": task.instance_id,
                                    "step": task.step_id, "form": task.form_id, "data": task.data})
                                   for task, (_task_id, _data, user) in zip(answered, items, strict=True)], at=rt.now)

                tasks = batch_store.complete_tasks(s, rt, items, locale=locale, answered=audited)
                return [task_summary(task) for task in tasks]
        except BATCH_ERRORS as exc:
            log.info("batch of %d task answers failed (%s); completing them one by one", len(items), exc)
        results: list[dict[str, Any] | Exception] = []
        for task_id, data, user in items:
            try:
                results.append(self.complete(task_id, data, user, locale=locale))
            except BATCH_ERRORS as exc:
                results.append(exc)
        return results


#: The customer a preview uses when none is named.
SAMPLE_CUSTOMER: dict[str, Any] = {
    "id": 0, "name": "张伟", "phone": "+8613800138000", "email": "zhangwei@example.com", "region": "上海",
    "grade": "A", "owner": "wang", "tags": [], "preferred_channel": "email", "language": "zh", "consent": {},
    "status": "active", "birthday": "1985-11-24", "birthday_calendar": "solar",
}


_SUMMARY_COLUMNS = frozenset({"id", "instance_id", "step_id", "form_id", "title", "role", "assignee", "status", "due_at",
                              "escalation_level", "reminders_sent", "completed_by", "initial", "data"})


def task_summary(t: Task) -> dict[str, Any]:
    # The loaded values straight from the object's __dict__ (a batch summarises a hundred tasks);
    # through the attributes, which load what is expired, when any is missing there.
    c = columns_of(t, _SUMMARY_COLUMNS)
    return {
        "id": c["id"],
        "instance_id": c["instance_id"],
        "step": c["step_id"],
        "form": c["form_id"],
        "title": c["title"],
        "role": c["role"],
        "assignee": c["assignee"],
        "status": c["status"],
        "due_at": c["due_at"].isoformat() if c["due_at"] else None,
        "escalation_level": c["escalation_level"],
        "reminders_sent": c["reminders_sent"],
        "completed_by": c["completed_by"],
        "initial": c["initial"],
        "data": c["data"],
    }


__all__ = ["Careflow", "task_summary"]
