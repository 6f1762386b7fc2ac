"""The ``careflow`` command.

Exit codes: 0 ok, 1 invalid input or a failed check, 2 usage error. Every command accepts
``--json`` for one JSON document on stdout, and ``--now`` to set the clock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from engine.clock import FixedClock, OffsetClock, parse_instant
from engine.errors import DefinitionInvalid, EngineError, SubmissionInvalid

EXIT_INVALID = 1


class State:
    def __init__(self, now: str | None, as_json: bool, database: str | None):
        self.now = now or os.environ.get("CAREFLOW_NOW")
        self.as_json = as_json
        self.database = database
        self._engine: Any = None

    def clock(self, running: bool = False) -> Any:
        if not self.now:
            return None
        instant = parse_instant(self.now)
        return OffsetClock(instant) if running else FixedClock(instant)

    def engine(self, running: bool = False) -> Any:
        if self._engine is None:
            from engine.core import Careflow
            from engine.store.db import database_url

            url = self.database or database_url()
            self._engine = Careflow(url, clock=self.clock(running))
        return self._engine

    def emit(self, data: Any, text: Callable[[Any], str] | str | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        elif callable(text):
            click.echo(text(data))
        elif text is not None:
            click.echo(text)
        else:
            click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def problem_lang(chosen: str | None = None) -> str:
    """The language of problems: the command's ``--lang``, else zh when $LANG starts with zh, else en."""
    if chosen is None:
        context = click.get_current_context(silent=True)
        chosen = context.params.get("lang") if context is not None else None
    return chosen or ("zh" if os.environ.get("LANG", "").lower().startswith("zh") else "en")


def fail(state: State, error: Exception) -> NoReturn:
    """Report an engine error the user can act on, never a traceback."""
    if isinstance(error, DefinitionInvalid):
        problems, lang = error.problems, problem_lang()
        if state.as_json:
            click.echo(json.dumps({"ok": False, "problems": [p.as_dict(lang) for p in problems]},
                                  ensure_ascii=False, indent=2))
        else:
            for p in problems:
                click.echo(p.in_lang(lang), err=True)
    elif isinstance(error, SubmissionInvalid):
        body = {"ok": False, "error": {"code": error.code, "message": "the form has errors",
                                       "details": [e.as_dict() for e in error.errors]}}
        if state.as_json:
            click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        else:
            for e in error.errors:
                click.echo(f"{e.field or '(form)'}: {e.message}", err=True)
    else:
        code = getattr(error, "code", "error")
        if state.as_json:
            click.echo(json.dumps({"ok": False, "error": {"code": code, "message": str(error)}}, ensure_ascii=False))
        else:
            click.echo(f"error: {error}", err=True)
    sys.exit(EXIT_INVALID)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn engine errors into a message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().find_object(State)
        try:
            return fn(*args, **kwargs)
        except (EngineError, LookupError, ValueError) as exc:
            fail(state, exc)

    return wrapper


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


@click.group()
@click.option("--now", metavar="ISO-8601", help="Set the clock, e.g. 2026-11-24T09:00+08:00.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--database", envvar="CAREFLOW_DATABASE_URL", help="Database URL (default: SQLite careflow.db).")
@click.pass_context
def main(ctx: click.Context, now: str | None, as_json: bool, database: str | None) -> None:
    """Careflow: customer-care flows, forms and tasks."""
    if now:
        try:
            parse_instant(now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--now") from exc
    ctx.obj = State(now, as_json, database)
    ctx.call_on_close(lambda: ctx.obj._engine.close() if ctx.obj._engine else None)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--lang", default=None, type=click.Choice(["zh", "en"]),
              help="Language of the problems (default: zh when $LANG starts with zh, else en).")
@click.pass_obj
def validate(state: State, paths: tuple[str, ...], lang: str | None) -> None:
    """Check flows (*.yaml) and forms (*.schema.json); print path:line:col: message per problem."""
    from engine.validation import validate_paths

    lang = problem_lang(lang)
    problems, checked = validate_paths(paths)
    if state.as_json:
        click.echo(json.dumps({"ok": not problems, "checked": checked,
                               "problems": [p.as_dict(lang) for p in problems]}, ensure_ascii=False, indent=2))
    else:
        for p in problems:
            click.echo(p.in_lang(lang))
        if not problems:
            click.echo(f"ok: 已检查 {len(checked)} 个文件" if lang == "zh" else f"ok: {len(checked)} file(s) checked")
    if problems:
        sys.exit(EXIT_INVALID)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--by", default=None, help="Who deploys (recorded on the version).")
@click.option("--lang", default=None, type=click.Choice(["zh", "en"]),
              help="Language of the problems (default: zh when $LANG starts with zh, else en).")
@click.pass_obj
@guarded
def deploy(state: State, paths: tuple[str, ...], by: str | None, lang: str | None) -> None:
    """Validate and deploy flows and forms as new versions (nothing is deployed if any is invalid)."""
    results = state.engine().deploy(paths, by=by)
    data = [dataclasses.asdict(r) for r in results]
    state.emit(data, lambda d: "\n".join(
        f"{r['kind']} {r['id']} v{r['version']} {'deployed' if r['changed'] else 'unchanged'}" for r in d))


@main.command()
@click.argument("flow")
@click.option("--customer", "customer_id", type=int, help="Customer id.")
@click.option("--data", "data", help="Initial variables as JSON.")
@click.option("--user", default=None)
@click.pass_obj
@guarded
def start(state: State, flow: str, customer_id: int | None, data: str | None, user: str | None) -> None:
    """Start an instance of FLOW; prints its id."""
    iid = state.engine().start(flow, customer_id=customer_id, data=parse_json(data, "--data"), started_by=user)
    state.emit({"instance_id": iid}, str(iid))


@main.command()
@click.argument("instance_id", type=int)
@click.pass_obj
@guarded
def show(state: State, instance_id: int) -> None:
    """Status, current steps, variables, tasks and history of an instance."""
    info = state.engine().describe(instance_id)

    def text(d: dict[str, Any]) -> str:
        lines = [
            f"instance {d['id']}  flow {d['flow']} v{d['version']}  customer {d['customer_id']}",
            f"status   {d['status']}" + (f" ({d['outcome']})" if d["outcome"] else ""),
            f"at       {', '.join(d['current_steps']) or '-'}",
            f"vars     {json.dumps(d['variables'], ensure_ascii=False, default=str)}",
        ]
        for t in d["tasks"]:
            lines.append(f"task {t['id']:>5} {t['status']:<9} {t['step']:<20} role={t['role']} assignee={t['assignee']} due={t['due_at']}")
        for i in d["incidents"]:
            lines.append(f"incident {i['id']} [{i['status']}] {i['step']}: {i['message']}")
        for h in d["history"]:
            steps = [e.get("step") for e in h["entries"] if e["type"] == "step_completed"]
            lines.append(f"  {h['at']}  {h['event']:<12} {' → '.join(s for s in steps if s)}")
        return "\n".join(lines)

    state.emit(info, text)


@main.command()
@click.option("--role", default=None)
@click.option("--user", default=None)
@click.option("--instance", "instance_id", type=int, default=None)
@click.pass_obj
@guarded
def tasks(state: State, role: str | None, user: str | None, instance_id: int | None) -> None:
    """Open tasks of a user (theirs and their roles' unclaimed ones), of a role, or all."""
    rows = state.engine().tasks(user=user, role=role, instance_id=instance_id)
    state.emit(rows, lambda d: "\n".join(
        f"{t['id']:>5}  {t['step']:<22} instance={t['instance_id']} role={t['role']} assignee={t['assignee']} due={t['due_at']}"
        for t in d) or "no open tasks")


@main.command()
@click.argument("task_id", type=int)
@click.option("--data", "data", required=True, help="Form answers as JSON.")
@click.option("--user", required=True, help="Who completes the task.")
@click.option("--lang", default="zh", type=click.Choice(["zh", "en"]))
@click.pass_obj
@guarded
def complete(state: State, task_id: int, data: str, user: str, lang: str) -> None:
    """Complete a task with form data; field errors are listed and nothing changes."""
    task = state.engine().complete(task_id, parse_json(data, "--data"), user, locale=lang)
    state.emit(task, f"task {task_id} completed")


@main.command()
@click.argument("task_id", type=int)
@click.option("--user", required=True)
@click.pass_obj
@guarded
def claim(state: State, task_id: int, user: str) -> None:
    """Claim an unassigned task of one of your roles."""
    state.emit(state.engine().claim(task_id, user), f"task {task_id} claimed by {user}")


@main.command("hand-over")
@click.argument("task_id", type=int)
@click.option("--user", required=True)
@click.option("--to", "to_user", required=True)
@click.option("--comment", default="")
@click.pass_obj
@guarded
def hand_over(state: State, task_id: int, user: str, to_user: str, comment: str) -> None:
    """Hand a task over to another user."""
    state.emit(state.engine().hand_over(task_id, user, to_user, comment), f"task {task_id} handed over to {to_user}")


@main.command("send-back")
@click.argument("task_id", type=int)
@click.option("--user", required=True)
@click.option("--to", "to_step", required=True, help="An earlier step the flow allows.")
@click.option("--comment", required=True)
@click.pass_obj
@guarded
def send_back(state: State, task_id: int, user: str, to_step: str, comment: str) -> None:
    """Send a task back to an earlier step with a comment."""
    state.emit(state.engine().send_back(task_id, user, to_step, comment), f"task {task_id} sent back to {to_step}")


@main.command()
@click.argument("instance_id", type=int)
@click.argument("name")
@click.option("--data", "data", help="Event data as JSON.")
@click.pass_obj
@guarded
def message(state: State, instance_id: int, name: str, data: str | None) -> None:
    """Deliver a named event (e.g. customer_replied) to an instance."""
    state.engine().message(instance_id, name, parse_json(data, "--data"))
    state.emit({"ok": True}, f"event {name} delivered to instance {instance_id}")


@main.command()
@click.argument("instance_id", type=int)
@click.option("--reason", default="cancelled")
@click.pass_obj
@guarded
def cancel(state: State, instance_id: int, reason: str) -> None:
    """Cancel an instance: its open tasks and timers are cancelled too."""
    state.engine().cancel(instance_id, reason)
    state.emit({"ok": True}, f"instance {instance_id} cancelled")


@main.command()
@click.argument("form_id")
@click.option("--data", "data", required=True, help="Form answers as JSON.")
@click.option("--user", default=None)
@click.option("--lang", default="zh", type=click.Choice(["zh", "en"]))
@click.pass_obj
@guarded
def submit(state: State, form_id: str, data: str, user: str | None, lang: str) -> None:
    """Submit a form; starts every flow the form triggers."""
    result = state.engine().submit_form(form_id, parse_json(data, "--data"), user=user, locale=lang)
    state.emit(result, lambda d: f"instances started: {', '.join(map(str, d['instances'])) or 'none'}")


@main.group()
def incidents() -> None:
    """Failed steps and deliveries."""


@incidents.command("list")
@click.pass_obj
@guarded
def incidents_list(state: State) -> None:
    from sqlalchemy import select

    from engine.store.models import Incident

    with state.engine().session() as s:
        rows = [
            {"id": i.id, "instance_id": i.instance_id, "step": i.step_id, "kind": i.kind, "message": i.message, "status": i.status}
            for i in s.scalars(select(Incident).where(Incident.status == "open").order_by(Incident.id))
        ]
    state.emit(rows, lambda d: "\n".join(f"{i['id']:>5} instance={i['instance_id']} {i['step']} {i['kind']}: {i['message']}" for i in d) or "no open incidents")


@incidents.command("retry")
@click.argument("incident_id", type=int)
@click.option("--user", default=None)
@click.pass_obj
@guarded
def incidents_retry(state: State, incident_id: int, user: str | None) -> None:
    state.engine().resolve_incident(incident_id, "retry", user)
    state.emit({"ok": True}, f"incident {incident_id}: retrying")


@incidents.command("confirm")
@click.argument("incident_id", type=int)
@click.option("--user", default=None)
@click.pass_obj
@guarded
def incidents_confirm(state: State, incident_id: int, user: str | None) -> None:
    """Record an unknown send as delivered, after checking with the provider."""
    state.engine().resolve_incident(incident_id, "confirm", user)
    state.emit({"ok": True}, f"incident {incident_id}: delivery confirmed")


@incidents.command("skip")
@click.argument("incident_id", type=int)
@click.option("--user", default=None)
@click.pass_obj
@guarded
def incidents_skip(state: State, incident_id: int, user: str | None) -> None:
    state.engine().resolve_incident(incident_id, "skip", user)
    state.emit({"ok": True}, f"incident {incident_id}: skipped")


@main.group()
def customers() -> None:
    """The customer store."""


@customers.command("create")
@click.option("--data", "data", required=True, help="Profile as JSON.")
@click.pass_obj
@guarded
def customers_create(state: State, data: str) -> None:
    cid = state.engine().create_customer(parse_json(data, "--data"))
    state.emit({"customer_id": cid}, str(cid))


@customers.command("update")
@click.argument("customer_id", type=int)
@click.option("--data", "data", required=True, help="Changed fields as JSON.")
@click.pass_obj
@guarded
def customers_update(state: State, customer_id: int, data: str) -> None:
    changed = state.engine().update_customer(customer_id, parse_json(data, "--data"))
    state.emit({"changed": changed}, f"changed: {', '.join(changed) or 'nothing'}")


@customers.command("show")
@click.argument("customer_id", type=int)
@click.pass_obj
@guarded
def customers_show(state: State, customer_id: int) -> None:
    from sqlalchemy import select

    from engine.store.customers import customer_dict, get_customer
    from engine.store.models import TimelineEntry

    with state.engine().session() as s:
        c = customer_dict(get_customer(s, customer_id))
        c["timeline"] = [
            {"at": t.at.isoformat(), "kind": t.kind, "title": t.title, "instance_id": t.instance_id}
            for t in s.scalars(select(TimelineEntry).where(TimelineEntry.customer_id == customer_id).order_by(TimelineEntry.id))
        ]
    state.emit(c)


@main.group()
def connectors() -> None:
    """Attach e-mail, SMS and IM connectors; secrets are stored encrypted."""


@connectors.command("list")
@click.pass_obj
@guarded
def connectors_list(state: State) -> None:
    """Attached connectors, secrets masked."""
    rows = state.engine().connectors()
    state.emit(rows, lambda d: "\n".join(
        f"{c['name']:<16} {c['type']:<12} {'enabled' if c['enabled'] else 'disabled':<9} "
        f"{json.dumps(c['settings'], ensure_ascii=False)}" for c in d) or "no connectors attached")


@connectors.command("set")
@click.argument("name")
@click.option("--type", "type_", required=True, help="Connector type, e.g. smtp, sendgrid, twilio_sms, email, sms.")
@click.option("--settings", "settings", required=True, help="Settings as JSON; omit a secret to keep the stored one.")
@click.option("--user", default=None)
@click.pass_obj
@guarded
def connectors_set(state: State, name: str, type_: str, settings: str, user: str | None) -> None:
    """Attach or change a connector (a channel: --type email --settings '{"provider": "smtp-main"}')."""
    row = state.engine().save_connector(name, type_, parse_json(settings, "--settings"), by=user)
    state.emit(row, f"connector {name} ({type_}) saved")


@connectors.command("disable")
@click.argument("name")
@click.pass_obj
@guarded
def connectors_disable(state: State, name: str) -> None:
    """Stop using a connector; its messages fail with an incident until it is enabled."""
    state.engine().set_connector_enabled(name, False)
    state.emit({"ok": True}, f"connector {name} disabled")


@connectors.command("enable")
@click.argument("name")
@click.pass_obj
@guarded
def connectors_enable(state: State, name: str) -> None:
    """Use a disabled connector again."""
    state.engine().set_connector_enabled(name, True)
    state.emit({"ok": True}, f"connector {name} enabled")


@connectors.command("test")
@click.argument("name")
@click.option("--to", "to", required=True, help="E-mail address or phone number.")
@click.option("--text", default="Careflow 测试消息 / test message")
@click.option("--subject", default="Careflow test")
@click.pass_obj
@guarded
def connectors_test(state: State, name: str, to: str, text: str, subject: str) -> None:
    """Send one message now and say what the provider answered."""
    result = state.engine().test_send(name, to, text, subject)
    state.emit(result, lambda r: f"{r['status']}" + (f": {r['error']}" if r["error"] else ""))
    if result["status"] != "sent":
        sys.exit(EXIT_INVALID)


@connectors.command("log")
@click.option("--status", default=None, type=click.Choice(["pending", "sending", "sent", "failed", "unknown", "suppressed"]))
@click.option("--limit", default=50, show_default=True)
@click.pass_obj
@guarded
def connectors_log(state: State, status: str | None, limit: int) -> None:
    """The delivery log: every message with its status, attempts and last error."""
    rows = state.engine().delivery_log(status=status, limit=limit)
    state.emit(rows, lambda d: "\n".join(
        f"{m['id']:>6} {m['status']:<10} {m['connector']:<10} {m['channel'] or '-':<6} attempts={m['attempts']} "
        f"customer={m['customer_id']} {m['error'] or ''}" for m in d) or "no messages")


@main.command()
@click.argument("flow")
@click.argument("step")
@click.option("--customer", "customer_id", type=int, help="Render for this customer (default: sample data).")
@click.option("--vars", "variables", help="Instance variables as JSON, e.g. earlier form answers.")
@click.option("--lang", default=None, type=click.Choice(["zh", "en"]))
@click.pass_obj
@guarded
def preview(state: State, flow: str, step: str, customer_id: int | None, variables: str | None, lang: str | None) -> None:
    """Show what an action step would send; nothing is sent."""
    result = state.engine().preview(flow, step, customer_id=customer_id, variables=parse_json(variables, "--vars"),
                                    language=lang)
    state.emit(result, lambda r: f"{r['connector']} ({r['language']}):\n" + "\n".join(
        f"  {k}: {v}" for k, v in r["params"].items()))


@main.group()
def secrets() -> None:
    """Encryption keys for connector secrets (CAREFLOW_SECRET_KEYS)."""


@secrets.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new key; put it first in CAREFLOW_SECRET_KEYS, then run `careflow secrets rotate`."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@secrets.command("rotate")
@click.pass_obj
@guarded
def secrets_rotate(state: State) -> None:
    """Re-encrypt every stored secret under the first key of CAREFLOW_SECRET_KEYS."""
    count = state.engine().rotate_secrets()
    state.emit({"rotated": count}, f"{count} secret(s) re-encrypted")


@main.group()
def calendar() -> None:
    """The business calendar: Chinese public holidays and make-up working days, plus your overrides."""


@calendar.command("set")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--working/--off", required=True, help="Make the day a working day or a day off.")
@click.option("--note", default=None)
@click.pass_obj
@guarded
def calendar_set(state: State, day: Any, working: bool, note: str | None) -> None:
    state.engine().set_calendar_day(day.date(), working, note)
    state.emit({"day": day.date().isoformat(), "working": working}, f"{day.date()}: {'working day' if working else 'day off'}")


@calendar.command("unset")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.pass_obj
@guarded
def calendar_unset(state: State, day: Any) -> None:
    state.engine().set_calendar_day(day.date(), None)
    state.emit({"day": day.date().isoformat()}, f"{day.date()}: override removed")


@calendar.command("check")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.pass_obj
@guarded
def calendar_check(state: State, day: Any) -> None:
    working = state.engine().calendar.is_working_day(day.date())
    state.emit({"day": day.date().isoformat(), "working": working}, f"{day.date()}: {'working day' if working else 'day off'}")


@main.command()
@click.pass_obj
@guarded
def tick(state: State) -> None:
    """Process everything due now (timers, triggers, outbox) once, and exit."""
    report = state.engine().tick()
    state.emit(report, lambda r: (
        f"timers fired {r['timers_fired']}, triggers fired {r['occurrences_fired']} (missed {r['occurrences_missed']}), "
        f"instances started {r['instances_started']}, messages sent {r['outbox']['sent']}, failed {r['outbox']['failed']}"
    ))


@main.command()
@click.argument("what", type=click.Choice(["flow"]), default="flow")
def schema(what: str) -> None:
    """Print the flow DSL's JSON Schema (for editors: yaml-language-server)."""
    from importlib import resources

    click.echo(resources.files("engine").joinpath("schemas/flow.schema.json").read_text("utf-8"))


@main.command()
@click.option("--customers", "count", default=50, show_default=True, help="Demo customers to create.")
@click.option("--mail/--no-mail", default=True, show_default=True,
              help="Send e-mail to the local demo mailbox (served by `careflow run --demo-mail`).")
@click.pass_obj
@guarded
def demo(state: State, count: int, mail: bool) -> None:
    """Deploy the built-in flows and forms and seed demo users and customers (idempotent)."""
    from engine.demo import seed

    engine = state.engine()
    engine.deploy_builtins()
    result = seed(engine, customers=count)
    if mail and not any(c["name"] == "email" for c in engine.connectors()):
        from engine.demo_mail import DEMO_SMTP_SETTINGS

        # E-mail goes to the local demo mailbox that `careflow run --demo-mail` serves; an e-mail
        # channel an admin attached already is left alone.
        engine.save_connector("smtp-demo", "smtp", DEMO_SMTP_SETTINGS, by="demo")
        engine.save_connector("email", "email", {"provider": "smtp-demo", "marketing_per_week": 3}, by="demo")
    def text(r: dict[str, Any]) -> str:
        from engine.demo import DEMO_PASSWORD, DEMO_USERS

        lines = [f"demo ready: {r['users_created']} users, {r['customers_created']} customers created",
                 f"demo logins (password {DEMO_PASSWORD}):"]
        lines += [f"  {username:<6} {', '.join(roles)}" for username, _n, roles, _r, _t in DEMO_USERS]
        return "\n".join(lines)

    state.emit(result, text)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--tick-seconds", default=1.0, show_default=True, type=float)
@click.option("--demo-mail", is_flag=True, help="Also run the local demo mailbox on 127.0.0.1:8025 (see /demo/mail).")
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn workers (distributed mode only).")
@click.pass_obj
def run(state: State, host: str, port: int, tick_seconds: float, demo_mail: bool, workers: int) -> None:
    """Serve the web pages and REST API, tick every second, deliver the outbox.

    With CAREFLOW_BROKER_URL set it only serves (gunicorn); `careflow scheduler` and `careflow worker` do the rest.
    """
    from engine.app import create_app
    from engine.ticker import start_ticker

    if os.environ.get("CAREFLOW_BROKER_URL"):
        from engine.cli_scale import serve_web

        return serve_web(state, host, port, workers)

    engine = state.engine(running=True)
    engine.deploy_builtins()
    app = create_app(engine=engine)
    mailbox = None
    if demo_mail:
        from engine.demo_mail import DEMO_MAIL_PORT, bp, start_mailbox

        folder = Path(os.environ.get("CAREFLOW_HOME", ".")) / "demo-mail"
        mailbox = start_mailbox(folder)
        app.config["DEMO_MAILBOX"] = str(folder)
        app.register_blueprint(bp)
        click.echo(f"Demo mailbox on 127.0.0.1:{DEMO_MAIL_PORT}: read it at http://{host}:{port}/demo/mail")
    scheduler = start_ticker(engine, tick_seconds)
    click.echo(f"Careflow is running on http://{host}:{port}/")
    try:
        app.run(host=host, port=port, use_reloader=False, threaded=True)
    finally:
        scheduler.shutdown(wait=False)
        if mailbox is not None:
            mailbox.stop()





# ----- users, API tokens, audit log, inbound webhooks ------------------------------------------


def _password(from_stdin: bool, prompt: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if prompt:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return None


@main.group()
def users() -> None:
    """Users, their roles (built-in or custom), team and region."""


@users.command("list")
@click.pass_obj
@guarded
def users_list(state: State) -> None:
    rows = state.engine().users()
    state.emit(rows, lambda d: "\n".join(
        f"{u['username']:<16} {'active' if u['active'] else 'inactive':<8} {','.join(u['roles']):<32} "
        f"team={u['team'] or '-'} region={u['region'] or '-'}" for u in d) or "no users")


@users.command("create")
@click.argument("username")
@click.option("--name", "display_name", default=None, help="Display name (default: the user name).")
@click.option("--role", "roles", multiple=True, help="A role; repeat for several.")
@click.option("--team", default=None)
@click.option("--region", default=None)
@click.option("--email", default=None)
@click.option("--language", type=click.Choice(["zh", "en"]), default=None,
              help="The pages' and reminders' language (default: the browser's; reminders in Chinese).")
@click.option("--notify", type=click.Choice(["email", "im", "both", "none"]), default=None,
              help="How task reminders reach the user (default: email).")
@click.option("--im-id", default=None, help="The user's id on the team's IM, for an @mention in reminders.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--password-prompt", is_flag=True, help="Ask for the password (not echoed).")
@click.option("--by", default=None, help="Who makes the change (recorded in the audit log).")
@click.pass_obj
@guarded
def users_create(state: State, username: str, display_name: str | None, roles: tuple[str, ...], team: str | None,
                 region: str | None, email: str | None, language: str | None, notify: str | None, im_id: str | None,
                 password_stdin: bool, password_prompt: bool, by: str | None) -> None:
    """Create a user; without a password the user can use API tokens but not sign in on the web."""
    data: dict[str, Any] = {"username": username, "display_name": display_name or username, "roles": list(roles),
                            "team": team, "region": region, "email": email, "language": language, "im_id": im_id}
    if notify is not None:
        data["notify"] = notify
    password = _password(password_stdin, password_prompt)
    if password is not None:
        data["password"] = password
    user = state.engine().create_user(data, actor=by)
    state.emit(user, f"user {username} created")


@users.command("update")
@click.argument("username")
@click.option("--name", "display_name", default=None)
@click.option("--role", "roles", multiple=True, help="Replace the roles; repeat for several.")
@click.option("--team", default=None)
@click.option("--region", default=None)
@click.option("--email", default=None)
@click.option("--active/--inactive", default=None, help="Reactivate or deactivate.")
@click.option("--language", type=click.Choice(["zh", "en", "browser"]), default=None,
              help="The pages' and reminders' language; browser: not chosen, the browser's decides.")
@click.option("--notify", type=click.Choice(["email", "im", "both", "none"]), default=None,
              help="How task reminders reach the user.")
@click.option("--im-id", default=None, help="The user's id on the team's IM (\"\" removes it).")
@click.option("--password-stdin", is_flag=True)
@click.option("--password-prompt", is_flag=True)
@click.option("--by", default=None)
@click.pass_obj
@guarded
def users_update(state: State, username: str, display_name: str | None, roles: tuple[str, ...], team: str | None,
                 region: str | None, email: str | None, active: bool | None, language: str | None, notify: str | None,
                 im_id: str | None, password_stdin: bool, password_prompt: bool, by: str | None) -> None:
    """Change a user; deactivating or a new password ends their web sessions."""
    data: dict[str, Any] = {}
    for key, value in (("display_name", display_name), ("team", team), ("region", region), ("email", email),
                       ("active", active), ("notify", notify), ("im_id", im_id)):
        if value is not None:
            data[key] = value
    if language is not None:
        data["language"] = None if language == "browser" else language
    if roles:
        data["roles"] = list(roles)
    password = _password(password_stdin, password_prompt)
    if password is not None:
        data["password"] = password
    user = state.engine().update_user(username, data, actor=by)
    state.emit(user, f"user {username} updated")


@main.group()
def tokens() -> None:
    """API tokens (Bearer): shown once, stored hashed, revocable."""


@tokens.command("create")
@click.argument("username")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(["read", "write", "admin"]),
              help="read, write or admin; repeat for several.")
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@click.option("--by", default=None, help="Who creates it (recorded in the audit log).")
@click.pass_obj
@guarded
def tokens_create(state: State, username: str, scopes: tuple[str, ...], name: str, expires_in_days: int | None,
                  by: str | None) -> None:
    """Create a token for USERNAME and print it; it is not shown again."""
    from datetime import timedelta

    engine = state.engine()
    expires = engine.clock.now() + timedelta(days=expires_in_days) if expires_in_days else None
    info, secret = engine.create_token(username, scopes, name=name, actor=by, expires_at=expires)
    state.emit({**info, "token": secret}, secret)


@tokens.command("list")
@click.option("--user", "username", default=None)
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.pass_obj
@guarded
def tokens_list(state: State, username: str | None, include_revoked: bool) -> None:
    rows = state.engine().list_tokens(username, include_revoked=include_revoked)
    state.emit(rows, lambda d: "\n".join(
        f"{t['id']:>5}  {t['prefix']}…  {t['user']:<12} {','.join(t['scopes']):<18} {t['name']:<20} "
        f"last used {t['last_used_at'] or 'never'}{'  REVOKED' if t['revoked_at'] else ''}" for t in d) or "no tokens")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.option("--by", default=None)
@click.pass_obj
@guarded
def tokens_revoke(state: State, token_id: int, by: str | None) -> None:
    info = state.engine().revoke_token(token_id, actor=by)
    state.emit(info, f"token {token_id} revoked")


@main.command("audit")
@click.option("--actor", default=None)
@click.option("--action", default=None, help="Exact, or a prefix ending in '.' (task.).")
@click.option("--target-type", default=None)
@click.option("--target-id", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_obj
@guarded
def audit_list(state: State, actor: str | None, action: str | None, target_type: str | None, target_id: str | None,
               limit: int) -> None:
    """The audit log, newest first."""
    rows, _total = state.engine().audit_entries(actor=actor, action=action, target_type=target_type,
                                                target_id=target_id, limit=limit)
    state.emit(rows, lambda d: "\n".join(
        f"{e['at']}  {e['actor'] or '-':<12} {e['action']:<18} {e['target_type'] or ''} {e['target_id'] or ''}"
        for e in d) or "no entries")


@main.group()
def webhooks() -> None:
    """Inbound webhooks other systems call at /api/hooks/NAME, signed with HMAC-SHA256."""


@webhooks.command("create")
@click.argument("name")
@click.option("--flow", "flows", multiple=True, help="A flow it may start (default: any); repeat for several.")
@click.option("--event", "events", multiple=True, help="An event it may deliver (default: any).")
@click.option("--by", default=None)
@click.pass_obj
@guarded
def webhooks_create(state: State, name: str, flows: tuple[str, ...], events: tuple[str, ...], by: str | None) -> None:
    """Create a webhook and print its signing secret (not shown again)."""
    info, secret = state.engine().create_webhook(name, flows=list(flows), events=list(events), actor=by)
    state.emit({**info, "secret": secret}, secret)


@webhooks.command("list")
@click.pass_obj
@guarded
def webhooks_list(state: State) -> None:
    rows = state.engine().webhooks()
    state.emit(rows, lambda d: "\n".join(
        f"{h['name']:<20} flows={','.join(h['flows']) or 'any'} events={','.join(h['events']) or 'any'}" for h in d)
        or "no webhooks")


@webhooks.command("delete")
@click.argument("name")
@click.option("--by", default=None)
@click.pass_obj
@guarded
def webhooks_delete(state: State, name: str, by: str | None) -> None:
    state.engine().delete_webhook(name, actor=by)
    state.emit({"ok": True}, f"webhook {name} deleted")

from engine import cli_connectors  # noqa: E402,F401  (adds `connectors types`)
from engine import cli_import  # noqa: E402,F401  (adds the import commands to the customers group)
from engine import cli_dry_run  # noqa: E402,F401  (adds `dry-run`)
from engine.cli_segments import reports, segments  # noqa: E402  (registers ``customers risk`` too)

main.add_command(segments)
main.add_command(reports)

if __name__ == "__main__":
    main()


from engine.cli_scale import health, migrate, scheduler, worker  # noqa: E402 - the scale-out commands register on ``main``

for _command in (scheduler, worker, health, migrate):
    main.add_command(_command)
