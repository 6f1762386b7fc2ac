"""The crash-sweep harness: run a scenario's operations as processes, crash one, restart, then check.

One *case* is (flow, crash point, seed). The seed picks N, the hit of the point that kills the
process (1..k, where k is how often an uncrashed run of the scenario reaches that point, measured
once per flow by a calibration run), and how the harness restarts: after 0–5 s of engine time, and
for half the seeds also past the 120 s outbox lease, so a ``sending`` row left by the crash is
reclaimed on the restart itself rather than by a later tick.

Crash-point counters live in each process, so the harness arms ``CAREFLOW_CRASH_HIT`` with the
hits still to go and subtracts what each finished operation reports: the crash lands on the N-th
hit of the whole scenario. Exactly one crash is injected per case; the crashed operation is rerun
unarmed (a restart), and the remaining operations follow. A final tick past the lease (repeated at
most three times while something is still due) ends the run, then the checks of RELIABILITY.md T01
read a report of the database and the provider's ledger.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import tests
from tests.reliability.scenarios import SCENARIOS, START, Scenario, req

REPO_ROOT = Path(tests.__file__).parent.parent  # the checkout that holds this test suite
LEASE = timedelta(seconds=120)  # engine.outbox.LEASE
AMBIGUOUS_POINT = "after_provider_accept_before_ledger"
EXIT_CRASHED = 137
FINAL_TICKS = 3
#: Outbox states that must not survive the final tick (``claimed``: taken by a dispatcher, provider not called yet).
IN_FLIGHT = ("pending", "claimed", "sending")
#: No operation of the sweep takes anywhere near this; a hung one fails its case instead of the run.
OP_TIMEOUT = 300.0


class HarnessError(RuntimeError):
    """The harness itself could not run a case (not an engine verdict)."""


# ----- runners: how one operation becomes one process ---------------------------------------------

def _driver_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_CRASH_") and k != "CAREFLOW_FAKE_LEDGER"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    return env


class ForkRunner:
    """One ``driver serve`` process; every operation runs in a child it forks."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.driver", "serve"], cwd=REPO_ROOT, env=_driver_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, encoding="utf-8",
            start_new_session=True,  # its own process group: a hung child can be killed with it
        )

    def run(self, request: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, dict[str, Any] | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({**request, "env": dict(env)}, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], OP_TIMEOUT)
        if not ready:
            self.kill()
            raise HarnessError(f"{request['op']} at {request.get('now')} took more than {OP_TIMEOUT:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise HarnessError(f"the driver server died (exit {self.proc.poll()}); see {self.log_path}")
        answer = json.loads(line)
        return int(answer["rc"]), answer["result"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class ExecRunner:
    """A fresh interpreter per operation (``CAREFLOW_SWEEP_EXEC=1``): slower, nothing shared at all."""

    def __init__(self, log_path: Path):
        self.log_path = log_path

    def run(self, request: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, dict[str, Any] | None]:
        argv = [sys.executable, "-m", "tests.reliability.driver", "--db", request["db"], "--now", request["now"]]
        if request.get("count_hits"):
            argv.append("--count-hits")
        argv.append(request["op"])
        for key in ("flow", "count", "step", "event", "parity"):
            if request.get(key) is not None:
                argv += [f"--{key}", str(request[key])]
        proc = subprocess.run(argv, cwd=REPO_ROOT, env={**_driver_env(), **env}, capture_output=True, text=True,
                              encoding="utf-8", timeout=300, check=False)
        if proc.stderr:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(proc.stderr)
        out = proc.stdout.strip().splitlines()
        try:
            result = json.loads(out[-1]) if out else None
        except ValueError:
            result = {"ok": False, "error": proc.stdout[-2000:]}
        return proc.returncode, result

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


Runner = ForkRunner | ExecRunner


def make_runner(log_path: Path) -> Runner:
    return ExecRunner(log_path) if os.environ.get("CAREFLOW_SWEEP_EXEC") == "1" else ForkRunner(log_path)


# ----- running a scenario -----------------------------------------------------------------------------

def _call(runner: Runner, request: Mapping[str, Any], env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any] | None]:
    rc, result = runner.run(request, env or {})
    if rc not in (0, EXIT_CRASHED) or (rc == 0 and not (result or {}).get("ok")):
        detail = (result or {}).get("traceback") or (result or {}).get("error") or result
        raise HarnessError(f"{request['op']} at {request['now']} exited {rc}: {detail}")
    return rc, result


def make_template(runner: Runner, directory: Path) -> Path:
    """A database with the built-in flows and forms deployed and the demo users, at START."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "template.db"
    _call(runner, {"op": "setup", "db": str(db), "now": START.isoformat()})
    return db


def _copy_db(template: Path, db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{template}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{db}{suffix}")


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Run:
    """What one run of a scenario did and ended with."""

    report: dict[str, Any]
    ledger: list[dict[str, Any]]
    hits: Counter[str] = field(default_factory=Counter)
    injected: int = 0
    crashed_op: str | None = None
    restart_delay: float = 0.0
    ops_run: int = 0


def run_scenario(
    runner: Runner, template: Path, workdir: Path, scenario: Scenario, count: int, *,
    point: str | None = None, hit: int = 0, rng: random.Random | None = None, count_hits: bool = False,
) -> Run:
    db = workdir / "careflow.db"
    ledger = workdir / "ledger.jsonl"
    _copy_db(template, db)
    base_env = {"CAREFLOW_FAKE_LEDGER": str(ledger)}
    remaining = hit
    run = Run(report={}, ledger=[])
    now = START
    ops = list(scenario.ops(count))
    for op in ops:
        at = max(op.at, now)
        restarts = 0
        while True:
            armed = point is not None and run.injected == 0
            env = dict(base_env)
            if armed:
                env.update(CAREFLOW_CRASH_AT=str(point), CAREFLOW_CRASH_HIT=str(remaining))
            request = {**op.request, "db": str(db), "now": at.isoformat(), "count_hits": count_hits}
            rc, result = _call(runner, request, env)
            run.ops_run += 1
            if rc == 0:
                hits = (result or {}).get("hits") or {}
                run.hits.update(hits)
                if armed:
                    remaining -= int(hits.get(point, 0))
                break
            if not armed:
                raise HarnessError(f"{op.name} exited 137 with no crash point armed")
            run.injected += 1
            run.crashed_op = op.name
            restarts += 1
            assert rng is not None
            delay = timedelta(seconds=rng.randint(0, 5))
            if rng.random() < 0.5:
                delay += LEASE + timedelta(seconds=1)
            run.restart_delay = delay.total_seconds()
            at = at + delay  # the restart: the same operation again, unarmed, a little later
        now = at
    # Final ticks past the lease: reclaim whatever a crash left in ``sending``, fire what is due.
    for _ in range(FINAL_TICKS):
        now = now + LEASE + timedelta(seconds=60)
        _call(runner, {**req("tick", scenario.flow), "db": str(db), "now": now.isoformat()}, base_env)
        _, result = _call(runner, {"op": "report", "db": str(db), "now": now.isoformat()})
        run.report = (result or {})["result"]
        if not _still_busy(run.report):
            break
    run.ledger = read_ledger(ledger)
    return run


def _still_busy(report: Mapping[str, Any]) -> bool:
    now = datetime.fromisoformat(report["now"])
    return (any(i["status"] == "running" for i in report["instances"])
            or any(m["status"] in IN_FLIGHT for m in report["outbox"])
            or any(t["status"] == "pending" and datetime.fromisoformat(t["due_at"]) <= now for t in report["timers"]))


# ----- the checks -------------------------------------------------------------------------------------

METRICS = ("instances_lost", "stuck_instances", "duplicate_instances", "duplicate_deliveries", "steps_run_twice",
           "steps_missing", "messages_never_sent", "ambiguous_surfaced", "stuck_rows")


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    metrics: Counter[str] = field(default_factory=Counter)

    def add(self, metric: str | None, message: str, amount: int = 1) -> None:
        if metric:
            self.metrics[metric] += amount
        self.violations.append(message)


def check(run: Run, scenario: Scenario, count: int, point: str | None) -> Verdict:
    """RELIABILITY.md T01 (a)–(d) on the report of one run."""
    v = Verdict()
    report = run.report
    now = datetime.fromisoformat(report["now"])
    sends = Counter(r["effect_key"] for r in run.ledger)
    rows = report["outbox"]
    row_keys = {m["effect_key"] for m in rows}
    open_incidents = [x for x in report["incidents"] if x["status"] == "open"]

    # (a) every instance reaches its expected terminal state, exactly one per customer.
    by_index: dict[int | None, list[dict[str, Any]]] = {}
    for inst in report["instances"]:
        by_index.setdefault(inst["index"] if inst["flow"] == scenario.flow else None, []).append(inst)
    for other in by_index.pop(None, []):
        v.add("duplicate_instances", f"unexpected instance {other['id']} of flow {other['flow']} ({other['status']})")
    for i in range(count):
        found = by_index.pop(i, [])
        if not found:
            v.add("instances_lost", f"customer {i}: no {scenario.flow} instance at all")
            continue
        for extra in found[1:]:
            v.add("duplicate_instances", f"customer {i}: second instance {extra['id']} ({extra['status']})")
        inst = found[0]
        if inst["status"] == "running":
            v.add("stuck_instances", f"instance {inst['id']} (customer {i}) still running at "
                                     f"{sorted({t['step'] for t in inst['tokens'].values()})}")
        elif (inst["status"], inst["outcome"]) != ("completed", scenario.outcome(i)):
            v.add("instances_lost", f"instance {inst['id']} (customer {i}) ended {inst['status']}/{inst['outcome']}, "
                                    f"expected completed/{scenario.outcome(i)}")
        # (c) exactly one step_completed per step on the path: no step ran twice, none was lost.
        done = Counter(e["step"] for h in inst["history"] for e in h["entries"] if e.get("type") == "step_completed")
        expected = Counter(scenario.path(i))
        for step, n in sorted((done - expected).items()):
            v.add("steps_run_twice", f"instance {inst['id']}: step {step} completed {done[step]}× "
                                     f"(expected {expected[step]})", n)
        for step, n in sorted((expected - done).items()):
            v.add("steps_missing", f"instance {inst['id']}: step {step} completed {done[step]}× "
                                   f"(expected {expected[step]})", n)
        failed = [e for h in inst["history"] for e in h["entries"] if e.get("type") == "incident"]
        for e in failed:
            v.add(None, f"instance {inst['id']}: incident at {e.get('step')}: {e.get('message')}")
        # Customer messages only: task reminders to employees (category "staff") depend on when the
        # reminder timers fall; they are held to exactly-once by the ledger checks below like the rest.
        n_rows = sum(1 for m in rows if m["instance_id"] == inst["id"] and m.get("category") != "staff")
        if n_rows != scenario.messages(i):
            v.add("messages_never_sent" if n_rows < scenario.messages(i) else "duplicate_deliveries",
                  f"instance {inst['id']}: {n_rows} outbox messages, expected {scenario.messages(i)}",
                  abs(scenario.messages(i) - n_rows))
    for index, insts in by_index.items():
        for inst in insts:
            v.add("duplicate_instances", f"instance {inst['id']} for unexpected customer index {index}")

    # (c) tasks: at most one completed task per (instance, step, token gen).
    completed = Counter((t["instance_id"], t["step"], t["token"], t["gen"]) for t in report["tasks"]
                        if t["status"] == "completed")
    for (iid, step, token, gen), n in completed.items():
        if n > 1:
            v.add("steps_run_twice", f"instance {iid}: {n} completed tasks for step {step} ({token} gen {gen})", n - 1)

    # (b) per effect key at most one accepted send; exactly one for a message marked sent.
    for key, n in sends.items():
        if n > 1:
            v.add("duplicate_deliveries", f"{key}: the provider accepted it {n} times", n - 1)
        if key not in row_keys:
            v.add(None, f"{key}: sent, but no outbox row has this key")
    ambiguous = 0
    never_sent: list[str] = []
    for m in rows:
        n = sends.get(m["effect_key"], 0)
        incident = [x for x in open_incidents if x["outbox_id"] == m["id"] and x["kind"] == "delivery_unknown"]
        if m["status"] == "sent":
            if n != 1:
                v.add("messages_never_sent" if n == 0 else None,
                      f"{m['effect_key']}: marked sent, but the provider accepted it {n} times")
        elif m["status"] == "suppressed":
            pass
        elif m["status"] == "unknown" and n == 1 and point == AMBIGUOUS_POINT:
            # The one allowed exception: accepted, then the process died before recording it.
            # It must be surfaced as an incident, and not resent (n == 1 above).
            ambiguous += 1
            if not incident:
                v.add(None, f"{m['effect_key']}: ambiguous send without an open delivery_unknown incident")
        elif m["status"] == "unknown" and n == 0:
            never_sent.append(m["effect_key"])
        elif m["status"] in IN_FLIGHT:
            v.add("stuck_rows", f"{m['effect_key']}: still {m['status']} after the final tick "
                                f"(lease until {m['lease_until']})")
        else:
            v.add("messages_never_sent" if n == 0 else None,
                  f"{m['effect_key']}: ended {m['status']} with {n} accepted sends")
    if never_sent:
        v.add("messages_never_sent",
              f"{len(never_sent)} messages never reached the provider (0 sends in the ledger) yet ended `unknown` "
              f"with a delivery_unknown incident, so they are never sent without an operator: "
              f"{', '.join(never_sent[:6])}{', …' if len(never_sent) > 6 else ''}", len(never_sent))
    v.metrics["ambiguous_surfaced"] += ambiguous
    if point == AMBIGUOUS_POINT and run.injected and ambiguous != 1:
        v.add(None, f"a crash between the provider's accept and the ledger left {ambiguous} ambiguous sends, expected 1")

    # Incidents: only an `unknown` message may leave one open (the never-sent ones are reported above).
    allowed = {m["id"] for m in rows if m["status"] == "unknown"}
    for x in open_incidents:
        if not (x["kind"] == "delivery_unknown" and x["outbox_id"] in allowed):
            v.add(None, f"open incident {x['id']} {x['kind']} at {x['step']} (instance {x['instance_id']})")

    # (d) nothing left behind: no row pending/claimed/sending, no timer pending in the past.
    for t in report["timers"]:
        if t["status"] == "pending" and datetime.fromisoformat(t["due_at"]) <= now:
            v.add("stuck_rows", f"timer {t['id']} ({t['kind']}, instance {t['instance_id']}) still pending, "
                                f"due {t['due_at']}")
    return v


# ----- cases ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    flow: str
    point: str
    seed: int
    seeds: int  # of the sweep size: spreads the seeds over the hits

    @property
    def id(self) -> str:
        return f"{self.flow}-{self.point}-s{self.seed}"


@dataclass
class CaseResult:
    case: Case
    hits_available: int
    hit: int
    injected: int = 0
    crashed_op: str | None = None
    restart_delay: float = 0.0
    ops_run: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    metrics: Counter[str] = field(default_factory=Counter)
    error: str | None = None


def pick_hit(case: Case, available: int) -> int:
    """Seeds spread over the hits 1..k (with k ≥ seeds every seed dies at a different hit)."""
    return 1 + (case.seed * available) // case.seeds if available else 0


def run_case(runner: Runner, template: Path, workdir: Path, case: Case, count: int, available: int) -> CaseResult:
    result = CaseResult(case, available, pick_hit(case, available))
    if not available:
        return result
    started = time.monotonic()
    rng = random.Random(f"{case.flow}|{case.point}|{case.seed}")
    scenario = SCENARIOS[case.flow]
    try:
        run = run_scenario(runner, template, workdir, scenario, count, point=case.point, hit=result.hit, rng=rng)
    except HarnessError as exc:
        result.error = str(exc)
        return result
    finally:
        result.seconds = time.monotonic() - started
    result.injected, result.crashed_op = run.injected, run.crashed_op
    result.restart_delay, result.ops_run = run.restart_delay, run.ops_run
    verdict = check(run, scenario, count, case.point)
    if not run.injected:
        verdict.add(None, f"hit {result.hit} of {case.point} was never reached (an uncrashed run reaches it "
                          f"{available}×): the scenario is not deterministic")
    result.violations, result.metrics = verdict.violations, verdict.metrics
    if result.violations or result.error:
        return result
    shutil.rmtree(workdir, ignore_errors=True)  # keep the databases of failing cases only
    return result


def calibrate(runner: Runner, template: Path, workdir: Path, flow: str, count: int) -> Counter[str]:
    """How often an uncrashed run of the scenario reaches each crash point; the run must pass the checks."""
    scenario = SCENARIOS[flow]
    run = run_scenario(runner, template, workdir, scenario, count, count_hits=True)
    verdict = check(run, scenario, count, None)
    if verdict.violations:
        raise HarnessError(f"the uncrashed run of {flow} already fails the checks (scenario or engine bug; "
                           f"database kept in {workdir}):\n  " + "\n  ".join(verdict.violations[:20]))
    shutil.rmtree(workdir, ignore_errors=True)
    return run.hits


class RunnerPool:
    """Runners shared by worker threads: one driver server per thread."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._local = threading.local()
        self._all: list[Runner] = []
        self._lock = threading.Lock()

    def get(self) -> Runner:
        runner = getattr(self._local, "runner", None)
        if runner is None or not runner.alive():
            with self._lock:
                runner = make_runner(self.directory / f"driver-{len(self._all)}.log")
                self._all.append(runner)
            self._local.runner = runner
        return runner

    def close(self) -> None:
        for runner in self._all:
            runner.close()


__all__ = ["Case", "CaseResult", "HarnessError", "METRICS", "RunnerPool", "calibrate", "check", "make_template",
           "pick_hit", "run_case", "run_scenario"]
