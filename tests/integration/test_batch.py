"""The batch API: many starts or task answers in one transaction, with every guarantee of one each.

``Careflow.start_batch`` / ``complete_batch`` (engine/store/batch.py) load a batch's rows with a
query per table and write them with one executemany per table. These tests pin down that a batch
stores exactly the rows the one-request calls store, and that a failing request (a missing
customer, a phone another customer has, a task answered meanwhile, a lost optimistic lock) costs
the other requests of its batch nothing.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, insert, inspect, select, update
from sqlalchemy.orm.exc import StaleDataError

from engine import core
from engine.errors import Conflict, CustomerLookupError, SubmissionInvalid, TaskLookupError
from engine.store import batch as batch_store
from engine.store.batch import complete_tasks, start_instances
from engine.store.instances import NotEnrolled, Writes
from engine.store.models import (
    AuditEntry,
    Customer,
    Enrollment,
    HistoryEntry,
    Incident,
    Instance,
    Notification,
    OutboxMessage,
    Task,
    Timer,
    TimelineEntry,
)
from tests.conftest import make_careflow
from tests.integration.test_ended_instances import KID, MOM
from tests.integration.test_store_writes import ANSWER, RACE, deploy_call, new_customer


def task_of(cf, instance_id: int) -> int:  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return s.scalars(select(Task.id).where(Task.instance_id == instance_id, Task.status == "open")).one()


#: Columns and JSON keys that hold ids of rows, which differ from run to run: compared as the row they
#: name (the instance, its customer, its first, second... task). Each row's own id is left out.
_ID_COLUMNS = {"instance_id": "instance", "active_instance_id": "instance", "parent_id": "instance",
               "customer_id": "customer", "task_id": "task"}
_ID_KEYS = {"instance_id": "instance", "parent": "instance", "customer_id": "customer", "task": "task", "task_id": "task"}


def stored(cf, instance_id: int) -> str:  # type: ignore[no-untyped-def]
    """Every column of every row an instance left, in every table that holds any (the customer's
    timeline and enrollment too), with ids written as what they name and the customer's name,
    phone and e-mail written NAME, PHONE, EMAIL."""
    with cf.session() as s:
        instance = s.get(Instance, instance_id)
        customer = s.get(Customer, instance.customer_id)
        # The customer's instances (this one and those before it, whose timeline rows are the customer's
        # too) and their tasks, numbered in the order they were made.
        instance_ids = list(s.scalars(select(Instance.id).where(Instance.customer_id == customer.id).order_by(Instance.id)))
        all_task_ids = list(s.scalars(select(Task.id).where(Task.instance_id.in_(instance_ids)).order_by(Task.id)))
        task_ids = list(s.scalars(select(Task.id).where(Task.instance_id == instance_id).order_by(Task.id)))
        names = {"instance": {i: f"INSTANCE{n}" for n, i in enumerate(instance_ids, 1)}, "customer": {customer.id: "CUSTOMER"},
                 "task": {t: f"TASK{n}" for n, t in enumerate(all_task_ids, 1)}}

        def named(kind: str, value: object) -> object:
            return names[kind].get(int(value), value) if isinstance(value, (int, str)) and str(value).isdigit() else value

        def plain(value: object) -> object:
            if isinstance(value, dict):
                return {k: named(_ID_KEYS[k], v) if k in _ID_KEYS else plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        def rows(model: type, where: object) -> list[dict[str, object]]:
            table = model.__table__  # type: ignore[attr-defined]
            out = []
            for row in s.execute(select(table).where(where).order_by(table.c.id)).mappings():
                values = {k: named(_ID_COLUMNS[k], v) if k in _ID_COLUMNS else plain(v) for k, v in row.items() if k != "id"}
                if "target_type" in values:  # the audit log's
                    values["target_id"] = named(str(values["target_type"]), values["target_id"])
                out.append(values)
            return out

        task_targets = [str(t) for t in task_ids]
        rows_by_table = {
            "instance": rows(Instance, Instance.id == instance_id),
            "customer": rows(Customer, Customer.id == customer.id),
            "enrollment": rows(Enrollment, Enrollment.customer_id == customer.id),
            "timeline": rows(TimelineEntry, TimelineEntry.customer_id == customer.id),
            "history": rows(HistoryEntry, HistoryEntry.instance_id == instance_id),
            "tasks": rows(Task, Task.instance_id == instance_id),
            "notifications": rows(Notification, Notification.task_id.in_(task_ids)),
            "timers": rows(Timer, Timer.instance_id == instance_id),
            "incidents": rows(Incident, Incident.instance_id == instance_id),
            "outbox": [{**m, "effect_key": str(m["effect_key"]).replace(str(instance_id), "INSTANCE", 1)}
                       for m in rows(OutboxMessage, OutboxMessage.instance_id == instance_id)],
            "audit": rows(AuditEntry, ((AuditEntry.target_type == "instance") & (AuditEntry.target_id == str(instance_id)))
                          | ((AuditEntry.target_type == "task") & AuditEntry.target_id.in_(task_targets))),
        }
        text = json.dumps(rows_by_table, default=str, ensure_ascii=False, sort_keys=True, indent=1)
        return text.replace(customer.name, "NAME").replace(customer.phone[-4:], "PHONE").replace(customer.email, "EMAIL")


def test_a_batch_stores_the_same_rows_as_one_request_each(cf):
    """Row for row, in every table; on PostgreSQL the batch's rows go by COPY and UPDATE ... FROM
    unnest (engine/store/rows.py), one request's by plain INSERTs and UPDATEs."""
    deploy_call(cf)
    cf.deploy_flow_text(RACE, "race.yaml")  # a task created and cancelled in one advance, then the end
    one_by_one = [new_customer(cf, n) for n in range(3)]
    batched = [new_customer(cf, n) for n in range(3, 6)]
    singles = [cf.start("call", customer_id=c, started_by="admin") for c in one_by_one]
    for iid in singles:
        cf.complete(task_of(cf, iid), ANSWER, "wang")
    started = cf.start_batch("call", batched, started_by="admin")
    assert all(isinstance(i, int) for i in started)
    done = cf.complete_batch([(task_of(cf, iid), ANSWER, "wang") for iid in started])
    assert [d["status"] for d in done] == ["completed"] * 3  # type: ignore[index]
    for single, batch in zip(singles, started, strict=True):
        assert stored(cf, single) == stored(cf, batch)  # type: ignore[arg-type]
    raced_single = [cf.start("race", customer_id=c) for c in one_by_one]
    raced_batch = cf.start_batch("race", batched)
    for single, batch in zip(raced_single, raced_batch, strict=True):
        assert "cancelled" in stored(cf, single)
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


def test_a_batch_finds_each_customers_enrollment_in_its_own_flow(cf):
    """The batch reads the enrollments of its customers in the flow started (one probe per customer
    on PostgreSQL): an active one refuses the start, one in another flow does not count. Called
    directly, as ``Careflow.start_batch`` would hide a wrong refusal by retrying each start alone."""
    deploy_call(cf)  # one active instance per customer (the default policy)
    deploy_call(cf, "recall")
    customers = [new_customer(cf, n) for n in range(4)]
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        start_instances(s, rt, "recall", customers)
    with cf.sessions.begin() as s:
        start_instances(s, rt, "call", customers[1:3])
    with cf.sessions.begin() as s, pytest.raises(NotEnrolled):
        start_instances(s, rt, "call", customers)
    with cf.sessions.begin() as s:
        start_instances(s, rt, "call", [customers[0], customers[3]])
    with cf.session() as s:
        rows = s.execute(select(Enrollment.flow_id, Enrollment.customer_id, Enrollment.count)).all()
    assert sorted(rows) == sorted([("recall", c, 1) for c in customers] + [("call", c, 1) for c in customers])


def _customer_typed_as(cf, name: str, phone: str) -> int:  # type: ignore[no-untyped-def]
    """A customer whose phone is as typed, before the flow's first step writes it in E.164."""
    now = cf.clock.now()
    with cf.sessions.begin() as s:
        return s.execute(insert(Customer).values(
            name=name, phone=phone, tags=[], consent={}, attributes={}, birthday_calendar="solar", language="zh",
            status="active", purchase_count=0, purchase_total=0.0, created_at=now, updated_at=now,
        ).returning(Customer.id)).scalar_one()


def test_a_phone_another_customer_has_fails_only_its_own_start(cf):
    deploy_call(cf)  # its first step writes the customer's phone in E.164
    holder = new_customer(cf, 7)  # +8613800130007
    clash = _customer_typed_as(cf, "重复", "138 0013 0007")  # the same number, as typed before it was tidied
    other = new_customer(cf, 8)
    results = cf.start_batch("call", [clash, other])
    assert isinstance(results[0], Conflict)
    assert cf.describe(results[1])["status"] == "running"  # type: ignore[arg-type]
    with cf.session() as s:
        assert s.get(Customer, clash).phone == "138 0013 0007"
        assert s.get(Customer, holder).phone == "+8613800130007"


def test_two_customers_of_a_batch_cannot_take_the_same_phone(cf):
    deploy_call(cf)
    ids = [_customer_typed_as(cf, f"客户{i}", phone) for i, phone in enumerate(["13800130009", "138-0013-0009"])]
    results = cf.start_batch("call", ids)
    assert isinstance(results[0], int) and isinstance(results[1], Conflict)  # one by one, the first wins


def test_a_phone_held_outside_the_batch_is_refused_in_a_later_chunk(cf, monkeypatch, caplog):
    """On PostgreSQL a chunk's new phones are not read back before it is sent: the unique index
    refuses the clashing UPDATE, which fails the batch at the sync, and only the clashing start
    fails when each runs alone. SQLite reads the holders before it writes."""
    monkeypatch.setattr(Writes, "CHUNK", 1)
    deploy_call(cf)
    new_customer(cf, 7)  # +8613800130007
    batch = [new_customer(cf, 1), _customer_typed_as(cf, "重复", "138 0013 0007"), new_customer(cf, 2)]
    with caplog.at_level(logging.INFO, "engine.core"):
        results = cf.start_batch("call", batch)
    assert [type(r) for r in results] == [int, Conflict, int]
    expected = "customer_phone_key" if cf.db.dialect.name == "postgresql" else "already has this phone"
    assert expected in caplog.text
    with cf.session() as s:
        assert s.get(Customer, batch[1]).phone == "138 0013 0007"


def test_a_phone_an_earlier_chunk_gave_another_customer_is_refused(cf, monkeypatch, caplog):
    """On PostgreSQL the phone an earlier chunk wrote is refused to a later chunk's customer by the
    unique index (SQLite writes the batch at once and finds the two claims in it)."""
    monkeypatch.setattr(Writes, "CHUNK", 1)
    deploy_call(cf)
    first = _customer_typed_as(cf, "甲", "13800130009")
    second = _customer_typed_as(cf, "乙", "138-0013-0009")
    with caplog.at_level(logging.INFO, "engine.core"):
        results = cf.start_batch("call", [first, new_customer(cf, 1), second])
    assert [type(r) for r in results] == [int, int, Conflict]
    expected = "customer_phone_key" if cf.db.dialect.name == "postgresql" else "would both have this phone"
    assert expected in caplog.text
    with cf.session() as s:
        assert s.get(Customer, second).phone == "138-0013-0009"


SWAP = """
id: swap
name: {zh: 换号, en: Swap}
triggers: [{type: manual}]
steps:
  - id: renumber
    type: update_customer
    fields:
      phone: "{{ '13900139000' if customer.name == '甲' else '13800138000' }}"
    next: done
  - id: done
    type: end
"""


def test_a_phone_given_up_later_in_the_same_chunk_is_refused_as_one_by_one(cf, monkeypatch, caplog):
    """乙 takes the phone 甲 gives up, 乙's request first: one request at a time, 甲 still holds it
    when 乙 asks, so 乙's start fails. In one pipelined chunk the server could run 甲's UPDATE first
    and accept both: the chunk's check refuses the batch instead, and it is run one by one."""
    monkeypatch.setattr(Writes, "CHUNK", 2)
    cf.deploy_flow_text(SWAP, "swap.yaml")
    giver = _customer_typed_as(cf, "甲", "+8613800138000")
    taker = _customer_typed_as(cf, "乙", "+8613700137000")
    with caplog.at_level(logging.INFO, "engine.core"):
        results = cf.start_batch("swap", [taker, giver])
    assert [type(r) for r in results] == [Conflict, int]
    expected = "gives up this phone" if cf.db.dialect.name == "postgresql" else "already has this phone"
    assert expected in caplog.text
    with cf.session() as s:
        assert [s.get(Customer, taker).phone, s.get(Customer, giver).phone] == ["+8613700137000", "+8613900139000"]


def test_a_phone_given_up_earlier_in_the_batch_is_taken(cf, monkeypatch):
    """甲's request first: one by one, 乙 then takes the phone 甲 gave up; the batch ends the same."""
    monkeypatch.setattr(Writes, "CHUNK", 2)
    cf.deploy_flow_text(SWAP, "swap.yaml")
    giver = _customer_typed_as(cf, "甲", "+8613800138000")
    taker = _customer_typed_as(cf, "乙", "+8613700137000")
    results = cf.start_batch("swap", [giver, taker])
    assert [type(r) for r in results] == [int, int]
    with cf.session() as s:
        assert [s.get(Customer, taker).phone, s.get(Customer, giver).phone] == ["+8613800138000", "+8613900139000"]


HOP = """
id: hop
name: {zh: 跳号, en: Hop}
triggers: [{type: manual}]
steps:
  - id: first
    type: update_customer
    fields:
      phone: "{{ '13800138000' if customer.name == '乙' else customer.phone }}"
    next: second
  - id: second
    type: update_customer
    fields:
      phone: "{{ vars.then if customer.name == '乙' else customer.phone }}"
    next: done
  - id: done
    type: end
"""


@pytest.mark.parametrize("then", ["13900139001", "", "13700137000"])
def test_a_phone_held_only_between_two_steps_is_refused_as_one_by_one(cf, monkeypatch, caplog, then):
    """乙's first step takes 甲's phone, its second moves on (to a new phone, none, or back): the
    row written never holds 甲's phone, so no unique index can refuse it. One by one, the first
    step fails; the batch reads the holders of such a phone and fails, and is run one by one."""
    monkeypatch.setattr(Writes, "CHUNK", 1)
    cf.deploy_flow_text(HOP, "hop.yaml")
    holder = _customer_typed_as(cf, "甲", "+8613800138000")
    hopper = _customer_typed_as(cf, "乙", "+8613700137000")
    other = _customer_typed_as(cf, "丙", "+8613600136000")
    with caplog.at_level(logging.INFO, "engine.core"):
        results = cf.start_batch("hop", [hopper, other], data={"then": then})
    assert [type(r) for r in results] == [Conflict, int]
    assert "already has this phone" in caplog.text
    with cf.session() as s:
        phones = [s.get(Customer, c).phone for c in (holder, hopper, other)]
    assert phones == ["+8613800138000", "+8613700137000", "+8613600136000"]


def test_a_task_answered_meanwhile_fails_only_its_own_answer(cf):
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(3)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    cf.complete(tasks[1], ANSWER, "wang")
    results = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert isinstance(results[1], Conflict)
    assert [results[0]["status"], results[2]["status"]] == ["completed", "completed"]  # type: ignore[index]
    assert all(cf.describe(iid)["status"] == "completed" for iid in started)  # type: ignore[arg-type]


def test_an_unknown_task_fails_only_its_own_answer(cf):
    """The batch reads its tasks, their instances and customers in one query (outer joins): a task
    id that names no row is missing from it, and fails as the one-request call fails."""
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(2)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    results = cf.complete_batch([(tasks[0], ANSWER, "wang"), (max(tasks) + 1000, ANSWER, "wang"), (tasks[1], ANSWER, "wang")])
    assert isinstance(results[1], TaskLookupError)
    assert [results[0]["status"], results[2]["status"]] == ["completed", "completed"]  # type: ignore[index]
    assert [cf.describe(iid)["status"] for iid in started] == ["completed", "completed"]  # type: ignore[arg-type]


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


class _Meanwhile:
    """Another writer commits ``write()`` just before the batch sends its first bulk statement
    (``UPDATE ... FROM unnest``, engine/store/rows.py) that starts with ``before``. PostgreSQL lets
    it in: the batch holds no lock on the rows it writes there yet."""

    def __init__(self, cf: Any, before: str, write: Any):
        self.cf, self.before, self.write = cf, before, write
        self.fired = False

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self.fired and statement.startswith(self.before) and "FROM unnest(" in statement:
            self.fired = True
            self.write()

    def __enter__(self) -> _Meanwhile:
        event.listen(self.cf.db, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.cf.db, "before_cursor_execute", self._before)


@pytest.fixture
def cf_pg(pg_schema_url, clock, provider) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    engine = make_careflow(pg_schema_url, clock, provider)
    yield engine
    engine.close()


@pytest.mark.postgres
def test_a_lock_lost_to_another_writer_fails_the_batch_then_each_answer_runs_alone(cf_pg, caplog):
    cf = cf_pg
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(3)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    table = Instance.__table__

    def bump() -> None:  # another transaction changes the third instance and commits
        with cf.db.begin() as other:
            other.execute(update(table).where(table.c.id == started[2]).values(revision=table.c.revision + 1))

    with _Meanwhile(cf, "UPDATE instance SET", bump) as meanwhile, caplog.at_level(logging.INFO, "engine.core"):
        results = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert meanwhile.fired
    assert "expected to update 3 row(s); 2 were matched" in caplog.text  # the batch failed, and was rolled back
    assert [r["status"] for r in results] == ["completed"] * 3  # type: ignore[index]
    assert [cf.describe(iid)["status"] for iid in started] == ["completed"] * 3  # type: ignore[arg-type]
    with cf.session() as s:
        assert [s.get(Instance, iid).revision for iid in started] == [3, 3, 4]  # type: ignore[union-attr]
        done = s.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "task.complete")).all()
    assert sorted(done) == sorted(str(t) for t in tasks)  # one entry each: the failed batch left none


@pytest.mark.postgres
def test_a_task_answered_by_another_writer_fails_the_batch_then_only_its_own_answer(cf_pg, caplog):
    cf = cf_pg
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(3)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]

    # The same user answers the second task in another window, and that commits first.
    with _Meanwhile(cf, "UPDATE task SET", lambda: cf.complete(tasks[1], ANSWER, "wang")) as meanwhile, \
            caplog.at_level(logging.INFO, "engine.core"):
        results = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert meanwhile.fired
    assert "1 task(s) of this batch were completed by someone else" in caplog.text
    assert isinstance(results[1], Conflict) and "already completed" in str(results[1])
    assert [results[0]["status"], results[2]["status"]] == ["completed", "completed"]  # type: ignore[index]
    assert all(cf.describe(iid)["status"] == "completed" for iid in started)  # type: ignore[arg-type]
    with cf.session() as s:
        done = s.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "task.complete")).all()
    assert sorted(done) == sorted(str(t) for t in tasks)  # one answer each: the other window's for the second


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


def test_a_batch_load_keeps_the_objects_already_in_the_session(cf):
    """As a query through the ORM: an object in the session is returned as it is, its pending
    values kept; only columns it has expired take the row's values."""
    from engine.store.batch import _CUSTOMERS, _by_id

    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(3)]
    with cf.sessions.begin() as s:
        held = s.get(Customer, customers[0])
        expired = s.get(Customer, customers[1])
        s.connection().execute(update(Customer.__table__).values(region="上海"))  # behind the session's back
        s.expire(expired, ["region"])
        statements: list[str] = []
        event.listen(s.connection(), "before_cursor_execute", lambda *a: statements.append(a[2]))
        loaded = _by_id(s, _CUSTOMERS, customers)
        assert len(statements) == 1  # the expired column came with the rows, not by a query of its own
        assert loaded[customers[0]] is held and held.region is None  # kept as loaded before
        assert loaded[customers[1]] is expired and expired.region == "上海"
        fresh = loaded[customers[2]]
        assert fresh in s and s.get(Customer, customers[2]) is fresh and fresh.region == "上海"
        assert not s.dirty and not fresh in s.new and inspect(fresh).persistent
        fresh.grade = "A"  # a loaded object's change is flushed by the ORM as usual
        s.flush()
    with cf.session() as s:
        assert s.get(Customer, customers[2]).grade == "A"


def test_a_rolled_back_batch_leaves_no_stale_objects(cf):
    """A savepoint rolled back over a batch expires the objects the batch loaded and changed, and
    removes those it inserted, also when an object was written before the savepoint too."""
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(2)]
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        instances = start_instances(s, rt, "call", customers)
        loaded = [s.get(Customer, c) for c in customers]  # the objects the batch loaded and changed
        assert [c.grade for c in loaded] == ["B", "B"]
        tasks = list(s.scalars(select(Task).where(Task.instance_id.in_([i.id for i in instances]))))
        with pytest.raises(RuntimeError), s.begin_nested():
            complete_tasks(s, rt, [(t.id, ANSWER, "wang") for t in tasks])
            more = start_instances(s, rt, "call", customers)
            assert [c.region for c in loaded] == ["北京", "北京"]
            raise RuntimeError("the caller gives up on these")
        assert not any(i in s for i in more)
        assert [c.region for c in loaded] == [None, None]  # read again: the savepoint's update is gone
        assert [c.grade for c in loaded] == ["B", "B"]  # written before the savepoint: still there
        assert all(t.status == "open" for t in tasks) and all(i.status == "running" for i in instances)


class _Sent:
    """The statements the engine's before_cursor_execute listeners see meanwhile."""

    def __init__(self, cf: Any):
        self.cf = cf
        self.sent: list[str] = []

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.sent.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.cf.db, "before_cursor_execute", self._seen)
        return self.sent

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.cf.db, "before_cursor_execute", self._seen)


def test_a_batch_written_in_chunks_stores_the_same_rows_as_one_request_each(cf, monkeypatch):
    """On PostgreSQL a batch's writes go in chunks of requests, each sent without waiting for the
    server (pipeline mode); the rows are those of one request each. SQLite writes them at the end."""
    monkeypatch.setattr(Writes, "CHUNK", 2)
    deploy_call(cf)
    one_by_one = [new_customer(cf, n) for n in range(5)]
    batched = [new_customer(cf, n) for n in range(5, 10)]
    singles = [cf.start("call", customer_id=c, started_by="admin") for c in one_by_one]
    for iid in singles:
        cf.complete(task_of(cf, iid), ANSWER, "wang")
    with _Sent(cf) as sent:
        started = cf.start_batch("call", batched, started_by="admin")
    assert all(isinstance(i, int) for i in started)
    chunks = 3 if cf.db.dialect.name == "postgresql" else 1  # requests 1-2, 3-4, 5
    assert sum(s.startswith("INSERT INTO history_entry") for s in sent) == chunks
    with _Sent(cf) as sent:
        done = cf.complete_batch([(task_of(cf, iid), ANSWER, "wang") for iid in started])
    assert [d["status"] for d in done] == ["completed"] * 5  # type: ignore[index]
    assert sum(s.startswith("UPDATE instance SET") for s in sent) == chunks
    for single, batch in zip(singles, started, strict=True):
        assert stored(cf, single) == stored(cf, batch)  # type: ignore[arg-type]


LEAST_LOADED = """
id: spread
name: {zh: 分派, en: Spread}
triggers: [{type: manual}]
steps:
  - id: call
    type: task
    form: follow_up
    assignee: {role: account_manager, strategy: least_loaded}
    next: done
  - id: done
    type: end
"""


def test_a_least_loaded_assignment_in_a_batch_counts_the_tasks_made_before_it(cf, monkeypatch):
    """Each request's pick reads the open tasks, its batch's earlier ones included, though those
    were sent without waiting: the read waits for them."""
    monkeypatch.setattr(Writes, "CHUNK", 1)
    cf.deploy_flow_text(LEAST_LOADED, "spread.yaml")
    started = cf.start_batch("spread", [new_customer(cf, n) for n in range(6)])
    assert all(isinstance(i, int) for i in started)
    with cf.session() as s:
        assignees = s.scalars(select(Task.assignee).where(Task.instance_id.in_(started))).all()
    assert Counter(assignees) == {"li": 2, "wang": 2, "zhao": 2}


class _Before:
    """Another writer commits ``write()`` just before the batch sends its first statement starting with ``before``."""

    def __init__(self, cf: Any, before: str, write: Any):
        self.cf, self.before, self.write = cf, before, write
        self.fired = False

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self.fired and statement.startswith(self.before):
            self.fired = True
            self.write()

    def __enter__(self) -> _Before:
        event.listen(self.cf.db, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.cf.db, "before_cursor_execute", self._before)


@pytest.mark.postgres
def test_a_lock_lost_in_an_early_chunk_fails_the_whole_batch(cf_pg, caplog, monkeypatch):
    """The first chunk's UPDATE matches one instance of two; that is known only at the sync before
    the commit, after the second chunk was sent: the batch still fails whole, and nothing of it stays."""
    cf = cf_pg
    monkeypatch.setattr(Writes, "CHUNK", 2)
    deploy_call(cf)
    started = cf.start_batch("call", [new_customer(cf, n) for n in range(4)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    table = Instance.__table__

    def bump() -> None:  # another transaction changes the first instance and commits
        with cf.db.begin() as other:
            other.execute(update(table).where(table.c.id == started[0]).values(revision=table.c.revision + 1))

    with _Before(cf, "UPDATE instance SET", bump) as meanwhile, _Sent(cf) as sent, \
            caplog.at_level(logging.INFO, "engine.core"):
        results = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert meanwhile.fired
    assert "expected to update 2 row(s); 1 were matched" in caplog.text  # the batch failed, and was rolled back
    batch_part = sent[:sent.index(next(s for s in sent if s.startswith("UPDATE task SET") and "FROM unnest(" not in s))]
    assert sum(s.startswith("UPDATE instance SET") and "FROM unnest(" in s for s in batch_part) == 2  # both chunks went
    assert [r["status"] for r in results] == ["completed"] * 4  # type: ignore[index]
    with cf.session() as s:
        assert [s.get(Instance, iid).revision for iid in started] == [4, 3, 3, 3]  # type: ignore[union-attr]
        done = s.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "task.complete")).all()
        history = s.scalar(select(func.count()).select_from(HistoryEntry).where(HistoryEntry.instance_id.in_(started)))
    assert sorted(done) == sorted(str(t) for t in tasks)  # one entry each: the failed batch left none
    assert history == 4 * 2  # one row for the start, one for the answer: none from the failed batch


@pytest.mark.postgres
def test_a_row_refused_in_a_pipelined_chunk_fails_the_whole_batch(cf_pg, caplog, monkeypatch):
    """Another writer enrolls the first customer meanwhile: the first chunk's INSERT of enrollments
    is refused (unique per flow and customer), the batch fails before its commit, and each start
    then runs alone."""
    cf = cf_pg
    monkeypatch.setattr(Writes, "CHUNK", 2)
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(4)]

    def enroll() -> None:
        with cf.db.begin() as other:
            other.execute(insert(Enrollment).values(flow_id="call", customer_id=customers[0], active_instance_id=None,
                                                    last_started_at=cf.clock.now(), count=0))

    with _Before(cf, "INSERT INTO enrollment", enroll) as meanwhile, caplog.at_level(logging.INFO, "engine.core"):
        results = cf.start_batch("call", customers)
    assert meanwhile.fired
    assert "UniqueViolation" in caplog.text  # the batch failed, and was rolled back
    assert all(isinstance(i, int) for i in results)
    with cf.session() as s:
        counts = Counter(s.scalars(select(Instance.customer_id).where(Instance.customer_id.in_(customers))))
        enrollments = Counter(s.scalars(select(Enrollment.customer_id).where(Enrollment.customer_id.in_(customers))))
    assert counts == enrollments == {c: 1 for c in customers}


def _collector_seen_by(monkeypatch, module, name: str) -> list[bool]:  # type: ignore[no-untyped-def]
    """Record whether the garbage collector is on each time module.name runs."""
    seen: list[bool] = []
    original = getattr(module, name)

    def watching(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, watching)
    return seen


def test_the_collector_is_paused_for_a_batch_and_on_again_after(cf, monkeypatch):
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(2)]
    seen = _collector_seen_by(monkeypatch, batch_store, "start_instances")
    assert gc.isenabled()
    started = cf.start_batch("call", customers)
    assert seen == [False] and gc.isenabled()
    seen = _collector_seen_by(monkeypatch, batch_store, "complete_tasks")
    cf.complete_batch([(task_of(cf, iid), ANSWER, "wang") for iid in started])
    assert seen == [False] and gc.isenabled()


def test_the_collector_is_on_again_after_a_batch_that_raises(cf, monkeypatch):
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(2)]

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert not gc.isenabled()
        raise KeyError("not a request's error: the batch raises it")

    monkeypatch.setattr(batch_store, "start_instances", broken)
    with pytest.raises(KeyError):
        cf.start_batch("call", customers)
    assert gc.isenabled()
    monkeypatch.undo()
    seen = _collector_seen_by(monkeypatch, cf, "start")  # a failed batch's requests, one by one
    results = cf.start_batch("call", [customers[0], 999_999])
    assert isinstance(results[1], CustomerLookupError) and gc.isenabled()
    assert seen == [True, True]


def test_a_collector_the_caller_turned_off_stays_off_and_the_pause_can_be_turned_off(cf, monkeypatch):
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(2)]
    gc.disable()
    try:
        cf.start_batch("call", customers[:1])
        assert not gc.isenabled()
    finally:
        gc.enable()
    monkeypatch.setattr(cf, "pause_collector_in_batches", False)
    seen = _collector_seen_by(monkeypatch, batch_store, "start_instances")
    cf.start_batch("call", customers[1:])
    assert seen == [True]


def test_overlapping_pauses_leave_the_collector_on_once_the_first_ends():
    first, second = core.collector_paused(), core.collector_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.isenabled()  # the collector runs, though the second batch is not over
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_started_instance_is_written_once_with_the_state_its_first_run_leaves(cf, monkeypatch):
    """Its id given beforehand, a new instance's row is inserted once, as its run leaves it: no
    INSERT of the start state followed by an UPDATE, on SQLite (all at the end) as on PostgreSQL
    (in chunks of requests)."""
    monkeypatch.setattr(Writes, "CHUNK", 2)
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(5)]
    with _Sent(cf) as sent:
        started = cf.start_batch("call", customers)
    assert all(isinstance(i, int) for i in started)
    assert not [s for s in sent if s.startswith("UPDATE instance")]
    assert sum(s.startswith("INSERT INTO instance") for s in sent) == (3 if cf.db.dialect.name == "postgresql" else 1)
    with cf.session() as s:
        rows = s.execute(select(Instance.id, Instance.revision, Instance.status).where(Instance.id.in_(started))).all()
        waiting = {t.instance_id for t in s.scalars(select(Task).where(Task.instance_id.in_(started)))}
    assert sorted(rows) == [(i, 2, "running") for i in sorted(started)]  # revision 2, as after INSERT + UPDATE
    assert waiting == set(started)


def mom_flow(wait: str) -> str:
    """test_ended_instances' parent flow, waiting for its subflow or not (``wait``: true / false)."""
    return MOM.replace("wait: true", f"wait: {wait}")


@pytest.mark.parametrize("wait", ["true", "false"])
def test_subflows_started_in_a_batch_take_ids_the_batch_did_not_give(cf, wait):
    """The batch gives its instances their ids first; a subflow that one of them starts takes the
    next free id when it is inserted (on SQLite max(id) + 1): the batch's rows are written before
    it, so no id is given twice and the batch needs no retry (called directly, it would raise)."""
    cf.deploy_flow_text(KID, "kid.yaml", by="test")
    cf.deploy_flow_text(mom_flow(wait), "mom.yaml", by="test")
    customers = [new_customer(cf, n) for n in range(3)]
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        parents = [p.id for p in start_instances(s, rt, "mom", customers)]
    with cf.session() as s:
        rows = s.execute(select(Instance.id, Instance.flow_id, Instance.customer_id, Instance.parent_id, Instance.status)).all()
    assert len(rows) == 6
    moms = sorted((r.id, r.customer_id, r.status) for r in rows if r.flow_id == "mom")
    assert moms == [(p, c, "completed") for p, c in zip(parents, customers, strict=True)]
    kids = [r for r in rows if r.flow_id == "kid"]
    assert sorted(r.customer_id for r in kids) == customers and all(r.status == "completed" for r in kids)
    if wait == "true":
        assert sorted(r.parent_id for r in kids) == parents


# After the task, the customer's e-mail is set from the answer: "no_answer" is no e-mail address, so
# applying the answer fails in Python (SubmissionInvalid), before the batch reads or writes anything.
BAD_EMAIL = """
id: bad_email
name: {zh: 坏邮箱, en: Bad e-mail}
triggers: [{type: manual}]
steps:
  - id: call
    type: task
    form: follow_up
    assignee: {user: wang}
    next: tidy
  - id: tidy
    type: update_customer
    fields: {email: "{{ vars.call.outcome }}"}
    next: done
  - id: done
    type: end
"""


@pytest.mark.postgres
def test_a_savepoint_rolled_back_over_a_batch_whose_answers_were_not_checked_yet_keeps_none_of_it(cf_pg):
    """The batch's compare-and-set of its tasks is sent without waiting, checked at the next
    statement. When the batch fails before that (here: applying an answer) and the caller rolls
    its savepoint back, the rollback drops the unchecked statements with the rest: it does not
    fail on their check (a task answered meanwhile) and leave the savepoint's writes in place.
    (Either error may come out: which one the batch meets first is not the point.)"""
    cf = cf_pg
    cf.deploy_flow_text(BAD_EMAIL, "bad_email.yaml", by="test")
    started = cf.start_batch("bad_email", [new_customer(cf, n) for n in range(2)])
    tasks = [task_of(cf, iid) for iid in started]  # type: ignore[arg-type]
    rt = cf.runtime()
    table = Task.__table__

    def answer() -> None:  # another window answers the second task, and that commits first
        with cf.db.begin() as other:
            other.execute(update(table).where(table.c.id == tasks[1]).values(status="completed", completed_by="li"))

    with cf.sessions.begin() as s:
        with pytest.raises((SubmissionInvalid, Conflict)), s.begin_nested(), _Before(cf, "UPDATE task SET", answer) as meanwhile:
            complete_tasks(s, rt, [(t, ANSWER, "wang") for t in tasks])
        assert meanwhile.fired
        assert s.get(Task, tasks[0]).status == "open"  # read again: the savepoint's writes are gone
    with cf.session() as s:
        assert s.get(Task, tasks[0]).status == "open"
        assert s.get(Task, tasks[1]).completed_by == "li"
    assert [cf.describe(iid)["status"] for iid in started] == ["running", "running"]  # type: ignore[arg-type]


def test_empty_batches_do_nothing(cf):
    deploy_call(cf)
    assert cf.start_batch("call", []) == []
    assert cf.complete_batch([]) == []
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0


def test_a_batch_audits_each_answer_as_one_request_does_before_its_instances_move_on(cf):
    """The audit entries of a batch of answers are those ``complete`` writes, and they go to the
    database before the rows of the requests (on PostgreSQL with the first chunk, not after all)."""
    deploy_call(cf)
    singles = [cf.start("call", customer_id=new_customer(cf, n)) for n in range(2)]
    batched = cf.start_batch("call", [new_customer(cf, n) for n in range(2, 4)])
    for iid in singles:
        cf.complete(task_of(cf, iid), ANSWER, "wang")
    with _Sent(cf) as sent:
        done = cf.complete_batch([(task_of(cf, iid), ANSWER, "wang") for iid in batched])
    assert [d["status"] for d in done] == ["completed"] * 2  # type: ignore[index]
    first_audit = next(n for n, s in enumerate(sent) if s.startswith(("INSERT INTO audit_entry", "COPY audit_entry")))
    assert first_audit < next(n for n, s in enumerate(sent) if s.startswith(("INSERT INTO history_entry", "COPY history_entry")))

    def entries(instance_ids: list[int]) -> list[tuple[Any, ...]]:
        with cf.session() as s:
            rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "task.complete")).all()
            by_instance = {row.data["instance_id"]: row for row in rows}
            return [(by_instance[i].actor, by_instance[i].target_type, by_instance[i].at,
                     {k: v for k, v in by_instance[i].data.items() if k != "instance_id"}) for i in instance_ids]

    assert entries(batched) == entries(singles)


def test_a_batch_run_answer_after_answer_audits_every_answer(cf):
    """Two tasks of one customer in a batch: the answers are run one after the other (the second
    must see what the first wrote), and each is audited as in a batch run together."""
    deploy_call(cf)
    deploy_call(cf, "recall")
    cid = new_customer(cf)
    tasks = [task_of(cf, cf.start(flow, customer_id=cid)) for flow in ("call", "recall")]
    done = cf.complete_batch([(t, ANSWER, "wang") for t in tasks])
    assert [d["status"] for d in done] == ["completed"] * 2  # type: ignore[index]
    with cf.session() as s:
        audited = s.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "task.complete")).all()
    assert sorted(audited) == sorted(str(t) for t in tasks)
