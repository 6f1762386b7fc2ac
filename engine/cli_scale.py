"""``careflow scheduler``, ``careflow worker`` and the distributed ``careflow run`` (gunicorn).

All three need ``CAREFLOW_BROKER_URL`` (and, to be useful on several machines,
``CAREFLOW_DATABASE_URL=postgresql+psycopg://…``). ``CAREFLOW_FACTORY=module:function`` names a
function returning the ``Careflow`` to use instead of the default one (extra connectors, a test
clock); ``CAREFLOW_CLOCK_FILE`` makes every process read the time from one file.
``CAREFLOW_PROFILE=PATH`` runs a scheduler or a worker (its own process: the solo or threads pool)
under cProfile, counting CPU time, and writes the statistics to ``PATH.<pid>`` when it stops
(``python -m pstats``); for finding where the time per transition goes, not for production.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from engine.cli import State
from engine.clock import FileClock

log = logging.getLogger(__name__)


def _broker() -> str:
    from engine.executors import broker_url

    try:
        url = broker_url()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not url:
        raise click.UsageError(
            "set CAREFLOW_BROKER_URL (redis://… or amqp://…) for the distributed mode; "
            "without it `careflow run` does everything in one process / 未设置 CAREFLOW_BROKER_URL"
        )
    return url


@contextmanager
def _profiled() -> Iterator[None]:
    """Profile the process's CPU time when ``CAREFLOW_PROFILE`` is set (see the module's docstring)."""
    path = os.environ.get("CAREFLOW_PROFILE")
    if not path:
        yield
        return
    import cProfile

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(f"{path}.{os.getpid()}")


def build_engine(state: State, *, migrate: bool = False) -> Any:
    """The ``Careflow`` of this process: ``CAREFLOW_FACTORY`` if set, else the database URL's."""
    factory = os.environ.get("CAREFLOW_FACTORY")
    if factory:
        module, _, name = factory.partition(":")
        if not module or not name:
            raise click.UsageError(f"CAREFLOW_FACTORY={factory!r} must look like package.module:function")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise click.UsageError(f"CAREFLOW_FACTORY={factory!r} cannot be loaded: {exc}") from exc
        return fn()
    from engine.core import Careflow
    from engine.store.db import database_url

    clock_file = os.environ.get("CAREFLOW_CLOCK_FILE")
    clock = FileClock(clock_file) if clock_file else state.clock(running=True)
    return Careflow(state.database or database_url(), clock=clock, migrate_schema=migrate)


@click.command()
@click.option("--interval", default=0.5, show_default=True, type=float, help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Tick once, print what was published, and exit.")
@click.pass_obj
def scheduler(state: State, interval: float, once: bool) -> None:
    """Tick: fire triggers, claim due timers and messages, publish them to the workers (distributed mode).

    Any number of schedulers may run; the database decides which one claims what.
    """
    import dataclasses

    from engine.executors import CeleryPublisher, celery_config, register_tasks
    from engine.scale import Scheduler, Settings

    url = _broker()
    if interval <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--interval")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    from celery import Celery

    celery_app = Celery("careflow", set_as_current=False)
    celery_app.config_from_object(celery_config(url))
    register_tasks(celery_app)
    cf = build_engine(state)
    sched = Scheduler(cf, CeleryPublisher(celery_app), settings)
    if once:
        state.emit(dataclasses.asdict(sched.tick()))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s scheduler %(message)s")
    stopping = {"now": False}

    def stop(_sig: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"Careflow scheduler ticking every {interval} s, lease {settings.lease.total_seconds():.0f} s")
    with _profiled():
        sched.run_forever(interval, stop=lambda: stopping["now"])


@click.command()
@click.option("--concurrency", "-c", default=None, type=int, help="Processes (or threads) of this worker; default: the CPU count.")
@click.option("--pool", default="prefork", show_default=True, type=click.Choice(["prefork", "solo", "threads"]))
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--name", "hostname", default=None, help="Celery node name (default careflow@HOST-PID).")
@click.pass_obj
def worker(state: State, concurrency: int | None, pool: str, loglevel: str, hostname: str | None) -> None:
    """A Celery worker: fires claimed timers and delivers claimed messages (distributed mode)."""
    from celery.signals import worker_process_init

    from engine.app import create_app
    from engine.executors import QUEUE

    _broker()
    cf = build_engine(state)
    app = create_app(engine=cf)
    celery_app = app.extensions["celery"]

    @worker_process_init.connect(weak=False)
    def _fresh_connections(**_kwargs: Any) -> None:
        # A forked pool process must not share the parent's database connections.
        cf.db.dispose(close=False)

    import socket

    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={QUEUE}",
            f"--hostname={hostname or f'careflow@{socket.gethostname()}-{os.getpid()}'}",
            "--without-gossip", "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    with _profiled():
        celery_app.worker_main(argv)


@click.command()
@click.option("--max-lag", default=60.0, show_default=True, type=float,
              help="Unhealthy when due work has waited unclaimed longer than this many seconds (no scheduler running).")
@click.option("--ping-workers/--no-ping-workers", default=True, show_default=True, help="Ask the Celery workers to answer.")
@click.pass_obj
def health(state: State, max_lag: float, ping_workers: bool) -> None:
    """Check the distributed mode: database, broker, workers, and how long due work has waited.

    Exit 0 when healthy, 1 otherwise; usable as a systemd or docker-compose health check.
    """
    from celery import Celery
    from sqlalchemy import func, or_, select

    from engine.executors import celery_config
    from engine.scale import in_flight, wall_now
    from engine.store.models import OutboxMessage, Timer

    url = _broker()
    problems: list[str] = []
    out: dict[str, Any] = {}
    cf = build_engine(state)
    try:
        now, wall = cf.clock.now(), wall_now()
        with cf.sessions() as s:
            oldest_timer = s.scalar(select(func.min(Timer.due_at)).where(
                Timer.status == "pending", Timer.due_at <= now, or_(Timer.lease_until.is_(None), Timer.lease_until < wall)))
            oldest_message = s.scalar(select(func.min(OutboxMessage.next_attempt_at)).where(
                OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now))
            out["in_flight"] = in_flight(s, wall)
        oldest = min((d for d in (oldest_timer, oldest_message) if d is not None), default=None)
        out["database"] = "ok"
        out["oldest_unclaimed_due_seconds"] = round((now - oldest).total_seconds(), 1) if oldest else 0.0
        if oldest is not None and (now - oldest).total_seconds() > max_lag:
            problems.append(f"due work has waited {out['oldest_unclaimed_due_seconds']} s unclaimed: is a scheduler running? "
                            "/ 到期任务长时间未被领取：调度器是否在运行？")
    except Exception as exc:  # report it, never a traceback
        out["database"] = "unreachable"
        problems.append(f"database: {exc}".splitlines()[0])
    finally:
        cf.close()
    celery_app = Celery("careflow", set_as_current=False)
    celery_app.config_from_object(celery_config(url))
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        out["broker"] = "ok"
        if ping_workers:
            replies = celery_app.control.ping(timeout=2.0) or []
            out["workers"] = sorted(name for reply in replies for name in reply)
            if not replies:
                problems.append("no worker answered / 没有工作进程响应")
    except Exception as exc:
        out["broker"] = "unreachable"
        problems.append(f"broker: {exc}".splitlines()[0])
    out["ok"] = not problems
    out["problems"] = problems
    state.emit(out, lambda d: "\n".join([f"{k}: {v}" for k, v in d.items() if k not in ("problems", "ok")]
                                          + [f"problem: {p}" for p in d["problems"]] + ["healthy" if d["ok"] else "UNHEALTHY"]))
    if problems:
        raise SystemExit(1)


@click.command()
@click.pass_obj
def migrate(state: State) -> None:
    """Upgrade the database schema to this version's newest Alembic revision, then exit.

    Run it once per upgrade, before starting the new schedulers and workers (which never migrate).
    """
    from alembic.migration import MigrationContext

    from engine.store.db import database_url, make_engine
    from engine.store.db import migrate as upgrade

    engine = make_engine(state.database or database_url())
    try:
        with engine.connect() as conn:
            before = MigrationContext.configure(conn).get_current_revision()
        upgrade(engine)
        with engine.connect() as conn:
            after = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    state.emit({"from": before, "to": after}, f"database schema: {before or '(empty)'} -> {after}")


def serve_web(state: State, host: str, port: int, workers: int) -> None:
    """Serve the web pages and the API with gunicorn; the schedulers tick, not this process."""
    from gunicorn.app.base import BaseApplication

    _broker()

    class WebServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", 4)
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            # Built in each gunicorn worker, after the fork: one connection pool per process.
            from engine.app import create_app

            return create_app(engine=build_engine(state))

    build_engine(state, migrate=True).close()  # migrate once, before the workers start
    click.echo(f"Careflow web on http://{host}:{port}/ (distributed mode: run `careflow scheduler` and `careflow worker`)")
    WebServer().run()


__all__ = ["build_engine", "health", "migrate", "scheduler", "serve_web", "worker"]
