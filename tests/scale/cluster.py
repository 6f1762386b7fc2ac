"""A distributed Careflow on this machine: real ``careflow scheduler`` / ``careflow worker`` processes.

Used by tests/scale and bench/scale.py. The database is a fresh PostgreSQL schema, the broker a
real Redis or RabbitMQ with a queue of its own per run, the time a clock file every process reads.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy import func, select

from engine.core import Careflow
from engine.clock import FixedClock
from engine.store.instances import start_instance
from engine.store.models import Incident, Instance, OutboxMessage, StepExecution, Timer
from tests.scale.support import FLOW_ID, FLOWS, ledger_counts, registry

REPO = Path(__file__).resolve().parents[2]
CAREFLOW = str(Path(sys.executable).with_name("careflow"))
REDIS_URL = os.environ.get("CAREFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("CAREFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
               "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


def write_clock(path: Path, at: datetime) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(at.isoformat())
    os.replace(tmp, path)  # readers never see a half-written time


def redis_up() -> bool:
    try:
        return subprocess.run(["redis-cli", "ping"], capture_output=True, text=True, timeout=5).stdout.strip() == "PONG"
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_redis() -> None:
    if redis_up():
        return
    subprocess.run(REDIS_START, check=False, capture_output=True, timeout=30)
    for _ in range(100):
        if redis_up():
            return
        time.sleep(0.1)
    raise RuntimeError("redis-server did not come back: " + " ".join(REDIS_START))


def stop_redis() -> None:
    subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=10, check=False)
    for _ in range(50):
        if not redis_up():
            return
        time.sleep(0.1)


@dataclass
class Cluster:
    database_url: str
    broker_url: str
    workdir: Path
    start: datetime
    lease_seconds: float = 10.0
    max_in_flight: int = 200
    scheduler_interval: float = 0.2
    worker_pool: str = "solo"
    worker_concurrency: int = 1
    queue: str = field(default_factory=lambda: f"careflow-test-{uuid.uuid4().hex[:10]}")
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    schedulers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    worker_names: list[str] = field(default_factory=list)
    #: More environment for every scheduler and worker (e.g. a slow provider, a task batch size).
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.clock_file = self.workdir / "clock"
        self.ledger = self.workdir / "ledger.tsv"
        write_clock(self.clock_file, self.start)
        self.cf = Careflow(self.database_url, clock=FixedClock(self.start), registry=registry())
        self.cf.deploy([FLOWS])

    # ----- processes -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_CRASH_")}
        env.update({
            "CAREFLOW_DATABASE_URL": self.database_url,
            "CAREFLOW_BROKER_URL": self.broker_url,
            "CAREFLOW_FACTORY": "tests.scale.support:build",
            "CAREFLOW_CLOCK_FILE": str(self.clock_file),
            "CAREFLOW_SCALE_LEDGER": str(self.ledger),
            "CAREFLOW_LEASE_SECONDS": str(self.lease_seconds),
            "CAREFLOW_MAX_IN_FLIGHT": str(self.max_in_flight),
            "CAREFLOW_QUEUE": self.queue,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        })
        env.update(self.extra_env)
        return env

    def _spawn(self, args: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen([CAREFLOW, *args], cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_worker(self, index: int | None = None) -> subprocess.Popen[bytes]:
        index = len(self.workers) if index is None else index
        name = f"w{index}-{uuid.uuid4().hex[:6]}@scale"
        self.worker_names.append(name)
        proc = self._spawn(["worker", f"--pool={self.worker_pool}", f"--concurrency={self.worker_concurrency}",
                            "--loglevel=WARNING", f"--name={name}"], f"worker{index}")
        if index < len(self.workers):
            self.workers[index] = proc
        else:
            self.workers.append(proc)
        return proc

    def start_scheduler(self, index: int | None = None) -> subprocess.Popen[bytes]:
        index = len(self.schedulers) if index is None else index
        proc = self._spawn(["scheduler", f"--interval={self.scheduler_interval}"], f"scheduler{index}")
        if index < len(self.schedulers):
            self.schedulers[index] = proc
        else:
            self.schedulers.append(proc)
        return proc

    def wait_workers(self, timeout: float = 120) -> None:
        """Until every worker started last (one per index) answers a ping: ready to take tasks."""
        from celery import Celery

        from engine.executors import celery_config

        app = Celery("careflow-test", set_as_current=False)
        app.config_from_object(celery_config(self.broker_url))
        wanted = set(self.worker_names[-len(self.workers):]) if self.workers else set()
        deadline = time.monotonic() + timeout
        while True:
            replies = app.control.ping(destination=sorted(wanted), timeout=1.0) or []
            if wanted <= {name for reply in replies for name in reply}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not ready after {timeout:.0f} s\n{self.logs()}")

    @staticmethod
    def kill9(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and its children (a prefork pool), as a machine failure would."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        procs = [p for p in self.workers + self.schedulers if p.poll() is None]
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill9(p)
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.cf.close()
        self._drop_queue()

    def _drop_queue(self) -> None:
        """Leave no queue of this run behind on the shared broker (best effort)."""
        from kombu import Connection

        try:
            with Connection(self.broker_url, connect_timeout=3) as conn:
                conn.default_channel.queue_delete(self.queue)
        except Exception:
            pass

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the live schedulers and workers used so far, from /proc (Linux)."""
        total = 0.0
        for p in self.workers + self.schedulers:
            try:
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def dead(self) -> list[str]:
        """Processes that exited although nobody stopped them (a crash is a test failure)."""
        return [f"{kind}{i} exited with {p.returncode}" for kind, procs in (("worker", self.workers), ("scheduler", self.schedulers))
                for i, p in enumerate(procs) if p.poll() is not None]

    def logs(self) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    # ----- work ---------------------------------------------------------------------------------

    def start_instances(self, n: int, spacing: timedelta = timedelta(0), batch: int = 500) -> list[int]:
        """``n`` instances of the test flow; instance i starts at ``start + i*spacing`` (its timer is due a day later)."""
        ids: list[int] = []
        clock = self.cf.clock
        assert isinstance(clock, FixedClock)
        for first in range(0, n, batch):
            with self.cf.transition() as s:
                for i in range(first, min(n, first + batch)):
                    clock.set(self.start + i * spacing)
                    ids.append(start_instance(s, self.cf.runtime(), FLOW_ID, trigger={"type": "manual"}).id)
        clock.set(self.start)
        return ids

    def advance(self, to: datetime) -> None:
        write_clock(self.clock_file, to)

    def completed(self) -> int:
        with self.cf.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Instance).where(Instance.status == "completed")) or 0)

    def wait_completed(self, n: int, timeout: float, *, on_progress: Any = None) -> float:
        t0 = time.monotonic()
        while True:
            done = self.completed()
            if on_progress is not None:
                on_progress(done)
            if done >= n:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"only {done}/{n} instances completed after {timeout:.0f} s; "
                                     f"{self.report()}\n{self.logs()}")
            time.sleep(0.2)

    def report(self) -> dict[str, Any]:
        """What the checks of RELIABILITY T01/T08 read: states, the execution log, the provider's log."""
        with self.cf.sessions() as s:
            statuses = dict(s.execute(select(Instance.status, func.count()).group_by(Instance.status)).all())
            outbox = dict(s.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
            timers = dict(s.execute(select(Timer.status, func.count()).group_by(Timer.status)).all())
            dup_exec = s.execute(
                select(StepExecution.kind, StepExecution.ref_id).where(StepExecution.outcome == "done")
                .group_by(StepExecution.kind, StepExecution.ref_id).having(func.count() > 1)
            ).all()
            executions = dict(s.execute(select(StepExecution.kind, func.count()).where(StepExecution.outcome == "done")
                                        .group_by(StepExecution.kind)).all())
            incidents = int(s.scalar(select(func.count()).select_from(Incident)) or 0)
            keys = set(s.scalars(select(OutboxMessage.effect_key)))
        sends = ledger_counts(self.ledger)
        per_key = {key for key, _attempt in sends}
        return {
            "instances": statuses,
            "outbox": outbox,
            "timers": timers,
            "executions": executions,
            "duplicate_steps": len(dup_exec),
            "provider_requests": sum(sends.values()),
            # Two requests under one claim: fencing failed. Never allowed.
            "duplicate_sends": sum(c - 1 for c in sends.values() if c > 1),
            # Requests repeated with the same key by a newer claim, after a worker died between the
            # provider call and recording it; the provider de-duplicates them on the key.
            "resends": sum(sends.values()) - len(per_key),
            "unsent": len(keys - set(per_key)),
            "incidents": incidents,
        }


def have(command: str) -> bool:
    return shutil.which(command) is not None


def engine_ready(url: str) -> bool:
    try:
        e = sa.create_engine(url)
        with e.connect() as c:
            c.execute(sa.text("select 1"))
        e.dispose()
        return True
    except Exception:
        return False
