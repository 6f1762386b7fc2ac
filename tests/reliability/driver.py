"""The crash-sweep driver: one engine operation per process, so an armed crash point really kills it.

Two ways to run it, both from the repository root:

* one operation, in a fresh interpreter::

      CAREFLOW_CRASH_AT=after_claim CAREFLOW_CRASH_HIT=2 CAREFLOW_FAKE_LEDGER=/tmp/ledger.jsonl \\
      python -m tests.reliability.driver --db /tmp/cf.db --now 2026-11-24T09:00+08:00 tick --flow onboarding

  It prints one JSON document and exits 0; 137 when the armed point killed it; 1 on an error.
  Operations: ``setup`` (migrate, deploy the built-in flows and forms, seed the demo users),
  ``customers``, ``start``, ``complete --step S``, ``message --event E``, ``tick`` and ``report``
  (see ``tests/reliability/scenarios.py`` for what each does per flow). ``--count-hits`` replaces the
  crash points with counters and reports how often each was reached (no crash).

* ``python -m tests.reliability.driver serve``: a fork server for the sweep. It imports the engine
  once, then reads one JSON request per line on stdin, forks a child per request that builds its own
  ``Careflow`` (fresh database connections, fresh crash-point counters, the request's environment),
  runs the operation and exits; the server answers one JSON line ``{"rc": ..., "result": ...}``.
  A child killed at a crash point exits 137 exactly like a fresh interpreter would, and the
  server only ever forks (it never opens the database), so each child starts from what is on disk.
  Startup costs milliseconds instead of the ~0.6 s of a new interpreter, which is what makes
  700 crashes fit in minutes on two cores.

Each operation builds a Careflow on the given SQLite file with a Registry that has the
RecordingProvider registered as "fake" and FAKE_SETTINGS, and a FixedClock at ``--now``
(as ``tests.conftest.make_careflow``, without re-deploying). With ``CAREFLOW_FAKE_LEDGER`` set,
the provider appends one fsynced JSON line per accepted send, which is how the sweep counts sends
across processes that crash.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from connectors.registry import Registry
from engine import crashpoints
from engine.clock import FixedClock, parse_instant
from engine.core import Careflow
from engine.demo import seed_users
from engine.store import customers as cust
from engine.store.models import Customer, HistoryEntry, Incident, Instance, OutboxMessage, Task, Timer
from tests.reliability.scenarios import SCENARIOS, USER_FOR_ROLE, index_of, phone
from tests.support.fakes import FAKE_SETTINGS, RecordingProvider



#: One fixed key, so every process of a run reads what another one encrypted.
SECRET_KEY = base64.urlsafe_b64encode(b"careflow-reliability-sweep-key!!")


def build(db: str, now: str, *, migrate: bool = False) -> Careflow:
    """A Careflow like ``tests.conftest.make_careflow`` builds, without deploying or seeding again."""
    registry = Registry()
    registry.register(RecordingProvider(), "fake")
    extra: dict[str, Any] = {}
    if "secrets" in inspect.signature(Careflow).parameters:  # connector secrets are stored encrypted
        from engine.secrets import SecretBox

        extra["secrets"] = SecretBox([SECRET_KEY])
    return Careflow(f"sqlite:///{db}", clock=FixedClock(parse_instant(now)), registry=registry,
                    connector_settings=FAKE_SETTINGS, migrate_schema=migrate, **extra)


def _selected(index: int, request: Mapping[str, Any]) -> bool:
    parity = request.get("parity")
    return parity is None or index % 2 == int(parity)


def _flow_instances(cf: Careflow, flow: str) -> list[tuple[int, int]]:
    """(instance id, customer index) of every instance of the flow, oldest first."""
    with cf.session() as s:
        rows = s.execute(
            select(Instance.id, Customer.phone).join(Customer, Customer.id == Instance.customer_id)
            .where(Instance.flow_id == flow).order_by(Instance.id)
        ).all()
    return [(iid, index_of(p)) for iid, p in rows]


def op_setup(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    cf.deploy_builtins()
    return {"users_created": seed_users(cf)}


def op_customers(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    scenario = SCENARIOS[request["flow"]]
    assert scenario.customer is not None
    created = 0
    for i in range(int(request["count"])):
        with cf.session() as s:
            if cust.find_customer(s, phone(i), None) is not None:
                continue  # created before a crash
        cf.create_customer(scenario.customer(i), fire_triggers=False)
        created += 1
    return {"created": created}


def op_start(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    """Submit the flow's start form once per customer index, unless that instance already exists."""
    scenario = SCENARIOS[request["flow"]]
    assert scenario.start_form is not None
    done = {index for _, index in _flow_instances(cf, scenario.flow)}
    started = []
    for i in range(int(request["count"])):
        if i in done:
            continue
        form, data = scenario.start_form(i)
        result = cf.submit_form(form, data, user="ops")
        started.extend(result["instances"])
    return {"started": started}


def op_complete(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    """Complete every task still open at the step, with the scenario's answers, as its assignee."""
    scenario = SCENARIOS[request["flow"]]
    step = request["step"]
    completed = []
    for iid, index in _flow_instances(cf, scenario.flow):
        if not _selected(index, request):
            continue
        for task in cf.tasks(instance_id=iid):
            if task["step"] != step or task["status"] != "open":
                continue
            user = task["assignee"] or USER_FOR_ROLE[task["role"]]
            cf.complete(task["id"], dict(scenario.answers[step]), user)
            completed.append(task["id"])
    return {"completed": completed}


def op_message(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    """Deliver the event to every instance with a token still waiting for it."""
    scenario = SCENARIOS[request["flow"]]
    event = request["event"]
    delivered = []
    for iid, index in _flow_instances(cf, scenario.flow):
        if not _selected(index, request):
            continue
        with cf.session() as s:
            instance = s.get(Instance, iid)
            assert instance is not None
            waiting = instance.status == "running" and any(
                (t.get("wait") or {}).get("kind") == "event" and t["wait"].get("event") == event
                for t in instance.state["tokens"].values()
            )
        if waiting:
            cf.message(iid, event, dict(scenario.event_data.get(event, {})))
            delivered.append(iid)
    return {"delivered": delivered}


def op_tick(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    return cf.tick()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def op_report(cf: Careflow, request: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the sweep checks, as plain JSON."""
    with cf.session() as s:
        phones = dict(s.execute(select(Customer.id, Customer.phone)).all())
        history: dict[int, list[Any]] = {}
        for h in s.scalars(select(HistoryEntry).order_by(HistoryEntry.id)):
            history.setdefault(h.instance_id, []).append({"event": h.event, "entries": h.entries})
        return {
            "now": cf.clock.now().isoformat(),
            "instances": [
                {"id": i.id, "flow": i.flow_id, "customer_id": i.customer_id,
                 "index": index_of(phones.get(i.customer_id)) if i.customer_id else None,
                 "status": i.status, "outcome": i.outcome, "visits": i.state.get("visits", {}),
                 "tokens": i.state.get("tokens", {}), "history": history.get(i.id, [])}
                for i in s.scalars(select(Instance).order_by(Instance.id))
            ],
            "tasks": [
                {"id": t.id, "instance_id": t.instance_id, "step": t.step_id, "token": t.token, "gen": t.gen,
                 "status": t.status}
                for t in s.scalars(select(Task).order_by(Task.id))
            ],
            "outbox": [
                {"id": m.id, "effect_key": m.effect_key, "instance_id": m.instance_id, "step": m.step_id,
                 "status": m.status, "attempts": m.attempts, "lease_until": _iso(m.lease_until), "category": m.category}
                for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            ],
            "incidents": [
                {"id": x.id, "instance_id": x.instance_id, "outbox_id": x.outbox_id, "step": x.step_id,
                 "kind": x.kind, "status": x.status}
                for x in s.scalars(select(Incident).order_by(Incident.id))
            ],
            "timers": [
                {"id": t.id, "instance_id": t.instance_id, "kind": t.kind, "status": t.status, "due_at": _iso(t.due_at)}
                for t in s.scalars(select(Timer).order_by(Timer.id))
            ],
        }


OPS = {
    "setup": op_setup,
    "customers": op_customers,
    "start": op_start,
    "complete": op_complete,
    "message": op_message,
    "tick": op_tick,
    "report": op_report,
}


def _install_counters() -> dict[str, int]:
    """Replace every reference to crash_point with a counter (used to calibrate the sweep)."""
    counts: dict[str, int] = {}
    original = crashpoints.crash_point

    def counting(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    for module in list(sys.modules.values()):
        if getattr(module, "crash_point", None) is original:
            module.crash_point = counting  # type: ignore[attr-defined]
    return counts


def run_op(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run one request in this process; the crash point may end the process here."""
    counts = _install_counters() if request.get("count_hits") else None
    cf = build(request["db"], request["now"], migrate=request["op"] == "setup")
    try:
        result = OPS[request["op"]](cf, request)
    finally:
        cf.close()  # the last connection closing checkpoints the WAL
    armed = os.environ.get("CAREFLOW_CRASH_AT")
    out: dict[str, Any] = {"result": result}
    if armed:
        out["hits"] = {armed: crashpoints._hits.get(armed, 0)}
    if counts is not None:
        out["hits"] = counts
    return out


# ----- fork server ----------------------------------------------------------------------------------

def _child(request: Mapping[str, Any], write_fd: int) -> None:
    code = 0
    try:
        for key in ("CAREFLOW_CRASH_AT", "CAREFLOW_CRASH_HIT", "CAREFLOW_FAKE_LEDGER"):
            os.environ.pop(key, None)
        os.environ.update({k: str(v) for k, v in (request.get("env") or {}).items()})
        payload = {"ok": True, **run_op(request)}
    except BaseException as exc:  # report everything; the parent decides
        payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    data = json.dumps(payload, ensure_ascii=False, default=str).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view):]
    os.close(write_fd)
    os._exit(code)


def serve() -> None:
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.dup2(2, 1)  # stdout is the protocol; anything the engine prints goes to stderr
            _child(request, write_fd)
        os.close(write_fd)
        chunks = []
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(65536):
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        raw = b"".join(chunks)
        try:
            result = json.loads(raw) if raw else None
        except ValueError:
            result = {"ok": False, "error": "unreadable child output", "raw": raw[:2000].decode(errors="replace")}
        sys.stdout.write(json.dumps({"rc": rc, "result": result}, ensure_ascii=False) + "\n")
        sys.stdout.flush()


# ----- command line -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.driver", description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="SQLite file")
    parser.add_argument("--now", help="the engine clock, ISO-8601 with a zone")
    parser.add_argument("--count-hits", action="store_true", help="count crash points instead of crashing")
    parser.add_argument("op", choices=[*OPS, "serve"])
    parser.add_argument("--flow")
    parser.add_argument("--count", type=int, default=1, help="instances of the scenario")
    parser.add_argument("--step", help="the task step to complete")
    parser.add_argument("--event", help="the event to deliver")
    parser.add_argument("--parity", type=int, choices=(0, 1), help="only even (0) or odd (1) customer indexes")
    args = parser.parse_args(argv)
    if args.op == "serve":
        serve()
        return 0
    if not args.db or not args.now:
        parser.error("--db and --now are required")
    request = {"op": args.op, "db": args.db, "now": args.now, "flow": args.flow, "count": args.count,
               "step": args.step, "event": args.event, "parity": args.parity, "count_hits": args.count_hits}
    try:
        out = run_op(request)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, ensure_ascii=False))
        traceback.print_exc()
        return 1
    print(json.dumps({"ok": True, **out}, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
