"""The batch API: many starts or task answers in one transaction, with every guarantee of one each.

``Careflow.start_batch`` / ``complete_batch`` (engine/store/batch.py) load a batch's rows with a
query per table and write them with one executemany per table. These tests pin down that a batch
stores exactly the rows the one-request calls store, and that a failing request (a missing
customer, a phone another customer has, a task answered meanwhile, a lost optimistic lock) costs
the other requests of its batch nothing.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm.exc import StaleDataError

from engine.errors import Conflict, CustomerLookupError
from engine.store.batch import complete_tasks, start_instances
from engine.store.instances import NotEnrolled
from engine.store.models import (
    AuditEntry,
    Customer,
    Enrollment,
    HistoryEntry,
    Instance,
    OutboxMessage,
    Task,
    TimelineEntry,
)
from tests.integration.test_store_writes import ANSWER, deploy_call, new_customer


def task_of(cf, instance_id: int) -> int:  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return s.scalars(select(Task.id).where(Task.instance_id == instance_id, Task.status == "open")).one()


def stored(cf, instance_id: int) -> str:  # type: ignore[no-untyped-def]
    """Every row an instance left, without ids, its customer's name and phone written NAME, PHONE."""
    with cf.session() as s:
        instance = s.get(Instance, instance_id)
        customer = s.get(Customer, instance.customer_id)
        rows = {
            "instance": (instance.status, instance.outcome, instance.revision, instance.ended_at, instance.state),
            "customer": (customer.phone, customer.grade, customer.region, customer.updated_at),
            "enrollment": tuple(s.execute(select(Enrollment.active_instance_id, Enrollment.count)
                                    .where(Enrollment.customer_id == customer.id)).one()),
            "timeline": [(t.kind, t.title, t.data) for t in s.scalars(
                select(TimelineEntry).where(TimelineEntry.instance_id == instance_id).order_by(TimelineEntry.id))],
            "history": [(h.event, [{k: v for k, v in e.items() if k != "task"} for e in h.entries]) for h in s.scalars(
                select(HistoryEntry).where(HistoryEntry.instance_id == instance_id).order_by(HistoryEntry.id))],
            "tasks": [(t.status, t.assignee, t.title, t.data, t.completed_by, t.outcome, t.initial) for t in s.scalars(
                select(Task).where(Task.instance_id == instance_id).order_by(Task.id))],
            "outbox": [(m.effect_key.split(":", 1)[1], m.payload, m.status) for m in s.scalars(
                select(OutboxMessage).where(OutboxMessage.instance_id == instance_id).order_by(OutboxMessage.id))],
            "audit": [(a.action, a.actor, {k: v for k, v in a.data.items() if k != "instance_id"}) for a in s.scalars(
                select(AuditEntry).where(AuditEntry.action == "task.complete").order_by(AuditEntry.id))
                if a.data.get("instance_id") == instance_id],
        }
        text = json.dumps(rows, default=str, ensure_ascii=False, sort_keys=True)
        return text.replace(customer.name, "NAME").replace(customer.phone[-4:], "PHONE")


def test_a_batch_stores_the_same_rows_as_one_request_each(cf):
    deploy_call(cf)
    one_by_one = [new_customer(cf, n) for n in range(3)]
    batched = [new_customer(cf, n) for n in range(3, 6)]
    singles = [cf.start("call", customer_id=c) for c in one_by_one]
    for iid in singles:
        cf.complete(task_of(cf, iid), ANSWER, "wang")
    started = cf.start_batch("call", batched)
    assert all(isinstance(i, int) for i in started)
    done = cf.complete_batch([(task_of(cf, iid), ANSWER, "wang") for iid in started])
    assert [d["status"] for d in done] == ["completed"] * 3  # type: ignore[index]
    for single, batch in zip(singles, started, strict=True):
        assert stored(cf, single) == stored(cf, batch)  # type: ignore[arg-type]


def test_one_failing_start_costs_the_others_nothing(cf):
    deploy_call(cf)
    first, last = new_customer(cf, 1), new_customer(cf, 2)
    results = cf.start_batch("call", [first, 999_999, last])
    assert isinstance(results[1], CustomerLookupError)
    for iid in (results[0], results[2]):
        assert cf.describe(iid)["status"] == "running"  # type: ignore[arg-type]
    with cf.session() as s:
        assert s.scalar(select(Instance.id).where(Instance.customer_id == 999_999)) is None


def test_a_customer_twice_in_a_batch_is_enrolled_once(cf):
    deploy_call(cf)  # one active instance per customer (the default policy)
    cid = new_customer(cf)
    results = cf.start_batch("call", [cid, cid])
    assert isinstance(results[0], int) and isinstance(results[1], NotEnrolled)
    with cf.session() as s:
        assert list(s.scalars(select(Instance.id).where(Instance.customer_id == cid))) == [results[0]]


def test_a_phone_another_customer_has_fails_only_its_own_start(cf):
    deploy_call(cf)  # its first step writes the customer's phone in E.164
    holder = new_customer(cf, 7)  # +8613800130007
    with cf.sessions.begin() as s:  # the same number, as typed before it was tidied
        now = cf.clock.now()
        clash = s.execute(insert(Customer).values(
            name="重复", phone="138 0013 0007", tags=[], consent={}, attributes={}, birthday_calendar="solar",
            language="zh", status="active", purchase_count=0, purchase_total=0.0, created_at=now, updated_at=now,
        ).returning(Customer.id)).scalar_one()
    other = new_customer(cf, 8)
    results = cf.start_batch("call", [clash, other])
    assert isinstance(results[0], Conflict)
    assert cf.describe(results[1])["status"] == "running"  # type: ignore[arg-type]
    with cf.session() as s:
        assert s.get(Customer, clash).phone == "138 0013 0007"
        assert s.get(Customer, holder).phone == "+8613800130007"


def test_two_customers_of_a_batch_cannot_take_the_same_phone(cf):
    deploy_call(cf)
    now = cf.clock.now()
    with cf.sessions.begin() as s:
        ids = [s.execute(insert(Customer).values(
            name=f"客户{i}", phone=phone, tags=[], consent={}, attributes={}, birthday_calendar="solar", language="zh",
            status="active", purchase_count=0, purchase_total=0.0, created_at=now, updated_at=now,
        ).returning(Customer.id)).scalar_one() for i, phone in enumerate(["13800130009", "138-0013-0009"])]
    results = cf.start_batch("call", ids)
    assert isinstance(results[0], int) and isinstance(results[1], Conflict)  # one by one, the first wins


def test_a_task_answered_meanwhile_fails_only_its_own_answer(cf):
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(3)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    cf.complete(tasks[1], ANSWER, "wang")
    results = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert isinstance(results[1], Conflict)
    assert [results[0]["status"], results[2]["status"]] == ["completed", "completed"]  # type: ignore[index]
    assert all(cf.describe(iid)["status"] == "completed" for iid in started)  # type: ignore[arg-type]


def test_an_invalid_answer_fails_only_itself(cf):
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(2)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    results = cf.complete_batch([(tasks[0], {"channel": "pigeon"}, "wang"), (tasks[1], ANSWER, "wang")])
    assert not isinstance(results[0], dict) and results[1]["status"] == "completed"  # type: ignore[index]
    assert [cf.describe(iid)["status"] for iid in started] == ["running", "completed"]  # type: ignore[arg-type]


def test_a_lost_optimistic_lock_fails_the_whole_batch(cf):
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(3)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    rt = cf.runtime()
    with pytest.raises(StaleDataError), cf.sessions.begin() as s:
        held = [s.get(Instance, iid) for iid in started]  # as loaded before the other writer's commit
        # What another transaction committing first would leave (SQLite lets none in meanwhile).
        table = Instance.__table__
        s.connection().execute(update(table).where(table.c.id == started[2]).values(revision=table.c.revision + 1))
        assert held[2].revision == 2
        complete_tasks(s, rt, [(t, ANSWER, "wang") for t in tasks])
    assert [cf.describe(iid)["status"] for iid in started] == ["running"] * 3  # type: ignore[arg-type]
    with cf.session() as s:
        assert s.scalar(select(Task.id).where(Task.id.in_(tasks), Task.status != "open")) is None


def test_a_batch_keeps_the_objects_a_caller_holds_right(cf):
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(2)]
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        held = s.get(Customer, customers[0])
        instances = start_instances(s, rt, "call", customers)
        assert held.grade == "B" and all(i.status == "running" for i in instances)
        tasks = list(s.scalars(select(Task).where(Task.instance_id.in_([i.id for i in instances])).order_by(Task.id)))
        done = complete_tasks(s, rt, [(t.id, ANSWER, "wang") for t in tasks])
        assert all(d is t and t.status == "completed" and t.data == ANSWER for d, t in zip(done, tasks, strict=True))
        assert all(i.status == "completed" and i.ended_at is not None for i in instances)
        assert held.region == "北京"
        enrollment = s.scalars(select(Enrollment).where(Enrollment.customer_id == customers[0])).one()
        assert enrollment.active_instance_id is None
