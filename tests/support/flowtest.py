"""Small helpers for end-to-end flow tests: move the clock, find the open task."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engine.clock import FixedClock
from engine.core import Careflow


def at(cf: Careflow, clock: FixedClock, when: datetime) -> dict[str, Any]:
    """Set the clock and process everything due then."""
    clock.set(when)
    return cf.tick()


def later(cf: Careflow, clock: FixedClock, **delta: float) -> dict[str, Any]:
    return at(cf, clock, clock.now() + timedelta(**delta))


def only_task(cf: Careflow, instance_id: int) -> dict[str, Any]:
    open_tasks = [t for t in cf.tasks(instance_id=instance_id) if t["status"] == "open"]
    assert len(open_tasks) == 1, open_tasks
    return open_tasks[0]


def status(cf: Careflow, instance_id: int) -> tuple[str, str | None]:
    info = cf.describe(instance_id)
    return info["status"], info["outcome"]


def customer(cf: Careflow, customer_id: int) -> dict[str, Any]:
    from engine.store.customers import customer_dict, get_customer

    with cf.session() as s:
        return customer_dict(get_customer(s, customer_id))


def timeline_kinds(cf: Careflow, customer_id: int) -> list[str]:
    from sqlalchemy import select

    from engine.store.models import TimelineEntry

    with cf.session() as s:
        return list(s.scalars(select(TimelineEntry.kind).where(TimelineEntry.customer_id == customer_id).order_by(TimelineEntry.id)))
