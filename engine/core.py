"""``Careflow``: the engine as one object, each method one transaction.

The CLI, the REST API and tests use this facade; the functions it calls in ``engine.store``,
``engine.outbox`` and ``engine.schedule`` take a session and leave committing to it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.registry import Registry
from engine import forms
from engine.calendar import BusinessCalendar
from engine.clock import Clock, SystemClock
from engine.errors import NotFound
from engine.outbox import DispatchReport, dispatch_due, retry_message
from engine.runtime import events as ev
from engine.schedule import TickReport, fire_due_timers, fire_triggers
from engine.store import customers as cust
from engine.store import definitions as defs
from engine.store import tasks as task_store
from engine.secrets import SecretBox
from engine.store import connectors as conn_store
from engine.store.connectors import Resolver
from engine.store.db import make_engine, make_sessionmaker, migrate
from engine.store.instances import NotEnrolled, Runtime, deliver, get_instance, start_instance
from engine.store.models import (
    CalendarOverride,
    ConnectorConfig,
    Customer,
    FlowVersion,
    Incident,
    Instance,
    OutboxMessage,
    Task,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_FLOWS = PROJECT_ROOT / "workflows"
BUILTIN_FORMS = PROJECT_ROOT / "forms"


class Careflow:
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
        """The business calendar with the admins' overrides from the database."""
        if self._fixed_calendar is not None:
            return self._fixed_calendar
        with self.sessions() as s:
            overrides = {o.day: o.working for o in s.scalars(select(CalendarOverride))}
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

    def runtime(self) -> Runtime:
        return Runtime(now=self.clock.now(), calendar=self.calendar)

    def session(self) -> Session:
        return self.sessions()

    # ----- definitions ------------------------------------------------------------------

    def deploy(self, paths: Iterable[str | Path], by: str | None = None) -> list[defs.Deployed]:
        with self.sessions.begin() as s:
            return defs.deploy_paths(s, paths, self.clock.now(), self.registry.names(), by)

    def deploy_builtins(self) -> list[defs.Deployed]:
        return self.deploy([BUILTIN_FORMS, BUILTIN_FLOWS], by="system")

    def deploy_flow_text(self, text: str | bytes, source: str, by: str | None = None) -> defs.Deployed:
        with self.sessions.begin() as s:
            cat = defs.catalog(s, self.registry.names())
            return defs.deploy_flow(s, text, source, self.clock.now(), cat, by)

    # ----- instances ----------------------------------------------------------------------

    def start(
        self, flow_id: str, *, customer_id: int | None = None, data: Mapping[str, Any] | None = None,
        started_by: str | None = None,
    ) -> int:
        with self.sessions.begin() as s:
            instance = start_instance(s, self.runtime(), flow_id, customer_id=customer_id, data=data,
                                      trigger={"type": "manual"}, started_by=started_by)
            return instance.id

    def send_event(self, instance_id: int, event: ev.Event) -> None:
        with self.sessions.begin() as s:
            deliver(s, self.runtime(), get_instance(s, instance_id), event)

    def message(self, instance_id: int, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Deliver a named event (``customer_replied``...) to a waiting instance."""
        self.send_event(instance_id, ev.Message(name, dict(data or {})))

    def cancel(self, instance_id: int, reason: str = "cancelled") -> None:
        self.send_event(instance_id, ev.Cancel(reason))

    def resolve_incident(self, incident_id: int, action: str, by: str | None = None) -> None:
        """``retry`` or ``skip`` the step behind an incident (a failed delivery is re-sent on retry)."""
        with self.sessions.begin() as s:
            incident = s.get(Incident, incident_id)
            if incident is None:
                raise NotFound(incident_id, f"No incident by the id {incident_id!r} was found")
            rt = self.runtime()
            if incident.outbox_id is not None and action == "retry":
                retry_message(s, rt, incident.outbox_id, by)
                return
            if incident.instance_id is None or incident.token is None:
                raise NotFound(incident_id, f"incident {incident_id} has no step to {action}")
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
            return task_summary(task_store.claim_task(s, self.runtime(), task_id, user))

    def complete(self, task_id: int, data: Mapping[str, Any], user: str, locale: str = "zh") -> dict[str, Any]:
        with self.sessions.begin() as s:
            return task_summary(task_store.complete_task(s, self.runtime(), task_id, data, user, locale=locale))

    def hand_over(self, task_id: int, user: str, to_user: str, comment: str = "") -> dict[str, Any]:
        with self.sessions.begin() as s:
            return task_summary(task_store.hand_over(s, self.runtime(), task_id, user, to_user, comment))

    def send_back(self, task_id: int, user: str, to_step: str, comment: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            return task_summary(task_store.send_back(s, self.runtime(), task_id, user, to_step, comment))

    def comment(self, task_id: int, user: str, body: str) -> None:
        with self.sessions.begin() as s:
            task_store.add_comment(s, self.runtime(), task_id, user, body)

    # ----- customers and forms --------------------------------------------------------------

    def create_customer(self, data: Mapping[str, Any], *, fire_triggers: bool = True) -> int:
        with self.sessions.begin() as s:
            rt = self.runtime()
            customer = cust.create_customer(s, data, rt.now)
            if fire_triggers:
                self._customer_event(s, rt, customer, "created", [])
            return customer.id

    def update_customer(self, customer_id: int, data: Mapping[str, Any]) -> list[str]:
        with self.sessions.begin() as s:
            rt = self.runtime()
            customer = cust.get_customer(s, customer_id)
            changed = cust.update_customer(s, customer, data, rt.now)
            if changed:
                self._customer_event(s, rt, customer, "updated", changed)
            return changed

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
        with self.sessions.begin() as s:
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
            return conn_store.masked(row, self.secrets)

    def connectors(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            rows = s.scalars(select(ConnectorConfig).order_by(ConnectorConfig.name))
            return [conn_store.masked(r, self.secrets) for r in rows]

    def set_connector_enabled(self, name: str, enabled: bool) -> None:
        with self.sessions.begin() as s:
            conn_store.get_config(s, name).enabled = enabled

    def rotate_secrets(self) -> int:
        with self.sessions.begin() as s:
            return conn_store.rotate_secrets(s, self.secrets)

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


#: The customer a preview uses when none is named.
SAMPLE_CUSTOMER: dict[str, Any] = {
    "id": 0, "name": "张伟", "phone": "+8613800138000", "email": "zhangwei@example.com", "region": "上海",
    "grade": "A", "owner": "wang", "tags": [], "preferred_channel": "email", "language": "zh", "consent": {},
    "status": "active", "birthday": "1985-11-24", "birthday_calendar": "solar",
}


def task_summary(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "instance_id": t.instance_id,
        "step": t.step_id,
        "form": t.form_id,
        "title": t.title,
        "role": t.role,
        "assignee": t.assignee,
        "status": t.status,
        "due_at": t.due_at.isoformat() if t.due_at else None,
        "escalation_level": t.escalation_level,
        "reminders_sent": t.reminders_sent,
        "completed_by": t.completed_by,
        "initial": t.initial,
        "data": t.data,
    }


def customer_summary(c: Customer) -> dict[str, Any]:
    return cust.customer_dict(c)


__all__ = ["Careflow", "Instance", "task_summary", "customer_summary"]
