"""An event for an instance that has already ended (completed or cancelled) changes nothing of it.

The interpreter ignores it (a history entry says so); the store must not end the instance a second
time: its end time stays, the customer's timeline gets no second "flow ended", its revision stays.
The realistic case is a message's result arriving after the instance was cancelled meanwhile,
on the one-message path and on the grouped path of the distributed mode alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.scale import Settings, claim_timers, run_timers, wall_now
from engine.store.instances import start_instance
from engine.store.models import HistoryEntry, Instance, TimelineEntry
from tests.conftest import START
from tests.integration.test_outbox_group import _ScriptedProvider
from tests.scale.support import FLOW_ID, FLOWS, LoggingProvider

LEASE = timedelta(seconds=30)
DUE = START + timedelta(days=1, minutes=1)
LATER = DUE + timedelta(hours=1)


def _end_of(cf: Careflow, instance_id: int) -> tuple[Any, ...]:
    with cf.sessions() as s:
        instance = s.get(Instance, instance_id)
        assert instance is not None
        ended = s.scalar(select(func.count()).select_from(TimelineEntry)
                         .where(TimelineEntry.instance_id == instance_id, TimelineEntry.kind == "flow_ended"))
        return instance.status, instance.ended_at, instance.revision, ended


def _start(cf: Careflow, n: int) -> list[int]:
    ids = []
    for i in range(n):
        customer_id = cf.create_customer({"name": f"客户{i}", "phone": f"1380013{i:04d}"}, fire_triggers=False)
        with cf.transition() as s:
            ids.append(start_instance(s, cf.runtime(), FLOW_ID, customer_id=customer_id, trigger={"type": "manual"}).id)
    return ids


def test_a_message_to_a_cancelled_instance_leaves_its_end_as_it_was(database_url: str, tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    reg = Registry()
    reg.register(LoggingProvider(), "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    try:
        cf.deploy([FLOWS])
        [instance_id] = _start(cf, 1)
        cf.cancel(instance_id, "test")
        before = _end_of(cf, instance_id)
        cf.clock.set(LATER)  # type: ignore[attr-defined]
        cf.message(instance_id, "customer_replied")
        assert _end_of(cf, instance_id) == before
        assert before[0] == "cancelled" and before[3] == 1
        with cf.sessions() as s:  # the event is still on record, as ignored
            last = s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance_id)
                             .order_by(HistoryEntry.id.desc())).first()
            assert last is not None and [e["type"] for e in last.entries] == ["ignored"]
    finally:
        cf.close()


def test_a_group_s_result_for_an_instance_cancelled_meanwhile_leaves_its_end_as_it_was(
        database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(tmp_path / "ledger.tsv"))
    held: dict[str, Any] = {}

    def cancel_the_third(n: int, _message: Any) -> None:
        if n == 1:  # an admin cancels the third instance while its message is on its way
            held["cf"].cancel(held["ids"][2], "test")
            held["before"] = _end_of(held["cf"], held["ids"][2])
            held["cf"].clock.set(LATER)

    reg = Registry()
    reg.register(_ScriptedProvider(cancel_the_third), "scale_log")
    cf = Careflow(database_url, clock=FixedClock(START), registry=reg)
    held["cf"] = cf
    try:
        cf.deploy([FLOWS])
        held["ids"] = ids = _start(cf, 4)
        cf.clock.set(DUE)  # type: ignore[attr-defined]
        with cf.sessions.begin() as s:
            claims = claim_timers(s, cf.clock.now(), wall_now(), LEASE, 100)
        assert run_timers(cf, claims, settings=Settings(lease=LEASE)) == ["fired"] * 4
        assert held["before"][0] == "cancelled" and held["before"][3] == 1
        assert _end_of(cf, ids[2]) == held["before"]
        assert [_end_of(cf, i)[0] for i in ids] == ["completed", "completed", "cancelled", "completed"]
    finally:
        cf.close()


KID = """
id: kid
name: {zh: 子流程, en: Kid}
triggers: [{type: manual}]
enrollment: {concurrent: unlimited, reenroll: always}
steps:
  - id: done
    type: end
    outcome: kid_done
"""

MOM = """
id: mom
name: {zh: 母流程, en: Mom}
triggers: [{type: manual}]
steps:
  - id: sub
    type: subflow
    flow: kid
    wait: true
    next: done
  - id: done
    type: end
"""


def test_a_parent_that_a_subflow_ending_at_once_ends_is_ended_once(cf: Careflow) -> None:
    """The child's end moves the parent on, in a delivery of its own that ends the parent and
    records that end; the parent's own run, which started the child, must not end it again."""
    cf.deploy_flow_text(KID, "kid.yaml", by="test")
    cf.deploy_flow_text(MOM, "mom.yaml", by="test")
    customer_id = cf.create_customer({"name": "客户", "phone": "13800138000"}, fire_triggers=False)
    parent_id = cf.start("mom", customer_id=customer_id)
    with cf.sessions() as s:
        ended = list(s.scalars(select(TimelineEntry.instance_id).where(TimelineEntry.customer_id == customer_id,
                                                                       TimelineEntry.kind == "flow_ended")))
        instances = {i.flow_id: (i.id, i.status) for i in s.scalars(select(Instance).where(Instance.customer_id == customer_id))}
    assert instances == {"mom": (parent_id, "completed"), "kid": (instances["kid"][0], "completed")}
    assert ended == [instances["kid"][0], parent_id]  # once each: the child, then its parent
