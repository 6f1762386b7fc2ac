#!/usr/bin/env python
"""Distributed-mode benchmark: Celery workers on PostgreSQL against the embedded mode and SpiffWorkflow.

Run ``.venv/bin/python bench/scale.py`` for a readable table, ``--json`` for one JSON object,
``--quick`` for a smoke run of a few seconds per section (tests/bench). Needs PostgreSQL and Redis
(``CAREFLOW_BENCH_POSTGRES_URL``, ``CAREFLOW_TEST_REDIS_URL``). See docs/bench.md.

The process is tests/scale/flows/scale_wait_send.yaml: a one-day wait (a timer row), then a send
through a provider that logs every request, waiting for its result: two step transitions per
instance that workers do (the timer firing, the message recorded), each fenced by its claim.

1. Throughput with 1, 2 and 4 ``careflow worker`` processes (solo pool) and one ``careflow
   scheduler``: N instances are started, then the clock file jumps a day so every timer is due at
   once; the rate is counted between the first and the last execution-log row, so process start-up
   is not counted. Every run checks that every instance completed and counts duplicate steps (the
   execution log) and duplicate sends (the provider's log).
2. Latency from due to done: timers fall due at ``--rate`` transitions per second (the clock file
   moves with the real time), with 4 workers; by default 1,000/s, or 60% of the measured 4-worker
   throughput when that is less (above saturation the latency only measures the backlog); due = when the clock reached the timer's due time,
   done = when the message's result committed. p50 and p99.
3. The embedded mode on the same PostgreSQL: one process, ``Careflow.tick()`` fires the timers and
   delivers the outbox.
4. SpiffWorkflow on PostgreSQL: bench/engine.py's ``Spiff`` (bench/onboarding.bpmn, two requests per
   instance, its state serialized to the same database), imported from there, not duplicated.
5. The raw single-row INSERT+COMMIT rate of the database (bench/engine.py's ``raw_commit_rate``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from engine.clock import FixedClock  # noqa: E402
from engine.core import Careflow  # noqa: E402
from engine.store.models import Instance, OutboxMessage, StepExecution, Timer  # noqa: E402
from tests.scale.cluster import REDIS_URL, Cluster, redis_up  # noqa: E402
from tests.scale.support import FLOWS, registry  # noqa: E402

START = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bench_engine() -> Any:
    """bench/engine.py as a module (its name would hide the engine package on sys.path)."""
    spec = importlib.util.spec_from_file_location("careflow_bench_engine", BENCH / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Schema:
    """A fresh PostgreSQL schema, dropped at the end."""

    def __init__(self, base_url: str):
        self.admin = sa.create_engine(base_url)
        self.name = f"bench_scale_{uuid.uuid4().hex[:10]}"
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.name}"'))
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        self.admin.dispose()


def checks(cluster: Cluster, n: int) -> dict[str, Any]:
    report = cluster.report()
    if report["instances"].get("completed") != n:
        raise RuntimeError(f"not every instance completed: {report}")
    return report


def execution_span(cf: Careflow) -> tuple[float, int]:
    with cf.sessions() as s:
        first, last, count = s.execute(select(func.min(StepExecution.at), func.max(StepExecution.at), func.count())
                                       .where(StepExecution.outcome == "done")).one()
    return max((last - first).total_seconds(), 1e-6), int(count)


def throughput(base_url: str, workers: int, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    schema = Schema(base_url)
    cluster = Cluster(schema.url, REDIS_URL, workdir / f"w{workers}", START, lease_seconds=60, max_in_flight=400)
    try:
        cluster.start_instances(n)
        for _ in range(workers):
            cluster.start_worker()
        cluster.start_scheduler()
        cluster.wait_workers()  # process start-up is not what is measured
        cluster.advance(START + DAY + timedelta(minutes=1))
        cluster.wait_completed(n, timeout)
        time.sleep(1)
        report = checks(cluster, n)
        seconds, transitions = execution_span(cluster.cf)
    finally:
        cluster.stop()
        schema.drop()
    result = {"workers": workers, "n": n, "seconds": seconds, "transitions": transitions,
              "transitions_per_s": transitions / seconds, "ips": n / seconds,
              "duplicate_steps": report["duplicate_steps"], "duplicate_sends": report["duplicate_sends"]}
    log(f"[{workers} worker(s)] {result['transitions_per_s']:.0f} transitions/s, {result['ips']:.0f} instances/s")
    return result


def latency(base_url: str, workers: int, rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """Timers fall due at ``rate`` transitions/s (two per instance) for ``seconds``; due-to-done per instance."""
    n = max(10, int(rate / 2 * seconds))
    spacing = timedelta(seconds=2 / rate)
    schema = Schema(base_url)
    cluster = Cluster(schema.url, REDIS_URL, workdir / "latency", START, lease_seconds=60, max_in_flight=100,
                      scheduler_interval=0.1)
    moves: list[tuple[float, datetime]] = []
    stop = threading.Event()
    try:
        cluster.start_instances(n, spacing=spacing)
        for _ in range(workers):
            cluster.start_worker()
        cluster.start_scheduler()
        cluster.wait_workers()
        time.sleep(2)  # and the scheduler's first tick
        first_due = START + DAY
        w0 = time.time()

        def move_clock() -> None:
            # The engine clock follows the real one from the first due time on, in 20 ms steps.
            while not stop.is_set():
                wall = time.time()
                at = first_due + timedelta(seconds=wall - w0)
                cluster.advance(at)
                moves.append((wall, at))
                stop.wait(0.02)

        mover = threading.Thread(target=move_clock, daemon=True)
        mover.start()
        cluster.wait_completed(n, seconds * 20 + 60)
        stop.set()
        mover.join()
        checks(cluster, n)
        with cluster.cf.sessions() as s:
            due = dict(s.execute(select(Timer.instance_id, Timer.due_at)).all())
            done = dict(s.execute(select(StepExecution.instance_id, StepExecution.at)
                                  .where(StepExecution.kind == "message", StepExecution.outcome == "done")).all())
    finally:
        stop.set()
        cluster.stop()
        schema.drop()
    import bisect

    instants = [at for _wall, at in moves]
    waits = []
    for instance_id, due_at in due.items():
        i = bisect.bisect_left(instants, due_at)  # the first clock move that made the timer due
        due_wall = moves[min(i, len(moves) - 1)][0]
        waits.append((done[instance_id].timestamp() - due_wall) * 1000)
    waits.sort()
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    log(f"[latency, {workers} workers, {rate:.0f} transitions/s offered] due to done p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    return {"workers": workers, "n": n, "rate_offered": rate, "p50_ms": p50, "p99_ms": p99, "max_ms": waits[-1]}


def embedded(base_url: str, n: int) -> dict[str, Any]:
    """The same flow in one process: ``tick()`` fires every timer and delivers every message."""
    schema = Schema(base_url)
    os.environ.pop("CAREFLOW_SCALE_LEDGER", None)
    cf = Careflow(schema.url, clock=FixedClock(START), registry=registry())
    try:
        cf.deploy([FLOWS])
        with cf.transition() as s:
            from engine.store.instances import start_instance

            for _ in range(n):
                start_instance(s, cf.runtime(), "scale_wait_send", trigger={"type": "manual"})
        cf.clock.set(START + DAY + timedelta(minutes=1))  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        cf.tick()
        seconds = time.perf_counter() - t0
        with cf.sessions() as s:
            completed = s.scalar(select(func.count()).select_from(Instance).where(Instance.status == "completed"))
            sent = s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sent"))
        if completed != n or sent != n:
            raise RuntimeError(f"embedded: {completed}/{n} completed, {sent} sent")
    finally:
        cf.close()
        schema.drop()
    log(f"[embedded] {2 * n / seconds:.0f} transitions/s, {n / seconds:.0f} instances/s")
    return {"n": n, "seconds": seconds, "ips": n / seconds, "transitions_per_s": 2 * n / seconds}


def spiff_and_raw(base_url: str, n: int, raw_seconds: float) -> dict[str, Any]:
    be = _bench_engine()
    schema = Schema(base_url)
    engine = sa.create_engine(schema.url)
    try:
        raw = be.raw_commit_rate(engine, "postgres", raw_seconds)
        counters = be.Counters()
        counters.attach(engine)
        spiff = be.Spiff(engine)
        spiff.series(counters, 0, max(5, n // 10), 1)  # warm-up
        series = spiff.series(counters, 10_000_000, n, 1)
    finally:
        engine.dispose()
        schema.drop()
    log(f"[spiffworkflow, postgres] {series.ips:.0f} instances/s; raw INSERT+COMMIT {raw['per_s']:.0f}/s")
    return {"spiff_ips": series.ips, "raw_commit_per_s": raw["per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds per section")
    parser.add_argument("-n", type=int, default=None, help="instances per throughput run (default 2000, quick 100)")
    parser.add_argument("--rate", type=float, default=None,
                        help="transitions/s offered in the latency run (default: 1000, or 60%% of the measured "
                             "4-worker throughput if that is less, so the latency is measured below saturation)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="length of the latency run (default 10, quick 2)")
    args = parser.parse_args(argv)
    n = args.n or (100 if args.quick else 2000)
    latency_seconds = args.latency_seconds or (2.0 if args.quick else 10.0)
    base_url = os.environ.get("CAREFLOW_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if not redis_up():
        print(json.dumps({"error": f"Redis is not reachable at {REDIS_URL}"}) if args.json else f"Redis is not reachable at {REDIS_URL}")
        return 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="careflow-bench-scale-") as tmp:
        workdir = Path(tmp)
        runs = [throughput(base_url, w, n, workdir, timeout=120 + n * 0.2) for w in (1, 2, 4)]
        rate = args.rate or min(1000.0, 0.6 * runs[-1]["transitions_per_s"])
        lat = latency(base_url, 4, rate, latency_seconds, workdir)
    emb = embedded(base_url, n)
    peer = spiff_and_raw(base_url, max(20, n // 4), 1.0 if args.quick else 3.0)
    best = max(r["transitions_per_s"] for r in runs)
    out = {
        "n": n,
        "ips_by_workers": {str(r["workers"]): round(r["ips"], 1) for r in runs},
        "transitions_per_s_by_workers": {str(r["workers"]): round(r["transitions_per_s"], 1) for r in runs},
        "embedded_ips": round(emb["ips"], 1),
        "embedded_transitions_per_s": round(emb["transitions_per_s"], 1),
        "spiff_postgres_ips": round(peer["spiff_ips"], 1),
        "p50_due_to_done_ms": round(lat["p50_ms"], 1),
        "p99_due_to_done_ms": round(lat["p99_ms"], 1),
        "latency_rate_offered_per_s": lat["rate_offered"],
        "latency_instances": lat["n"],
        "duplicate_steps": sum(r["duplicate_steps"] for r in runs),
        "duplicate_sends": sum(r["duplicate_sends"] for r in runs),
        "raw_commit_per_s": round(peer["raw_commit_per_s"], 1),
        "fraction_of_raw_commit_rate": round(best / peer["raw_commit_per_s"], 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "quick": args.quick,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(table(out))
    return 0


def table(out: dict[str, Any]) -> str:
    lines = [f"Careflow distributed mode on PostgreSQL + Redis, {out['n']} instances per run "
             f"(wait a day, then send; 2 transitions per instance)", ""]
    lines.append(f"{'':<28}{'instances/s':>14}{'transitions/s':>16}")
    for w in ("1", "2", "4"):
        lines.append(f"{w + ' worker(s)':<28}{out['ips_by_workers'][w]:>14.1f}{out['transitions_per_s_by_workers'][w]:>16.1f}")
    lines.append(f"{'embedded (one process)':<28}{out['embedded_ips']:>14.1f}{out['embedded_transitions_per_s']:>16.1f}")
    lines.append(f"{'SpiffWorkflow, PostgreSQL':<28}{out['spiff_postgres_ips']:>14.1f}{'':>16}")
    lines += [
        "",
        f"due to done at {out['latency_rate_offered_per_s']:.0f} transitions/s offered (4 workers, "
        f"{out['latency_instances']} instances): p50 {out['p50_due_to_done_ms']:.0f} ms, p99 {out['p99_due_to_done_ms']:.0f} ms",
        f"raw INSERT+COMMIT {out['raw_commit_per_s']:.0f}/s; best transitions/s is {out['fraction_of_raw_commit_rate']:.1%} of it",
        f"duplicate steps {out['duplicate_steps']}, duplicate sends {out['duplicate_sends']}",
        f"load average {out['machine']['load_average']} on {out['machine']['cpus']} CPUs (shared machine)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
