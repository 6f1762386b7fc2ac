"""The in-process ticker: APScheduler calls ``Careflow.tick`` every second, and nothing else.

APScheduler keeps no jobs of ours in a store: timers and triggers are rows, so a missed tick
only delays work; the next tick finds everything that fell due.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler

if TYPE_CHECKING:
    from engine.core import Careflow

log = logging.getLogger(__name__)


def start_ticker(engine: Careflow, seconds: float = 1.0) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def tick() -> None:
        try:
            engine.tick()
        except Exception:  # a failing tick must not stop the next one
            log.exception("tick failed")

    scheduler.add_job(tick, "interval", seconds=seconds, id="careflow-tick")
    scheduler.start()
    return scheduler
