#!/usr/bin/env python
"""Careflow engine benchmark: Careflow against SpiffWorkflow and against the raw commit rate.

Run ``.venv/bin/python bench/engine.py`` for a readable table, ``--json`` for one JSON object,
``--quick`` for a few-second smoke run (CI). See docs/bench.md for what each figure means.

Sections, all in one run:

1. Onboarding throughput, instances per second end to end (start request + form-submission
   request, each instance run from its start to its end), on SQLite and on PostgreSQL:
   Careflow with one transaction per request and with ``--batch`` requests per transaction;
   SpiffWorkflow (bench/onboarding.bpmn) with its state serialized by BpmnWorkflowSerializer and
   written to the same database after each request, also unbatched and batched; the raw
   single-row INSERT+COMMIT rate of the same database on the same connection settings.
2. The daily birthday trigger over 1,000,000 customers (SQLite).
3. Memory held per waiting instance: 100,000 Careflow instances parked on a 7-day wait, against
   SpiffWorkflow workflows held in memory (each measured in a fresh child process).

Only this directory's flows and form are deployed (bench/flows, bench/forms); the engine is used
through its public pieces (``Careflow`` with its batch API, ``start_instance``,
``birthday_customers``) and is not special-cased in any way.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is called engine.py: keep its own directory off the path, or it would hide the engine package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event, func, insert, select  # noqa: E402

from connectors.registry import Registry  # noqa: E402
from engine.clock import FixedClock  # noqa: E402
from engine.core import Careflow  # noqa: E402
from engine.demo import seed_users  # noqa: E402
from engine.store import db as store_db  # noqa: E402
from engine.store.instances import start_instance  # noqa: E402
from engine.store.models import Customer, Instance, OutboxMessage, Task, Timer  # noqa: E402

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Tuesday 24 November 2026, 09:00 in Shanghai, a working day: every run computes the same dues.
START = datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)
FLOW = "bench_onboarding"
WAIT_FLOW = "bench_waiting"
DEPLOY = [BENCH / "forms", BENCH / "flows"]
ONBOARDING_BPMN = BENCH / "onboarding.bpmn"
WAITING_BPMN = BENCH / "waiting.bpmn"
ASSIGNEE = "wang"  # a demo account manager (engine.demo.seed_users)
FORM_ANSWER = {"reached": True, "preferred_channel": "sms", "satisfaction": 5, "call_notes": "客户很满意，偏好短信联系"}
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BATCH = 100


@dataclass(frozen=True)
class Sizes:
    raw_seconds: float  # how long each raw INSERT+COMMIT loop runs
    warmup: int  # instances run (untimed) before each measured series
    unbatched: int  # instances per one-transaction-per-request series
    batched: int  # instances per batched series
    customers: int  # birthday section
    waiting: int  # Careflow waiting instances (RSS)
    waiting_traced: int  # of which measured again under tracemalloc
    spiff_held: int  # SpiffWorkflow workflows held in memory (RSS)
    spiff_traced: int  # of which measured again under tracemalloc


FULL = Sizes(raw_seconds=2.0, warmup=50, unbatched=600, batched=1500, customers=1_000_000,
             waiting=100_000, waiting_traced=2_000, spiff_held=10_000, spiff_traced=2_000)
QUICK = Sizes(raw_seconds=0.5, warmup=10, unbatched=100, batched=200, customers=20_000,
              waiting=2_000, waiting_traced=300, spiff_held=1_000, spiff_traced=300)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- measuring helpers ---------------------------------------------------------------------------


@dataclass
class Counters:
    """Commits and SQL statements seen on one SQLAlchemy engine.

    A statement is one call to the driver, as the engine's ``before_cursor_execute`` listeners see
    it: an ``executemany`` of many rows counts once, and so do a ``COPY`` and a bulk ``UPDATE ...
    FROM unnest`` of PostgreSQL's batch writes (engine/store/rows.py runs the COPY on the driver's
    cursor itself, and calls these listeners for it).
    """

    commits: int = 0
    statements: int = 0

    def attach(self, engine: sa.Engine) -> None:
        def on_commit(_conn: Any) -> None:
            self.commits += 1

        def on_statement(*_args: Any) -> None:
            self.statements += 1

        event.listen(engine, "commit", on_commit)
        event.listen(engine, "before_cursor_execute", on_statement)

    def snapshot(self) -> tuple[int, int]:
        return self.commits, self.statements


@dataclass
class Series:
    """One measured series: n instances run to their end."""

    n: int
    seconds: float
    commits: int
    statements: int
    cpu_seconds: float = 0.0  # this process's CPU time (not the PostgreSQL server's)

    @property
    def cpu_ms_per_instance(self) -> float:
        return 1000 * self.cpu_seconds / self.n

    @property
    def ips(self) -> float:
        return self.n / self.seconds

    @property
    def commits_per_s(self) -> float:
        return self.commits / self.seconds


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def settle() -> None:
    """Before each timed series, of either engine: what is alive now (the engines' code and loaded
    data: SQLAlchemy, Jinja, phonenumbers' metadata...) is moved out of the garbage collector's
    sight, as a long-running server does once started. Otherwise Python's full collections walk
    all of it every few hundred requests (about a tenth of Careflow's time here)."""
    gc.collect()
    gc.freeze()


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- databases -----------------------------------------------------------------------------------


@dataclass
class Database:
    kind: str  # sqlite | postgres
    url: str
    cleanup: Callable[[], None] = lambda: None
    settings: dict[str, Any] = field(default_factory=dict)


def sqlite_database(directory: Path, name: str) -> Database:
    path = directory / f"{name}.db"
    return Database("sqlite", f"sqlite:///{path}", settings={
        "journal_mode": "WAL", "synchronous": store_db.SQLITE_SYNCHRONOUS, "sqlite_version": sqlite3.sqlite_version,
    })


def postgres_base_url() -> str:
    return os.environ.get("CAREFLOW_BENCH_POSTGRES_URL", DEFAULT_PG_URL)


def postgres_database(base_url: str) -> tuple[Database | None, str | None]:
    """A fresh schema on the PostgreSQL at base_url, dropped by ``cleanup``; (None, why) if unreachable."""
    try:
        admin = sa.create_engine(base_url, connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            version = conn.execute(sa.text("show server_version")).scalar_one()
            sync_commit = conn.execute(sa.text("show synchronous_commit")).scalar_one()
            fsync = conn.execute(sa.text("show fsync")).scalar_one()
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any failure to reach or use the server: report it, do not crash the run
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def cleanup() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options=-csearch_path%3D{schema}"
    return Database("postgres", url, cleanup, {
        "server_version": version, "synchronous_commit": sync_commit, "fsync": fsync, "schema": schema,
    }), None


def raw_commit_rate(engine: sa.Engine, kind: str, seconds: float) -> dict[str, float]:
    """Single-row INSERT + COMMIT on the driver connection, with the engine's own connection settings."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
                             if kind == "sqlite" else
                             "CREATE TABLE IF NOT EXISTS bench_raw (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)"))
    raw = engine.raw_connection()  # the SQLite one has isolation_level None, WAL and synchronous set on connect
    try:
        cur = raw.cursor()
        payload = "x" * 64
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        if kind == "sqlite":
            while True:
                cur.execute("BEGIN IMMEDIATE")
                cur.execute("INSERT INTO bench_raw (v) VALUES (?)", (payload,))
                cur.execute("COMMIT")
                n += 1
                if n % 16 == 0 and time.perf_counter() >= deadline:
                    break
        else:
            while True:
                cur.execute("INSERT INTO bench_raw (v) VALUES (%s)", (payload,))
                raw.commit()
                n += 1
                if n % 16 == 0 and time.perf_counter() >= deadline:
                    break
        elapsed = time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    return {"commits": n, "seconds": elapsed, "per_s": n / elapsed}


# --- the onboarding process: Careflow --------------------------------------------------------------


def new_careflow(url: str) -> Careflow:
    cf = Careflow(url, clock=FixedClock(START), registry=Registry())
    cf.deploy(DEPLOY, by="bench")
    seed_users(cf)
    return cf


def customer_profile(i: int) -> dict[str, Any]:
    """A new customer as a sales form would leave it: unnormalised phone and e-mail, no grade yet."""
    return {
        "name": f"客户{i:06d}",
        "phone": f"138 {i // 10000 % 10000:04d} {i % 10000:04d}",
        "email": f" Customer{i}@Example.COM ",
        "expected_value": float((i % 6) * 30_000),
        "owner": ASSIGNEE,
        "preferred_channel": "email",
    }


def insert_customers(cf: Careflow, count: int, first: int = 0) -> list[int]:
    now = cf.clock.now()
    rows = [
        {**customer_profile(i), "birthday_calendar": "solar", "tags": [], "consent": {"email": True, "sms": True},
         "attributes": {}, "language": "zh", "status": "active", "purchase_count": 0, "purchase_total": 0.0,
         "created_at": now, "updated_at": now}
        for i in range(first, first + count)
    ]
    with cf.sessions.begin() as s:
        s.execute(insert(Customer), rows)
        return list(s.scalars(select(Customer.id).where(Customer.name.in_([r["name"] for r in rows])).order_by(Customer.id)))


def open_tasks(cf: Careflow, instance_ids: Sequence[int]) -> list[int]:
    out: list[int] = []
    with cf.sessions() as s:
        for part in chunks(instance_ids, 500):
            out += s.scalars(select(Task.id).where(Task.instance_id.in_(list(part)), Task.status == "open").order_by(Task.id))
    return out


def careflow_series(cf: Careflow, counters: Counters, customer_ids: Sequence[int], batch: int) -> Series:
    """Start one instance per customer, then answer each one's task; batch=1 uses the Careflow facade."""
    c0, s0 = counters.snapshot()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if batch == 1:
        instances = [cf.start(FLOW, customer_id=c) for c in customer_ids]
        tasks = open_tasks(cf, instances)
        for task_id in tasks:
            cf.complete(task_id, FORM_ANSWER, ASSIGNEE)
    else:
        # The batch API: one transaction per batch of requests, falling back to one transaction per
        # request for a batch in which any request fails (none does here; the check below sees to it).
        instances = []
        for part in chunks(customer_ids, batch):
            instances += cf.start_batch(FLOW, part)
        failed = [i for i in instances if isinstance(i, Exception)]
        if failed:
            raise RuntimeError(f"careflow: {len(failed)} starts failed, e.g. {failed[0]!r}")
        tasks = open_tasks(cf, instances)
        for part in chunks(tasks, batch):
            done = cf.complete_batch([(task_id, FORM_ANSWER, ASSIGNEE) for task_id in part])
            failed = [d for d in done if isinstance(d, Exception)]
            if failed:
                raise RuntimeError(f"careflow: {len(failed)} task answers failed, e.g. {failed[0]!r}")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c1, s1 = counters.snapshot()
    check_careflow(cf, instances)
    return Series(len(customer_ids), elapsed, c1 - c0, s1 - s0, cpu)


def check_careflow(cf: Careflow, instance_ids: Sequence[int]) -> None:
    """Every instance ended as onboarded and left its two side effects in the outbox."""
    done = messages = 0
    with cf.sessions() as s:
        for part in chunks(instance_ids, 500):
            ids = list(part)
            done += s.scalar(select(func.count()).select_from(Instance).where(
                Instance.id.in_(ids), Instance.status == "completed", Instance.outcome == "onboarded")) or 0
            messages += s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.instance_id.in_(ids))) or 0
    if done != len(instance_ids) or messages != 2 * len(instance_ids):
        raise RuntimeError(f"careflow: {done}/{len(instance_ids)} instances onboarded, {messages} outbox rows "
                           f"(expected {2 * len(instance_ids)})")


# --- the onboarding process: SpiffWorkflow ---------------------------------------------------------


class Spiff:
    """bench/onboarding.bpmn on SpiffWorkflow, its serialized state kept in a table of the same database."""

    def __init__(self, engine: sa.Engine):
        from SpiffWorkflow.bpmn import BpmnWorkflow
        from SpiffWorkflow.bpmn.parser import BpmnParser
        from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
        from SpiffWorkflow.util.task import TaskState

        parser = BpmnParser()
        parser.add_bpmn_file(str(ONBOARDING_BPMN))
        self.spec = parser.get_spec("bench_onboarding")
        self.workflow_cls = BpmnWorkflow
        self.ready = TaskState.READY
        self.serializer = BpmnWorkflowSerializer()
        self.engine = engine
        meta = sa.MetaData()
        self.table = sa.Table(
            "bench_spiff_workflow", meta,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
            sa.Column("state", sa.Text, nullable=False),
        )
        meta.create_all(engine)

    def start(self, conn: sa.Connection, data: dict[str, Any]) -> int:
        """The start request: run to the user task, store the serialized state."""
        wf = self.workflow_cls(self.spec)
        wf.get_next_task(state=self.ready).data.update(data, notes=[])
        wf.do_engine_steps()
        state = self.serializer.serialize_json(wf)
        return int(conn.execute(insert(self.table).values(state=state)).inserted_primary_key[0])

    def submit(self, conn: sa.Connection, workflow_id: int, answer: dict[str, Any]) -> None:
        """The form-submission request: load, complete the user task, run to the end, store."""
        state = conn.execute(select(self.table.c.state).where(self.table.c.id == workflow_id)).scalar_one()
        wf = self.serializer.deserialize_json(state)
        task = wf.get_next_task(state=self.ready, manual=True)
        if task is None or task.task_spec.name != "welcome_call":
            raise RuntimeError(f"spiff workflow {workflow_id} is not waiting at the welcome call")
        task.data["welcome_call"] = dict(answer)
        task.run()
        wf.do_engine_steps()
        if not wf.is_completed():
            raise RuntimeError(f"spiff workflow {workflow_id} did not complete")
        conn.execute(sa.update(self.table).where(self.table.c.id == workflow_id).values(state=self.serializer.serialize_json(wf)))

    def series(self, counters: Counters, first: int, n: int, batch: int) -> Series:
        c0, s0 = counters.snapshot()
        t0, cpu0 = time.perf_counter(), time.process_time()
        ids: list[int] = []
        for part in chunks(range(first, first + n), batch):
            with self.engine.begin() as conn:
                ids += [self.start(conn, customer_profile(i)) for i in part]
        for part in chunks(ids, batch):
            with self.engine.begin() as conn:
                for wid in part:
                    self.submit(conn, wid, FORM_ANSWER)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        c1, s1 = counters.snapshot()
        return Series(n, elapsed, c1 - c0, s1 - s0, cpu)


# --- section 1: throughput on one database -------------------------------------------------------------


def throughput(db: Database, sizes: Sizes, batch: int, profile: bool) -> dict[str, Any]:
    log(f"[{db.kind}] migrating a fresh database, deploying bench/flows and bench/forms")
    cf = new_careflow(db.url)
    try:
        counters = Counters()
        counters.attach(cf.db)
        raw = raw_commit_rate(cf.db, db.kind, sizes.raw_seconds)
        log(f"[{db.kind}] raw INSERT+COMMIT: {raw['per_s']:.0f}/s")

        total = 2 * sizes.warmup + sizes.unbatched + sizes.batched
        customers = insert_customers(cf, total)
        warm1, unb, warm2, bat = (
            customers[: sizes.warmup],
            customers[sizes.warmup : sizes.warmup + sizes.unbatched],
            customers[sizes.warmup + sizes.unbatched : 2 * sizes.warmup + sizes.unbatched],
            customers[2 * sizes.warmup + sizes.unbatched :],
        )
        careflow_series(cf, counters, warm1, 1)
        settle()
        cf_unbatched = careflow_series(cf, counters, unb, 1)
        log(f"[{db.kind}] careflow, one transaction per request: {cf_unbatched.ips:.0f} instances/s")
        careflow_series(cf, counters, warm2, batch)
        settle()
        cf_batched = careflow_series(cf, counters, bat, batch)
        log(f"[{db.kind}] careflow batch API, {batch} requests per transaction: {cf_batched.ips:.0f} instances/s")

        # Delivering the outbox (the two timeline notes per instance) is the dispatcher's job, after commit.
        pending = counters.snapshot()
        t0 = time.perf_counter()
        report = cf.dispatch()
        dispatch_s = time.perf_counter() - t0
        dispatch_commits = counters.snapshot()[0] - pending[0]
        if report.sent != 2 * total or report.failed or report.unknown:
            raise RuntimeError(f"careflow outbox: {report}")
        log(f"[{db.kind}] careflow outbox delivery: {report.sent / dispatch_s:.0f} messages/s")

        spiff = Spiff(cf.db)
        spiff.series(counters, 0, sizes.warmup, 1)
        settle()
        sp_unbatched = spiff.series(counters, 10_000_000, sizes.unbatched, 1)
        log(f"[{db.kind}] spiffworkflow, one transaction per request: {sp_unbatched.ips:.0f} instances/s")
        spiff.series(counters, 0, sizes.warmup, batch)
        settle()
        sp_batched = spiff.series(counters, 20_000_000, sizes.batched, batch)
        log(f"[{db.kind}] spiffworkflow, {batch} requests per transaction: {sp_batched.ips:.0f} instances/s")

        profile_text = None
        if profile:
            extra = insert_customers(cf, sizes.batched, first=30_000_000)
            prof = cProfile.Profile()
            prof.enable()
            careflow_series(cf, counters, extra, batch)
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(25)
            profile_text = buf.getvalue()
    finally:
        cf.close()
    return {
        "raw": raw,
        "careflow_unbatched": cf_unbatched,
        "careflow_batched": cf_batched,
        "spiff_unbatched": sp_unbatched,
        "spiff_batched": sp_batched,
        "dispatch": {"messages": report.sent, "seconds": dispatch_s, "per_s": report.sent / dispatch_s,
                     "commits": dispatch_commits},
        "profile": profile_text,
    }


# --- section 2: birthdays over a million customers ------------------------------------------------------


def birthday_section(directory: Path, n: int) -> dict[str, Any]:
    from engine.calendar import birthday_key, birthday_keys_on
    from engine.flow.model import Trigger
    from engine.schedule import birthday_customers

    db = sqlite_database(directory, "birthday")
    cf = Careflow(db.url, clock=FixedClock(START), registry=Registry())
    try:
        key_of = lru_cache(maxsize=None)(birthday_key)
        rng = random.Random(20261124)
        now = cf.clock.now()
        first, span = date(1950, 1, 1).toordinal(), date(2005, 12, 31).toordinal() - date(1950, 1, 1).toordinal()
        table = Customer.__table__
        keys = {"solar": [], "lunar": []}  # type: dict[str, list[int]]
        log(f"[birthday] inserting {n:,} customers (SQLAlchemy Core executemany)")
        t0 = time.perf_counter()
        for start in range(0, n, 50_000):
            rows = []
            for i in range(start, min(start + 50_000, n)):
                if i % 7 == 0:  # one in seven keeps a lunar birthday: the date's fields are the lunar y/m/d
                    calendar = "lunar"
                    born = date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28))
                else:
                    calendar = "solar"
                    born = date.fromordinal(first + rng.randint(0, span))
                key = key_of(born, calendar)
                keys[calendar].append(key)
                rows.append({"name": f"c{i}", "birthday": born, "birthday_calendar": calendar, "birthday_key": key,
                             "status": "active", "language": "zh", "tags": [], "consent": {}, "attributes": {},
                             "purchase_count": 0, "purchase_total": 0.0, "created_at": now, "updated_at": now})
            with cf.db.begin() as conn:
                conn.execute(insert(table), rows)
        insert_s = time.perf_counter() - t0
        day = START.astimezone(SHANGHAI).date()
        trigger = Trigger(type="date", field="birthday")  # lunar=from_customer, feb29=feb28 (the defaults)
        solar, lunar = birthday_keys_on(day, feb29_rule=trigger.feb29)
        expected = sum(k in solar for k in keys["solar"]) + sum(k in lunar for k in keys["lunar"])
        runs = []
        found = 0
        for _ in range(3):
            with cf.sessions() as s:
                t1 = time.perf_counter()
                result = birthday_customers(s, day, trigger)
                runs.append(time.perf_counter() - t1)
                found = len(result)
                del result
        if found != expected:
            raise RuntimeError(f"birthday: found {found}, expected {expected}")
        plan = query_plan(cf, day, trigger)
        log(f"[birthday] {found} birthdays among {n:,} customers in {runs[0]:.3f} s")
    finally:
        cf.close()
    return {
        "customers": n, "insert_seconds": insert_s, "day": day.isoformat(), "solar_keys": sorted(solar),
        "lunar_keys": sorted(lunar), "found": found, "expected": expected, "seconds_first": runs[0],
        "seconds_best": min(runs), "plan": plan,
    }


def query_plan(cf: Careflow, day: date, trigger: Any) -> str:
    """SQLite's plan for the birthday query, to show it is an index lookup."""
    from sqlalchemy import and_, or_

    from engine.calendar import birthday_keys_on

    solar, lunar = birthday_keys_on(day, feb29_rule=trigger.feb29)
    conds = [and_(Customer.birthday_calendar == "solar", Customer.birthday_key.in_(list(solar)))]
    if lunar:
        conds.append(and_(Customer.birthday_calendar == "lunar", Customer.birthday_key.in_(list(lunar))))
    stmt = select(Customer.id).where(or_(*conds), Customer.status != "lost")
    sql = str(stmt.compile(cf.db, compile_kwargs={"literal_binds": True}))
    with cf.db.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).fetchall()
    return "; ".join(str(r[-1]) for r in rows)


# --- section 3: memory per waiting instance (child processes) --------------------------------------


def child_careflow_memory(directory: Path, n: int, traced: int) -> dict[str, Any]:
    db = sqlite_database(directory, "waiting")
    cf = Careflow(db.url, clock=FixedClock(START), registry=Registry())
    cf.deploy(DEPLOY, by="bench")
    per_tx = 1000

    def start(count: int) -> None:
        for part in chunks(range(count), per_tx):
            with cf.sessions.begin() as s:
                rt = cf.runtime()
                for _ in part:
                    start_instance(s, rt, WAIT_FLOW)

    start(2 * per_tx)  # warm-up: caches, the SQLite page cache and one batch's worth of freed memory
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    start(n)
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    tracemalloc.start()
    gc.collect()
    traced0 = tracemalloc.get_traced_memory()[0]
    start(traced)
    gc.collect()
    traced1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    with cf.sessions() as s:
        waiting = s.scalar(select(func.count()).select_from(Instance).where(Instance.status == "running")) or 0
        timers = s.scalar(select(func.count()).select_from(Timer).where(Timer.status == "pending")) or 0
    cf.close()
    total = n + traced + 2 * per_tx
    if waiting != total or timers != total:
        raise RuntimeError(f"careflow memory: {waiting} waiting instances and {timers} pending timers, expected {total}")
    return {"n": n, "rss_growth": rss1 - rss0, "rss_per_instance": (rss1 - rss0) / n, "traced_n": traced,
            "traced_per_instance": (traced1 - traced0) / traced, "traced_growth": traced1 - traced0, "start_per_s": n / elapsed, "waiting_in_db": waiting,
            "batch": per_tx}


def child_spiff_memory(n: int, traced: int) -> dict[str, Any]:
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from SpiffWorkflow.bpmn.parser import BpmnParser
    from SpiffWorkflow.util.task import TaskState

    parser = BpmnParser()
    parser.add_bpmn_file(str(WAITING_BPMN))
    parser.add_bpmn_file(str(ONBOARDING_BPMN))
    waiting_spec = parser.get_spec("bench_waiting")
    onboarding_spec = parser.get_spec("bench_onboarding")

    def waiting() -> Any:
        wf = BpmnWorkflow(waiting_spec)
        wf.do_engine_steps()
        return wf

    def onboarding(i: int) -> Any:
        wf = BpmnWorkflow(onboarding_spec)
        wf.get_next_task(state=TaskState.READY).data.update(customer_profile(i), notes=[])
        wf.do_engine_steps()
        return wf

    held = [waiting() for _ in range(50)]  # warm-up
    gc.collect()
    rss0 = rss_bytes()
    held = [waiting() for _ in range(n)]
    gc.collect()
    rss1 = rss_bytes()
    if not all(wf.get_tasks(state=TaskState.WAITING) for wf in held[:10]):
        raise RuntimeError("spiff: the workflows are not waiting on their timer")
    tracemalloc.start()
    gc.collect()
    t0 = tracemalloc.get_traced_memory()[0]
    more = [waiting() for _ in range(traced)]
    gc.collect()
    t1 = tracemalloc.get_traced_memory()[0]
    onb = [onboarding(i) for i in range(traced)]
    gc.collect()
    t2 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del more, onb
    return {"n": n, "rss_growth": rss1 - rss0, "rss_per_instance": (rss1 - rss0) / n, "traced_n": traced,
            "traced_per_instance": (t1 - t0) / traced, "traced_per_onboarding_at_task": (t2 - t1) / traced}


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def memory_section(directory: Path, sizes: Sizes) -> dict[str, Any]:
    log(f"[memory] careflow: {sizes.waiting:,} instances waiting 7 days, in a fresh process")
    careflow = run_child(["--child", "careflow-memory", "--dir", str(directory), "--n", str(sizes.waiting),
                          "--traced", str(sizes.waiting_traced)])
    log(f"[memory] careflow: {careflow['rss_per_instance']:.1f} B RSS, {careflow['traced_per_instance']:.1f} B traced per instance")
    log(f"[memory] spiffworkflow: {sizes.spiff_held:,} waiting workflows held in memory, in a fresh process")
    spiff = run_child(["--child", "spiff-memory", "--n", str(sizes.spiff_held), "--traced", str(sizes.spiff_traced)])
    log(f"[memory] spiffworkflow: {spiff['rss_per_instance']:.0f} B RSS, {spiff['traced_per_instance']:.0f} B traced per workflow")
    return {"careflow": careflow, "spiff": spiff}


# --- the report ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import SpiffWorkflow  # noqa: F401
        from importlib.metadata import version

        spiff = version("SpiffWorkflow")
    except Exception:
        spiff = None
    return {"date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "sqlalchemy": sa.__version__, "spiffworkflow": spiff, "sqlite": sqlite3.sqlite_version}


def summarize(results: dict[str, Any], batch: int, quick: bool, pg_error: str | None, elapsed: float) -> dict[str, Any]:
    out: dict[str, Any] = {"quick": quick, "batch_size": batch, "sqlite_synchronous": store_db.SQLITE_SYNCHRONOUS,
                           "sqlite_journal_mode": "WAL", "birthday_1m_seconds": None, "birthday_found": None,
                           "careflow_bytes_per_waiting_instance": None, "spiff_bytes_per_waiting_instance": None}
    for kind in ("sqlite", "postgres"):
        r = results.get(kind)
        keys = ("careflow_{k}_ips", "careflow_{k}_ips_unbatched", "spiff_{k}_ips", "spiff_{k}_ips_batched",
                "{k}_raw_commits_per_s", "careflow_{k}_commits_per_s", "careflow_{k}_commits_per_s_unbatched",
                "careflow_{k}_commit_fraction", "careflow_{k}_commit_fraction_unbatched",
                "careflow_{k}_statements_per_instance", "spiff_{k}_commits_per_s", "careflow_{k}_vs_spiff",
                "careflow_{k}_unbatched_vs_spiff", "goal_10x_{k}", "careflow_{k}_outbox_messages_per_s",
                "careflow_{k}_cpu_ms_per_instance", "careflow_{k}_cpu_ms_per_instance_unbatched",
                "spiff_{k}_cpu_ms_per_instance", "spiff_{k}_cpu_ms_per_instance_batched")
        if r is None:
            out.update({key.format(k=kind): None for key in keys})
            continue
        raw = r["raw"]["per_s"]
        cb, cu, sb, su = r["careflow_batched"], r["careflow_unbatched"], r["spiff_batched"], r["spiff_unbatched"]
        out.update({
            f"careflow_{kind}_ips": round(cb.ips, 1),
            f"careflow_{kind}_ips_unbatched": round(cu.ips, 1),
            f"spiff_{kind}_ips": round(su.ips, 1),
            f"spiff_{kind}_ips_batched": round(sb.ips, 1),
            f"{kind}_raw_commits_per_s": round(raw, 1),
            f"careflow_{kind}_commits_per_s": round(cb.commits_per_s, 1),
            f"careflow_{kind}_commits_per_s_unbatched": round(cu.commits_per_s, 1),
            f"careflow_{kind}_commit_fraction": round(cb.commits_per_s / raw, 4),
            f"careflow_{kind}_commit_fraction_unbatched": round(cu.commits_per_s / raw, 4),
            f"careflow_{kind}_statements_per_instance": round(cb.statements / cb.n, 1),
            f"spiff_{kind}_commits_per_s": round(su.commits_per_s, 1),
            f"careflow_{kind}_vs_spiff": round(cb.ips / su.ips, 2),
            f"careflow_{kind}_unbatched_vs_spiff": round(cu.ips / su.ips, 2),
            f"goal_10x_{kind}": cb.ips >= 10 * su.ips,
            f"careflow_{kind}_outbox_messages_per_s": round(r["dispatch"]["per_s"], 1),
            # CPU time of this process per instance: what the figures above come to when neither the
            # disk nor the database server (nor other processes on the machine) make anyone wait.
            f"careflow_{kind}_cpu_ms_per_instance": round(cb.cpu_ms_per_instance, 3),
            f"careflow_{kind}_cpu_ms_per_instance_unbatched": round(cu.cpu_ms_per_instance, 3),
            f"spiff_{kind}_cpu_ms_per_instance": round(su.cpu_ms_per_instance, 3),
            f"spiff_{kind}_cpu_ms_per_instance_batched": round(sb.cpu_ms_per_instance, 3),
            f"{kind}_instances": {"unbatched": cu.n, "batched": cb.n},
        })
        out[f"{kind}_settings"] = r["settings"]
    if pg_error:
        out["postgres_error"] = pg_error
    b = results.get("birthday")
    if b:
        out.update({"birthday_1m_seconds": round(b["seconds_first"], 4), "birthday_found": b["found"],
                    "birthday_customers": b["customers"], "birthday_best_seconds": round(b["seconds_best"], 4),
                    "birthday_insert_seconds": round(b["insert_seconds"], 1), "birthday_day": b["day"],
                    "birthday_query_plan": b["plan"], "birthday_under_2s": b["seconds_first"] < 2.0})
    m = results.get("memory")
    if m:
        c, s = m["careflow"], m["spiff"]
        out.update({
            "careflow_bytes_per_waiting_instance": round(c["rss_per_instance"], 1),
            "careflow_traced_bytes_per_waiting_instance": round(c["traced_per_instance"], 1),
            "careflow_waiting_rss_growth_bytes": c["rss_growth"],
            "careflow_waiting_traced_growth_bytes": c["traced_growth"],
            "careflow_waiting_traced_instances": c["traced_n"],
            "careflow_waiting_instances": c["n"],
            "careflow_waiting_start_per_s": round(c["start_per_s"], 1),
            "spiff_bytes_per_waiting_instance": round(s["rss_per_instance"], 1),
            "spiff_traced_bytes_per_waiting_instance": round(s["traced_per_instance"], 1),
            "spiff_traced_bytes_per_onboarding_workflow": round(s["traced_per_onboarding_at_task"], 1),
            "spiff_waiting_instances": s["n"],
        })
    out["machine"] = machine()
    out["total_seconds"] = round(elapsed, 1)
    return out


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def table(out: dict[str, Any]) -> str:
    b = out["batch_size"]
    mach = out["machine"]
    lines = [
        f"Careflow engine benchmark{' (--quick)' if out['quick'] else ''} — {mach['date']}",
        f"{mach['cpus']} CPUs ({mach['cpu']}), Python {mach['python']}, SQLAlchemy {mach['sqlalchemy']}, "
        f"SpiffWorkflow {mach['spiffworkflow']}",
        f"SQLite {mach['sqlite']}: journal_mode=WAL, synchronous={out['sqlite_synchronous']} "
        f"(CAREFLOW_SQLITE_SYNCHRONOUS; Careflow's default is FULL), BEGIN IMMEDIATE",
    ]
    pg = out.get("postgres_settings")
    if pg:
        lines.append(f"PostgreSQL {pg['server_version']}: synchronous_commit={pg['synchronous_commit']}, fsync={pg['fsync']}")
    elif out.get("postgres_error") == "skipped":
        lines.append("PostgreSQL: skipped (--skip postgres); its figures are n/a")
    elif out.get("postgres_error"):
        lines.append(f"PostgreSQL: unreachable ({out['postgres_error']}); its figures are n/a")
    lines += [
        "",
        "1. Onboarding process, instances per second end to end (start request + form submission, to the end)",
        f"{'':44}{'SQLite':>12}{'PostgreSQL':>14}",
    ]

    def row(label: str, key: str, unit: str = "") -> None:
        lines.append(f"{label:44}{fmt(out.get(key.format(k='sqlite')), unit):>12}{fmt(out.get(key.format(k='postgres')), unit):>14}")

    row("Careflow, 1 transaction per request", "careflow_{k}_ips_unbatched")
    row(f"Careflow batch API, {b} requests per tx", "careflow_{k}_ips")
    row("SpiffWorkflow, 1 transaction per request", "spiff_{k}_ips")
    row(f"SpiffWorkflow, {b} requests per transaction", "spiff_{k}_ips_batched")
    row("Careflow batched / SpiffWorkflow (goal 10×)", "careflow_{k}_vs_spiff", "×")
    row("Careflow unbatched / SpiffWorkflow", "careflow_{k}_unbatched_vs_spiff", "×")
    lines.append(f"{'10× goal met':44}{fmt(out.get('goal_10x_sqlite')):>12}{fmt(out.get('goal_10x_postgres')):>14}")
    row("Raw single-row INSERT+COMMIT per second", "{k}_raw_commits_per_s")
    row("Careflow commits/s, unbatched", "careflow_{k}_commits_per_s_unbatched")
    for kind_key, label in (("careflow_{k}_commit_fraction_unbatched", "  as a fraction of raw"),):
        vals = [out.get(kind_key.format(k=k)) for k in ("sqlite", "postgres")]
        lines.append(f"{label:44}" + "".join(f"{('n/a' if v is None else f'{v:.2%}'):>{w}}" for v, w in zip(vals, (12, 14))))
    row(f"Careflow commits/s, batched ({b}/tx)", "careflow_{k}_commits_per_s")
    vals = [out.get(f"careflow_{k}_commit_fraction") for k in ("sqlite", "postgres")]
    lines.append(f"{'  as a fraction of raw':44}" + "".join(f"{('n/a' if v is None else f'{v:.2%}'):>{w}}" for v, w in zip(vals, (12, 14))))
    row("SQL statements per Careflow instance", "careflow_{k}_statements_per_instance")
    row("Careflow outbox delivery, messages/s", "careflow_{k}_outbox_messages_per_s")
    row("CPU ms per instance, Careflow batch API", "careflow_{k}_cpu_ms_per_instance")
    row("CPU ms per instance, SpiffWorkflow", "spiff_{k}_cpu_ms_per_instance")
    if out["birthday_1m_seconds"] is not None:
        lines += [
            "",
            f"2. Birthday trigger: {out['birthday_customers']:,} customers on SQLite, day {out['birthday_day']}",
            f"   birthday_customers(): {out['birthday_found']:,} found (solar and lunar) in {out['birthday_1m_seconds']:.3f} s "
            f"(best of 3: {out['birthday_best_seconds']:.3f} s; goal < 2 s: {'met' if out['birthday_under_2s'] else 'NOT met'})",
            f"   plan: {out['birthday_query_plan']}",
            f"   (bulk insert of the customers took {out['birthday_insert_seconds']} s)",
        ]
    if out["careflow_bytes_per_waiting_instance"] is not None:
        lines += [
            "",
            "3. Memory per waiting instance (fresh process each)",
            f"   Careflow, {out['careflow_waiting_instances']:,} instances waiting 7 days (SQLite): "
            f"{out['careflow_bytes_per_waiting_instance']:.1f} B RSS growth per instance "
            f"({out['careflow_waiting_rss_growth_bytes']:,} B in all); started at {out['careflow_waiting_start_per_s']:,.0f}/s "
            "in batches of 1000",
            f"   Careflow under tracemalloc, {out['careflow_waiting_traced_instances']:,} more: "
            f"{out['careflow_waiting_traced_growth_bytes']:,} B retained in all, "
            f"{out['careflow_traced_bytes_per_waiting_instance']:.1f} B per instance (bounded caches, not per-instance state)",
            f"   SpiffWorkflow, {out['spiff_waiting_instances']:,} workflows held waiting on a 7-day timer: "
            f"{out['spiff_bytes_per_waiting_instance']:,.0f} B RSS, {out['spiff_traced_bytes_per_waiting_instance']:,.0f} B traced "
            f"per workflow ({out['spiff_traced_bytes_per_onboarding_workflow']:,.0f} B for the onboarding workflow at its user task)",
        ]
    for name, message in (out.get("errors") or {}).items():
        lines.append(f"\nFAILED: {name}: {message}")
    lines += ["", f"total {out['total_seconds']} s"]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="small counts, a few seconds (CI smoke test)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"requests per transaction when batching (default {DEFAULT_BATCH})")
    parser.add_argument("--dir", type=Path, help="directory for the SQLite files (default: a fresh temporary directory)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one batched Careflow series on SQLite (to stderr)")
    parser.add_argument("--skip", action="append", default=[], choices=["sqlite", "postgres", "birthday", "memory"],
                        help="leave a section out (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "careflow-memory":
        print(json.dumps(child_careflow_memory(args.dir, args.n, args.traced)))
        return 0
    if args.child == "spiff-memory":
        print(json.dumps(child_spiff_memory(args.n, args.traced)))
        return 0
    if args.batch < 1:
        parser.error("--batch must be at least 1")

    sizes = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    pg_error = None

    def section(name: str, run: Callable[[], Any]) -> None:
        try:
            results[name] = run()
        except Exception as exc:  # report the failure with the other figures instead of losing the run
            log(f"[{name}] FAILED:\n{traceback.format_exc()}")
            errors[name] = f"{type(exc).__name__}: {exc}"

    with tempfile.TemporaryDirectory(prefix="careflow-bench-", dir=args.dir) as tmp:
        directory = Path(tmp)
        if "sqlite" not in args.skip:
            db = sqlite_database(directory, "onboarding")
            section("sqlite", lambda: {**throughput(db, sizes, args.batch, args.profile), "settings": db.settings})
        if "postgres" not in args.skip:
            pg, pg_error = postgres_database(postgres_base_url())
            if pg is None:
                log(f"[postgres] unreachable at {postgres_base_url()}: {pg_error}; its figures are null")
            else:
                try:
                    section("postgres", lambda: {**throughput(pg, sizes, args.batch, False), "settings": pg.settings})
                finally:
                    pg.cleanup()
        else:
            pg_error = "skipped"
        if "birthday" not in args.skip:
            section("birthday", lambda: birthday_section(directory, sizes.customers))
        if "memory" not in args.skip:
            section("memory", lambda: memory_section(directory, sizes))
    out = summarize(results, args.batch, args.quick, pg_error, time.perf_counter() - t_start)
    if errors:
        out["errors"] = errors
    profile = (results.get("sqlite") or {}).get("profile")
    if profile:
        log(profile)
    print(json.dumps(out, ensure_ascii=False, indent=2) if args.json else table(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
