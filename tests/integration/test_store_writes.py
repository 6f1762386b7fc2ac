"""The store's fast write path: a request's rows written together, loaded objects kept right.

``engine.store.instances.Writes`` writes a request's changes with SQLAlchemy Core at its end
instead of through the ORM's flush, and the newest flow/form versions are cached per process.
These tests pin down what that must not change: the rows stored, the order that matters, the
loaded objects a caller holds (also after a savepoint is rolled back), the optimistic lock on
instances, and when a deploy becomes visible.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm.exc import StaleDataError

from engine.runtime import events as ev
from engine.store import definitions as defs
from engine.store.instances import deliver, get_instance, start_instance
from engine.store.models import Customer, Enrollment, FlowVersion, HistoryEntry, Instance, OutboxMessage, Task, TimelineEntry
from engine.store.tasks import complete_task

ANSWER = {"channel": "phone", "outcome": "no_answer"}

# A task and a note: the shape of the hot path (timeline, history, outbox, task, customer update).
CALL = """
id: {id}
name: {{zh: 回访, en: Call}}
triggers: [{{type: manual}}]
steps:
  - id: tidy
    type: update_customer
    fields: {{phone: "{{{{ customer.phone | e164 }}}}", grade: B}}
    next: note
  - id: note
    type: action
    connector: timeline
    params: {{text: "{{{{ customer.name }}}} {version}"}}
    next: call
  - id: call
    type: task
    form: follow_up
    title: {{zh: "回访 {{{{ customer.name }}}}", en: "Call"}}
    assignee: {{user: wang}}
    next: thanks
  - id: thanks
    type: update_customer
    fields: {{region: 北京}}
    timeline: {{zh: "已回访", en: "Called"}}
    next: done
  - id: done
    type: end
    outcome: called
"""

# Two branches in one advance: a task is created, then the end cancels it.
RACE = """
id: race
name: {zh: 竞速, en: Race}
triggers: [{type: manual}]
steps:
  - id: split
    type: parallel
    branches: [call, finish]
  - id: call
    type: task
    form: follow_up
    assignee: {user: wang}
    next: finish
  - id: finish
    type: end
    outcome: raced
"""


def deploy_call(cf, flow_id="call", version="v1"):  # type: ignore[no-untyped-def]
    return cf.deploy_flow_text(CALL.format(id=flow_id, version=version), f"{flow_id}.yaml", by="test")


def new_customer(cf, n=0):  # type: ignore[no-untyped-def]
    return cf.create_customer({"name": f"客户{n}", "phone": f"1380013{n:04d}", "email": f"c{n}@example.com"},
                              fire_triggers=False)


def test_a_request_stores_the_same_rows_as_before(cf):
    deploy_call(cf)
    cid = new_customer(cf)
    iid = cf.start("call", customer_id=cid)
    with cf.session() as s:
        instance = s.get(Instance, iid)
        assert (instance.status, instance.revision, instance.ended_at) == ("running", 2, None)
        task = s.scalars(select(Task).where(Task.instance_id == iid)).one()
        assert (task.status, task.assignee, task.title["zh"], task.data) == ("open", "wang", "回访 客户0", None)
        # Left out of the INSERT, the answer column is SQL NULL, not JSON null, as with the ORM.
        assert s.scalar(select(func.count()).select_from(Task).where(Task.id == task.id, Task.data.is_(None))) == 1
        [message] = s.scalars(select(OutboxMessage).where(OutboxMessage.instance_id == iid))
        assert (message.effect_key, message.payload, message.status, message.channel) == (
            f"{iid}:note:1", {"text": "客户0 v1"}, "pending", None)
        enrollment = s.scalars(select(Enrollment).where(Enrollment.customer_id == cid)).one()
        assert (enrollment.active_instance_id, enrollment.count) == (iid, 1)
        task_id = task.id
    summary = cf.complete(task_id, ANSWER, "wang")
    assert (summary["status"], summary["completed_by"], summary["data"]) == ("completed", "wang", ANSWER)
    with cf.session() as s:
        instance = s.get(Instance, iid)
        assert (instance.status, instance.outcome, instance.ended_at is not None) == ("completed", "called", True)
        assert instance.revision == 3  # one UPDATE for the state and the end together
        customer = s.get(Customer, cid)
        assert (customer.phone, customer.grade, customer.region) == ("+8613800130000", "B", "北京")
        kinds = list(s.scalars(select(TimelineEntry.kind).where(TimelineEntry.instance_id == iid).order_by(TimelineEntry.id)))
        assert kinds == ["flow_started", "task_completed", "note", "flow_ended"]
        events = list(s.scalars(select(HistoryEntry.event).where(HistoryEntry.instance_id == iid).order_by(HistoryEntry.id)))
        assert events == ["Start", "TaskDone"]
        assert s.scalars(select(Enrollment.active_instance_id).where(Enrollment.customer_id == cid)).one() is None


def test_requests_batched_in_one_transaction_see_each_others_writes(cf):
    deploy_call(cf)
    customers = [new_customer(cf, n) for n in range(3)]
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        instances = [start_instance(s, rt, "call", customer_id=c) for c in customers]
        tasks = list(s.scalars(select(Task).where(Task.instance_id.in_([i.id for i in instances])).order_by(Task.id)))
        assert [t.status for t in tasks] == ["open"] * 3
        done = [complete_task(s, rt, t.id, ANSWER, "wang") for t in tasks]
        # The objects the caller holds are the ones returned, with what the database has.
        assert all(d is t and t.status == "completed" and t.data == ANSWER for d, t in zip(done, tasks))
        assert all(i.status == "completed" and i.ended_at is not None for i in instances)
        again = start_instance(s, rt, "call", customer_id=customers[0])  # re-enrolls: the enrollment was released
    with cf.session() as s:
        assert s.scalars(select(Enrollment.count).where(Enrollment.customer_id == customers[0])).one() == 2
        assert s.get(Instance, again.id).status == "running"


def test_a_task_created_and_cancelled_in_one_advance_ends_cancelled(cf):
    cf.deploy_flow_text(RACE, "race.yaml")
    iid = cf.start("race")
    info = cf.describe(iid)
    assert (info["status"], info["outcome"]) == ("completed", "raced")
    assert [t["status"] for t in info["tasks"]] == ["cancelled"]


def test_cancelling_updates_the_tasks_a_caller_holds(cf):
    deploy_call(cf)
    iid = cf.start("call", customer_id=new_customer(cf))
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        task = s.scalars(select(Task).where(Task.instance_id == iid)).one()
        deliver(s, rt, get_instance(s, iid), ev.Cancel("stop"))
        assert (task.status, task.outcome) == ("cancelled", "stop")  # without a refresh


def test_a_rolled_back_savepoint_leaves_no_stale_objects(cf):
    deploy_call(cf)
    cid = new_customer(cf)
    rt = cf.runtime()
    with cf.sessions.begin() as s:
        customer = s.get(Customer, cid)
        with pytest.raises(RuntimeError), s.begin_nested():
            rolled_back = start_instance(s, rt, "call", customer_id=cid)
            assert customer.grade == "B"
            raise RuntimeError("the caller gives up on this one")
        # The savepoint's rows are gone; so are the objects showing them, as with the ORM's flush.
        assert rolled_back not in s
        assert customer.grade is None
        kept = start_instance(s, rt, "call", customer_id=cid)  # the same id may come back: no clash
        assert customer.grade == "B"
    with cf.session() as s:
        assert list(s.scalars(select(Instance.id).where(Instance.customer_id == cid))) == [kept.id]
        assert s.scalars(select(Enrollment.count).where(Enrollment.customer_id == cid)).one() == 1


def test_an_instance_changed_meanwhile_fails_the_request(cf):
    deploy_call(cf)
    iid = cf.start("call", customer_id=new_customer(cf))
    rt = cf.runtime()
    with pytest.raises(StaleDataError), cf.sessions.begin() as s:
        instance = get_instance(s, iid)
        # What another transaction committing first would leave (SQLite lets none in meanwhile).
        s.connection().execute(update(Instance).where(Instance.id == iid).values(revision=Instance.revision + 1))
        deliver(s, rt, instance, ev.Cancel("stop"))
    assert cf.describe(iid)["status"] == "running"


def test_a_deploy_through_this_process_is_seen_at_once(cf):
    deploy_call(cf, version="v1")
    cf.start("call", customer_id=new_customer(cf, 1))
    deploy_call(cf, version="v2")
    iid = cf.start("call", customer_id=new_customer(cf, 2))
    assert cf.describe(iid)["version"] == 2


def test_a_rolled_back_deploy_is_never_used(cf):
    deploy_call(cf, version="v1")
    with pytest.raises(RuntimeError), cf.sessions.begin() as s:
        defs.deploy_flow(s, CALL.format(id="call", version="v2"), "call.yaml", cf.clock.now(), defs.catalog(s, cf.registry.names()))
        assert defs.latest_flow(s, "call")[1].step("note").params["text"].endswith("v2")  # this transaction sees it
        raise RuntimeError("deploy abandoned")
    iid = cf.start("call", customer_id=new_customer(cf))
    assert cf.describe(iid)["version"] == 1


def test_a_deploy_by_another_process_is_seen_within_the_ttl(cf, monkeypatch):
    deploy_call(cf, version="v1")
    now = [1000.0]
    monkeypatch.setattr(defs.time, "monotonic", lambda: now[0])
    cf.start("call", customer_id=new_customer(cf, 1))  # caches version 1
    with cf.sessions.begin() as s:  # what another process's deploy leaves: a row, no cache cleared here
        v1 = s.scalars(select(FlowVersion).where(FlowVersion.flow_id == "call")).one()
        s.add(FlowVersion(flow_id="call", version=2, content_hash="other", source=CALL.format(id="call", version="v2"),
                          name=v1.name, deployed_at=v1.deployed_at))
    assert cf.describe(cf.start("call", customer_id=new_customer(cf, 2)))["version"] == 1
    now[0] += defs.LATEST_TTL_SECONDS + 0.01
    assert cf.describe(cf.start("call", customer_id=new_customer(cf, 3)))["version"] == 2


def test_databases_in_one_process_do_not_share_cached_versions(cf, tmp_path):
    from engine.core import Careflow
    from tests.conftest import make_careflow

    deploy_call(cf, version="v1")
    cf.start("call", customer_id=new_customer(cf, 1))
    other: Careflow = make_careflow(f"sqlite:///{tmp_path / 'other.db'}", cf.clock, cf.registry.get("fake"))
    try:
        deploy_call(other, version="v1")
        deploy_call(other, version="v2")  # version ids 1 and 2 there: id 1 must not be taken from cf's cache
        iid = other.start("call", customer_id=new_customer(other, 1))
        with other.session() as s:
            [message] = s.scalars(select(OutboxMessage.payload).where(OutboxMessage.instance_id == iid))
        assert message == {"text": "客户1 v2"}
    finally:
        other.close()
