"""A start batch's new instances, their ids given beforehand and each row written once with the
state its first run leaves (``Writes.add_new``): the rows stored are those of one request each,
also where that run flushes midway (a round-robin pick, a subflow), ends at once (its enrollment
released in the same writes), or re-enrolls the customer (an enrollment row changed, not added).
On PostgreSQL in chunks of two requests (``Writes.CHUNK``), so some rows go before others are made.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from engine.store.instances import Writes
from engine.store.models import Task
from tests.integration.test_batch import mom_flow, stored
from tests.integration.test_store_writes import ANSWER, new_customer

QUICK = """
id: quick
name: {zh: 快, en: Quick}
triggers: [{type: manual}]
steps:
  - id: tidy
    type: update_customer
    fields: {grade: C}
    next: done
  - id: done
    type: end
    outcome: quick
"""

ROBIN = """
id: robin
name: {zh: 轮流, en: Robin}
triggers: [{type: manual}]
steps:
  - id: tidy
    type: update_customer
    fields: {grade: B}
    next: call
  - id: call
    type: task
    form: follow_up
    assignee: {role: account_manager, strategy: round_robin}
    next: done
  - id: done
    type: end
"""

# A child that waits on a round-robin task; a customer already in it is refused a second one.
KID = ROBIN.replace("id: robin", "id: kid", 1)


def _same(text: str) -> str:
    """Stored rows without who was picked (round robin goes on from batch to batch) and without
    the ids a refusal's message names."""
    text = re.sub(r'"(assignee|completed_by|by|user|actor)": "\w+"', r'"\1": "USER"', text)
    return re.sub(r"customer \d+ is already in flow 'kid' \(instance \d+\)", "REFUSED", text)


def _compare(cf, caplog, flow_id: str, singles_from: list[int], batch_from: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    singles = [cf.start(flow_id, customer_id=c, started_by="admin") for c in singles_from]
    with caplog.at_level(logging.INFO, "engine.core"):
        started = cf.start_batch(flow_id, batch_from, started_by="admin")
    assert "failed" not in caplog.text  # the batch ran as one, not retried one by one
    assert all(isinstance(i, int) for i in started), started
    for single, batch in zip(singles, started, strict=True):
        assert _same(stored(cf, single)) == _same(stored(cf, batch))
    return started  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(Writes, "CHUNK", 2)


def test_instances_that_end_at_once_new_and_reenrolled(cf, caplog):
    cf.deploy_flow_text(QUICK, "quick.yaml", by="test")
    customers = [new_customer(cf, n) for n in range(10)]
    _compare(cf, caplog, "quick", customers[:5], customers[5:])  # enrollments added, then released
    _compare(cf, caplog, "quick", customers[:5], customers[5:])  # enrollments changed, then released


def test_instances_whose_first_run_picks_a_user(cf, caplog):
    cf.deploy_flow_text(ROBIN, "robin.yaml", by="test")
    started = _compare(cf, caplog, "robin", [new_customer(cf, n) for n in range(5)], [new_customer(cf, n) for n in range(5, 10)])
    with cf.session() as s:
        tasks = s.execute(select(Task.id, Task.assignee).where(Task.instance_id.in_(started))).all()
    done = cf.complete_batch([(t.id, ANSWER, t.assignee) for t in tasks])
    assert [d["status"] for d in done] == ["completed"] * 5  # type: ignore[index]


@pytest.mark.parametrize("wait", ["true", "false"])
@pytest.mark.parametrize("refused", [False, True])
def test_instances_whose_first_run_starts_a_subflow_that_waits_or_is_refused(cf, caplog, wait, refused):
    cf.deploy_flow_text(KID, "kid.yaml", by="test")
    cf.deploy_flow_text(mom_flow(wait), "mom.yaml", by="test")
    customers = [new_customer(cf, n) for n in range(10)]
    if refused:
        for c in customers:
            cf.start("kid", customer_id=c)
    _compare(cf, caplog, "mom", customers[:5], customers[5:])
