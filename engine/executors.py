"""Where work runs: inline in the ticking process (embedded), or on Celery workers (distributed).

Without ``CAREFLOW_BROKER_URL`` nothing here is used: ``careflow run`` ticks itself and does the
work inline. With it, ``celery_init_app`` (the Flask pattern, ``app.extensions["celery"]``)
builds a Celery app whose tasks carry ids and attempt numbers only (a batch of them per task), are acknowledged late,
rejected (so redelivered) when the worker process dies, and are idempotent: the attempt number
fences them (see ``engine.scale``). Nothing is ever published with an ETA or countdown: timers
stay rows until due.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from flask import Flask, current_app

if TYPE_CHECKING:
    from engine.core import Careflow

#: The broker queue; ``CAREFLOW_QUEUE`` lets several installations (or test runs) share one broker.
QUEUE = os.environ.get("CAREFLOW_QUEUE", "careflow")
FIRE_TIMER = "careflow.fire_timer"
DELIVER_MESSAGE = "careflow.deliver_message"
#: Batches: one task carries several ``[id, attempt]`` claims (``CAREFLOW_TASK_BATCH``).
FIRE_TIMERS = "careflow.fire_timers"
DELIVER_MESSAGES = "careflow.deliver_messages"
#: Publishing gives up after about a second when the broker is down; the claims are handed back.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}


def broker_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``CAREFLOW_BROKER_URL`` (``redis://…`` or ``amqp://…``), or None for the embedded mode."""
    env = os.environ if environ is None else environ
    url = (env.get("CAREFLOW_BROKER_URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")):
        raise ValueError(f"CAREFLOW_BROKER_URL={url.split('@')[-1]!r} is not a redis:// or amqp:// URL")
    return url


def celery_config(url: str) -> dict[str, Any]:
    return {
        "broker_url": url,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once: acknowledge after the task ran, and redeliver if the process died.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2.0,
        "task_publish_retry_policy": PUBLISH_RETRY,
        # No ETAs are used, so the visibility timeout only bounds how late Redis redelivers a task
        # of a dead worker; the database lease has usually handed the work out again long before.
        "broker_transport_options": {"visibility_timeout": 3600},
        "worker_hijack_root_logger": False,
    }


def celery_init_app(app: Flask) -> Celery | None:
    """Attach a Celery app to the Flask app when a broker URL is configured (distributed mode)."""
    url = app.config.get("BROKER_URL") or broker_url()
    if not url:
        return None

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask, set_as_current=False)
    celery_app.config_from_object(celery_config(str(url)))
    register_tasks(celery_app)
    app.extensions["celery"] = celery_app
    return celery_app


def _careflow() -> Careflow:
    return current_app.extensions["careflow"]  # type: ignore[no-any-return]


def register_tasks(celery_app: Celery) -> None:
    common = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}

    @celery_app.task(name=FIRE_TIMER, **common)
    def fire_timer(timer_id: int, attempt: int) -> str:
        from engine.scale import run_timer

        return run_timer(_careflow(), int(timer_id), int(attempt))

    @celery_app.task(name=DELIVER_MESSAGE, **common)
    def deliver_message(message_id: int, attempt: int) -> dict[str, int]:
        from engine.scale import run_message

        report = run_message(_careflow(), int(message_id), int(attempt))
        return {"sent": report.sent, "failed": report.failed, "unknown": report.unknown}

    # The single-claim tasks above stay for tasks published by older schedulers during an upgrade.
    @celery_app.task(name=FIRE_TIMERS, **common)
    def fire_timers(claims: list[list[int]]) -> list[str]:
        from engine.scale import run_timers

        return run_timers(_careflow(), _pairs(claims))

    @celery_app.task(name=DELIVER_MESSAGES, **common)
    def deliver_messages(claims: list[list[int]]) -> dict[str, int]:
        from engine.scale import run_messages

        report = run_messages(_careflow(), _pairs(claims))
        return {"sent": report.sent, "failed": report.failed, "unknown": report.unknown}


def _pairs(claims: list[list[int]]) -> list[tuple[int, int]]:
    return [(int(i), int(attempt)) for i, attempt in claims]


class InlinePublisher:
    """Does the claimed work at once in this process: the embedded counterpart of ``CeleryPublisher``.

    ``careflow run`` without a broker ticks through ``Careflow.tick``; this executor runs the
    scheduler's claim-and-fence path in one process (tests, a single machine on PostgreSQL).
    """

    def __init__(self, cf: Careflow):
        self.cf = cf

    def fire_timers(self, claims: list[tuple[int, int]]) -> None:
        from engine.scale import run_timers

        run_timers(self.cf, claims)

    def deliver_messages(self, claims: list[tuple[int, int]]) -> None:
        from engine.scale import run_messages

        run_messages(self.cf, claims)


def publisher_for(app: Flask) -> CeleryPublisher | InlinePublisher:
    """Celery when the app has a broker (``app.extensions["celery"]``), else inline."""
    celery_app = app.extensions.get("celery")
    return CeleryPublisher(celery_app) if celery_app is not None else InlinePublisher(app.extensions["careflow"])


class CeleryPublisher:
    """Publishes claimed work by task name (ids and attempt numbers only, no ETA)."""

    def __init__(self, celery_app: Celery):
        self.celery = celery_app

    def fire_timers(self, claims: list[tuple[int, int]]) -> None:
        self._send(FIRE_TIMERS, claims)

    def deliver_messages(self, claims: list[tuple[int, int]]) -> None:
        self._send(DELIVER_MESSAGES, claims)

    def _send(self, name: str, claims: list[tuple[int, int]]) -> None:
        # ``argsrepr``: what monitoring shows of the task's arguments. Celery would otherwise build
        # a bounded repr of every batch of claims, about a tenth of a scheduler's CPU time.
        self.celery.send_task(name, args=[[list(c) for c in claims]], queue=QUEUE, retry_policy=PUBLISH_RETRY,
                              argsrepr=f"[{len(claims)} claims: {claims[0][0]}..{claims[-1][0]}]" if claims else "[]",
                              kwargsrepr="{}")


__all__ = ["CeleryPublisher", "InlinePublisher", "broker_url", "celery_config", "celery_init_app", "publisher_for", "register_tasks"]
