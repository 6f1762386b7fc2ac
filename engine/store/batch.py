"""Batches of requests in one transaction: many instances started, many tasks answered.

Each function does what its one-request counterpart does for every request of the batch
(``instances.start_instance``, ``tasks.complete_task``): the same checks, the same rows, the same
outcome. What changes is how the rows are read and written: the rows of the whole batch are
loaded with one query (the customers with their enrollments in the flow; the tasks with their
instances and those instances' customers), and the rows of all its requests are written
together at its end (``Writes(batch=True)``): one statement per table and statement shape (an
executemany; on PostgreSQL a COPY or one bulk UPDATE, see rows.py), with the instances' optimistic
lock (``revision``) checked for every row. On PostgreSQL they go in chunks of
requests sent without waiting for the server, all checked before the commit (``Writes.request_done``).

The guarantees are those of one request per transaction, since the batch is one transaction:

* Nothing is written outside the caller's transaction: a crash before its commit loses the whole
  batch, none of whose requests were acknowledged; side effects are outbox rows committed with
  the state that asked for them, sent after the commit, once (keyed by ``effect_key``).
* Any failure (a bad answer, a customer's new phone already taken, a lost optimistic lock, a task
  answered by someone else meanwhile) raises, as the one-request function would, and the caller
  rolls the whole batch back. ``Careflow.start_batch`` / ``complete_batch`` then run each request
  of that batch in its own transaction, so one failing request costs the others nothing.

A batch that names a customer (or an instance) twice is run request after request (still in the
caller's transaction), since the second request must see what the first one wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, inspect, select, true, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from engine import forms
from engine.crashpoints import crash_point
from engine.errors import Conflict, CustomerLookupError, InstanceLookupError, PermissionDenied, TaskLookupError
from engine.runtime import events as ev
from engine.store.inlist import in_list
from engine.store.rows import execute as execute_rows, pipelining, send as send_rows
from engine.store import tasks as task_store
from engine.store.definitions import flow_of_version, latest_flow
from engine.store.instances import (
    CUSTOMER,
    ENROLLMENT,
    INSTANCE,
    TASK,
    Runtime,
    Writes,
    _run,
    attach_loaded,
    begin,
    columns_of,
    enrollment_allows,
    insert_instances,
    instance_columns,
    new_instances,
    set_committed_values,
    start_instance,
    written_here_all,
)
from engine.store.models import Customer, Enrollment, Instance, Task, Timer, User


class _Loader:
    """Objects of one mapped class by id, read with one Core query (see ``_by_id``)."""

    __slots__ = ("cls", "manager", "keys", "statement")

    def __init__(self, cls: type) -> None:
        mapper = inspect(cls)
        self.cls = cls
        self.manager = mapper.class_manager
        props = list(mapper.column_attrs)
        self.keys = tuple(prop.key for prop in props)  # the select's columns, in this order; id first
        assert self.keys[0] == "id" and all(len(prop.columns) == 1 for prop in props)
        # The list of ids is one array parameter on PostgreSQL (see inlist.py).
        self.statement = select(*(prop.columns[0] for prop in props)).where(in_list(props[0].columns[0], "b_ids"))


# Hot statements, built once.
_CUSTOMERS = _Loader(Customer)
_INSTANCES = _Loader(Instance)
_TASKS = _Loader(Task)
_TASKS_WITH_INSTANCES = (
    select(*_TASKS.statement.selected_columns, *_INSTANCES.statement.selected_columns,
           *_CUSTOMERS.statement.selected_columns)
    .select_from(TASK.outerjoin(INSTANCE, INSTANCE.c.id == TASK.c.instance_id)
                 .outerjoin(CUSTOMER, CUSTOMER.c.id == INSTANCE.c.customer_id))
    .where(in_list(TASK.c.id, "b_ids"))
)
_ENROLLMENTS = _Loader(Enrollment)
_ENROLLMENT_COLUMNS = _ENROLLMENTS.statement.selected_columns
_CUSTOMER_COLUMNS = _CUSTOMERS.statement.selected_columns
# The batch's customers, each with its enrollment in the flow if any.
_CUSTOMERS_ENROLLED = (
    select(*_CUSTOMER_COLUMNS, *_ENROLLMENT_COLUMNS)
    .select_from(CUSTOMER.outerjoin(ENROLLMENT, (ENROLLMENT.c.flow_id == bindparam("b_flow"))
                                    & (ENROLLMENT.c.customer_id == CUSTOMER.c.id)))
    .where(in_list(CUSTOMER.c.id, "b_ids"))
)
# On PostgreSQL, one probe of the (flow_id, customer_id) key per customer. As a plain join the
# planner, trusting statistics from when the table was small (a new database, a new flow), read
# every enrollment of the flow and filtered them: a cost that grew with the flow's enrollments,
# 1-2 ms per batch of 100 at a few thousand. The LATERAL subquery's LIMIT (one row per key anyway)
# keeps it a per-customer index probe, whatever the statistics say.
_ENROLLMENT_PROBE = (
    select(*_ENROLLMENT_COLUMNS)
    .where(ENROLLMENT.c.flow_id == bindparam("b_flow"), ENROLLMENT.c.customer_id == CUSTOMER.c.id)
    .limit(1).lateral("e")
)
_CUSTOMERS_ENROLLED_PG = (
    select(*_CUSTOMER_COLUMNS, *(_ENROLLMENT_PROBE.c[column.name] for column in _ENROLLMENT_COLUMNS))
    .select_from(CUSTOMER.outerjoin(_ENROLLMENT_PROBE, true()))
    .where(in_list(CUSTOMER.c.id, "b_ids"))
)
_COMPLETE_OPEN_TASK = (
    update(TASK).where(TASK.c.id == bindparam("b_id"), TASK.c.status == "open")
    .values(status="completed", completed_by=bindparam("b_by"), completed_at=bindparam("b_at"),
            data=bindparam("b_data"), outcome="completed")
)


def _by_id(session: Session, loader: _Loader, ids: Sequence[int]) -> dict[int, Any]:
    """The objects with these ids, loaded with one query, as ``session.scalars(select(cls)...)`` loads them.

    The rows are read with SQLAlchemy Core and made into objects here: the ORM's loading machinery
    costs several times more per object than the object itself. What it does is done the same way:
    pending changes are flushed first (autoflush); an object already in the session is kept as it is
    (its pending changes too), only its expired columns taking the row's values; any other row
    becomes a new object holding the row's values as loaded, with nothing pending, in the session.
    """
    if session.autoflush:
        session.flush()
    found: dict[int, Any] = {}
    for row in session.connection().execute(loader.statement, {"b_ids": sorted(set(ids))}).all():
        found[row[0]] = _loaded(session, loader, row)
    return found


def _loaded(session: Session, loader: _Loader, row: Sequence[Any]) -> Any:
    """The object of one row of ``loader``'s columns, as ``_by_id`` makes it."""
    obj = session.identity_map.get((loader.cls, (row[0],), None))
    if obj is None:
        obj = loader.manager.new_instance()  # as the ORM makes a loaded object: no __init__
        obj.__dict__.update(zip(loader.keys, row))
        attach_loaded(session, obj, row[0])
        return obj
    state = instance_state(obj)
    unloaded = state.unloaded  # expired columns (all of them after a commit): reloaded
    if unloaded:
        loaded = state.dict
        for key, value in zip(loader.keys, row):
            if key in unloaded:
                loaded[key] = value
        state._commit(loaded, unloaded)  # what the ORM's loading does with them
    return obj


def _tasks_with_instances(session: Session, task_ids: Sequence[int]) -> tuple[dict[int, Task], dict[int, Instance],
                                                                                 dict[int, Customer]]:
    """The tasks with these ids, their instances and those instances' customers, each by id, read
    with one query (outer joins: a missing instance or customer is missing from its dict), each
    object made as ``_by_id`` makes it. One round trip rather than three on PostgreSQL."""
    if session.autoflush:
        session.flush()
    tasks: dict[int, Task] = {}
    instances: dict[int, Instance] = {}
    customers: dict[int, Customer] = {}
    task_end = len(_TASKS.keys)
    instance_end = task_end + len(_INSTANCES.keys)
    rows = session.connection().execute(_TASKS_WITH_INSTANCES, {"b_ids": sorted(set(task_ids))}).all()
    for row in rows:
        tasks[row[0]] = _loaded(session, _TASKS, row[:task_end])
        instance_id = row[task_end]
        if instance_id is not None and instance_id not in instances:
            instances[instance_id] = _loaded(session, _INSTANCES, row[task_end:instance_end])
        customer_id = row[instance_end]
        if customer_id is not None and customer_id not in customers:
            customers[customer_id] = _loaded(session, _CUSTOMERS, row[instance_end:])
    return tasks, instances, customers


def _customers_enrolled(session: Session, flow_id: str, ids: Sequence[int]) -> tuple[dict[int, Customer],
                                                                                     dict[int, Enrollment]]:
    """The customers with these ids, and their enrollments in the flow, each by customer id, read
    with one query; each object made as ``_by_id`` makes it."""
    if session.autoflush:
        session.flush()
    conn = session.connection()
    statement = _CUSTOMERS_ENROLLED_PG if conn.dialect.name == "postgresql" else _CUSTOMERS_ENROLLED
    customer_end = len(_CUSTOMERS.keys)
    customers: dict[int, Customer] = {}
    enrollments: dict[int, Enrollment] = {}
    for row in conn.execute(statement, {"b_flow": flow_id, "b_ids": sorted(set(ids))}).all():
        customers[row[0]] = _loaded(session, _CUSTOMERS, row[:customer_end])
        if row[customer_end] is not None:
            enrollments[row[0]] = _loaded(session, _ENROLLMENTS, row[customer_end:])
    return customers, enrollments


def start_instances(
    session: Session,
    rt: Runtime,
    flow_id: str,
    customer_ids: Sequence[int],
    *,
    data: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
    started_by: str | None = None,
) -> list[Instance]:
    """``start_instance`` for each customer (in this order), in the caller's transaction."""
    ids = list(customer_ids)
    if len(set(ids)) != len(ids):
        return [start_instance(session, rt, flow_id, customer_id=c, data=data, trigger=trigger, started_by=started_by)
                for c in ids]
    version_id, flow = latest_flow(session, flow_id)
    customers, enrollments = _customers_enrolled(session, flow.id, ids)
    for customer_id in ids:
        if customer_id not in customers:
            raise CustomerLookupError(customer_id)
    for customer_id in ids:
        enrollment_allows(flow, enrollments.get(customer_id), customer_id, rt.now)
    rows = [instance_columns(rt, flow, version_id, c, started_by) for c in ids]
    writes = Writes(session, batch=True)
    # Each new instance's row is written once, with the state its first run leaves: its id is given
    # beforehand. On PostgreSQL (ids from a sequence) each row is queued with its own request, so a
    # chunk sent early holds its requests' rows as they end; on SQLite all at once (see new_instances).
    instances = new_instances(session, rows)
    if instances is None:
        instances, new_rows = insert_instances(session, rows), []
    else:
        new_rows = [{**row, "id": instance.id} for instance, row in zip(instances, rows, strict=True)]
    per_request = bool(new_rows) and session.connection().dialect.name == "postgresql"
    if new_rows and not per_request:
        for instance, row in zip(instances, new_rows, strict=True):
            writes.add_new(instance, INSTANCE, row)
    for n, (instance, customer_id) in enumerate(zip(instances, ids, strict=True)):
        if per_request:
            writes.add_new(instance, INSTANCE, new_rows[n])
        begin(session, rt, flow, instance, customers[customer_id], enrollments.get(customer_id),
              ev.Start(dict(data or {}), dict(trigger or {})), writes)
        writes.request_done()
    writes.flush()
    return instances


_FORM_COLUMNS = frozenset({"form_id", "readonly", "hidden", "initial"})
_TASK_COLUMNS = frozenset({"id", "instance_id", "title", "step_id", "form_id", "token", "gen"})
_INSTANCE_COLUMNS = frozenset({"id", "customer_id", "flow_version_id"})


def complete_tasks(
    session: Session, rt: Runtime, answers: Sequence[tuple[int, Mapping[str, Any], str]], *, locale: str = "zh",
    answered: Callable[[list[Task]], None] | None = None,
) -> list[Task]:
    """``complete_task`` for each (task id, answer, user), in this order, in the caller's transaction.

    ``answered`` gets the tasks, in this order, once they hold their answers and before their
    instances move on: what the caller writes about them then (the audit entries) goes to the
    server with the batch's first writes, rather than after all of them. (A batch run request
    after request, see the module's docstring, calls it at its end.)"""
    if not answers:
        return []  # nothing to compare-and-set (an UPDATE needs a row of parameters)
    task_ids = [task_id for task_id, _data, _user in answers]
    tasks, instances, customers = _tasks_with_instances(session, task_ids)
    for task_id in task_ids:
        if task_id not in tasks:
            raise TaskLookupError(task_id)
    instance_ids = [tasks[task_id].instance_id for task_id in task_ids]
    customer_ids = [instances[i].customer_id for i in instance_ids if i in instances]
    if (len(set(task_ids)) != len(task_ids) or len(set(instance_ids)) != len(instance_ids)
            or len(set(customer_ids)) != len(customer_ids) or None in customer_ids):
        answered_tasks = [task_store.complete_task(session, rt, task_id, data, username, locale=locale)
                          for task_id, data, username in answers]
        if answered is not None:
            answered(answered_tasks)
        return answered_tasks
    users: dict[str, User] = {}
    views: dict[tuple[str, tuple[str, ...], tuple[str, ...]], forms.Form] = {}  # the same form's view for each task
    cleaned_answers = []
    for task_id, data, username in answers:
        task = tasks[task_id]
        user = users.get(username) or users.setdefault(username, task_store._user(session, username))
        task_store._open(task)
        if not task_store._may_work(task, user):
            raise PermissionDenied(f"{username} may not complete task {task_id}")
        loaded = columns_of(task, _FORM_COLUMNS)
        view = (loaded["form_id"], tuple(loaded["readonly"] or ()), tuple(loaded["hidden"] or ()))
        form = views.get(view) or views.setdefault(view, task_store.task_form(session, task))
        cleaned_answers.append(forms.check_submission(form, data, locale=locale, current=loaded["initial"] or {}))
        crash_point("during_form_submit_tx")
    session.flush()  # the caller's pending rows go first, as with one request
    # Compare-and-set every task from open to completed: of two submissions exactly one wins. If
    # any task was completed meanwhile, the batch fails (and its caller retries it one by one). On
    # PostgreSQL the UPDATE is sent without waiting (rows.send), and checked with the batch's other
    # writes, before the commit: the server runs it while the requests are computed.
    params = [{"b_id": task_id, "b_by": username, "b_at": rt.now, "b_data": cleaned}
              for (task_id, _data, username), cleaned in zip(answers, cleaned_answers, strict=True)]

    def check(matched: int) -> None:
        if matched != len(params):
            raise Conflict(f"{len(params) - matched} task(s) of this batch were completed by someone else")

    conn = session.connection()
    if pipelining(conn):
        send_rows(conn, _COMPLETE_OPEN_TASK, params, check)
    else:
        check(execute_rows(conn, _COMPLETE_OPEN_TASK, params).rowcount)
    for (task_id, _data, username), cleaned in zip(answers, cleaned_answers, strict=True):
        set_committed_values(tasks[task_id], {"status": "completed", "completed_by": username, "completed_at": rt.now,
                                              "data": cleaned, "outcome": "completed"})
    written_here_all(session, [tasks[task_id] for task_id in task_ids])
    if answered is not None:
        answered([tasks[task_id] for task_id in task_ids])
    writes = Writes(session, batch=True)
    for (task_id, _data, username), cleaned in zip(answers, cleaned_answers, strict=True):
        done = columns_of(tasks[task_id], _TASK_COLUMNS)  # none of these is changed by running the request
        instance = instances.get(done["instance_id"])
        if instance is None:
            raise InstanceLookupError(done["instance_id"])
        loaded = columns_of(instance, _INSTANCE_COLUMNS)
        customer = customers.get(loaded["customer_id"])
        if customer is None:
            raise CustomerLookupError(loaded["customer_id"])
        title, step_id = done["title"], done["step_id"]
        writes.timeline(
            loaded["customer_id"], rt.now, "task_completed",
            {"zh": f"任务完成：{title.get('zh', step_id)}", "en": f"Task done: {title.get('en', step_id)}"},
            {"by": username, "form": done["form_id"], "answers": cleaned}, loaded["id"],
        )
        _run(session, rt, instance, flow_of_version(session, loaded["flow_version_id"]), customer,
             ev.TaskDone(done["token"], done["gen"], cleaned, username, done["id"]), writes)
        writes.request_done()
    writes.flush()
    return [tasks[task_id] for task_id in task_ids]


def timer_event(timer: Timer) -> ev.TimerFired:
    """The event a fired timer delivers to its instance."""
    data = dict(timer.data)
    data["scheduled_for"] = timer.due_at.isoformat()
    return ev.TimerFired(timer.token, int(data.get("gen", 0)), timer.kind, data)


def fire_timers(session: Session, rt: Runtime, timers: Sequence[Timer], writes: Writes) -> list[Timer] | None:
    """Deliver each fired timer's event to its instance (in this order), the instances and customers
    loaded with one query per table and the rows gathered in ``writes``: the timers whose instance
    was still running. None, with nothing done, when two timers belong to one instance (the second
    must see what the first one did: fire them one per transaction)."""
    instance_ids = [t.instance_id for t in timers]
    if len(set(instance_ids)) != len(instance_ids):
        return None
    instances = _by_id(session, _INSTANCES, instance_ids) if instance_ids else {}
    customer_ids = [i.customer_id for i in instances.values() if i.customer_id is not None]
    customers = _by_id(session, _CUSTOMERS, customer_ids) if customer_ids else {}
    ran = []
    for timer in timers:
        instance = instances.get(timer.instance_id)
        if instance is None or instance.status != "running":
            continue
        customer = customers.get(instance.customer_id) if instance.customer_id is not None else None
        _run(session, rt, instance, flow_of_version(session, instance.flow_version_id), customer, timer_event(timer), writes)
        ran.append(timer)
    return ran
