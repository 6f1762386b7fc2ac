"""Starting instances and delivering events to them: the interpreter's outcome applied as rows.

Every function takes the session first and never commits: the caller owns the transaction, so
one step transition (state, tasks, timers, outbox rows, history) commits or rolls back whole.

Within a request the writes are gathered and made at its end (see ``Writes``): one UPDATE per
changed object (instance, customer, enrollment), one INSERT per table for the appended rows
(history, timeline, tasks, timers, outbox...). They are written with SQLAlchemy Core rather
than by the ORM's flush, which costs several times more; the loaded objects are kept as the ORM
would keep them. Nothing is written outside the caller's transaction, so a crash before its
commit still loses the whole request and nothing else.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, event, insert, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_dict, instance_state, set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Executable

from engine.calendar import BusinessCalendar
from engine.crashpoints import crash_point
from engine.errors import Conflict, InstanceLookupError, SubmissionInvalid
from engine.flow.model import Duration, Flow
from engine.runtime import effects as fx
from engine.runtime import events as ev
from engine.runtime.interpreter import Context, Outcome, advance, start_state
from engine.runtime.state import Status
from engine.store import customers as cust
from engine.store.inlist import in_list
from engine.store.rows import execute as execute_rows, insert_ids, new_ids, pipelining, send as send_rows, sync as sync_rows
from engine import forms
from engine.store.definitions import flow_of_version, latest_flow, latest_form
from engine.store.models import (
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

_RUNNING = Status.RUNNING.value  # an Enum's .value is a slow property

CUSTOMER: Table = Customer.__table__  # type: ignore[assignment]
ENROLLMENT: Table = Enrollment.__table__  # type: ignore[assignment]
HISTORY: Table = HistoryEntry.__table__  # type: ignore[assignment]
INCIDENT: Table = Incident.__table__  # type: ignore[assignment]
INSTANCE: Table = Instance.__table__  # type: ignore[assignment]
NOTIFICATION: Table = Notification.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]
TASK: Table = Task.__table__  # type: ignore[assignment]
TIMELINE: Table = TimelineEntry.__table__  # type: ignore[assignment]
TIMER: Table = Timer.__table__  # type: ignore[assignment]


@dataclass
class Runtime:
    """What applying an outcome needs besides the session."""

    now: datetime
    calendar: BusinessCalendar


class NotEnrolled(Conflict):
    """Raised when the flow's enrollment policy keeps this customer out right now."""

    code = "not_enrolled"


class Writes:
    """What one request writes, gathered and written together at its end (``flush``).

    * ``change``: new column values of a loaded object (instance, customer, enrollment). The
      object takes them at once, as if loaded so; the row gets one UPDATE of the changed columns
      at flush, the instance's with its optimistic-lock check (``revision``), as an ORM flush.
    * ``add``: appended rows, grouped per table, so each table gets one (multi-row) INSERT.
    * ``add_new``: the row of a new object whose id was given beforehand (``rows.new_ids``): until
      it is written, ``change`` puts the object's new values in the row, written once.
    * ``update``: bulk UPDATE statements, in order. An UPDATE of a table runs after the rows
      added to that table before it and before the rows added after it (a task cancelled, then
      created again by a send-back, stays open). An UPDATE never reads another table, so rows of
      other tables may go before it.

    Whatever reads the database while writes are waiting calls ``flush()`` first. The rows are
    plain column dicts with the same keys the ORM objects were built with, so the stored rows
    are the same (a JSON column left out stays SQL NULL, as with the ORM).

    A batch on PostgreSQL does not keep everything for its end: every ``CHUNK`` requests
    (``request_done``) their writes are sent in pipeline mode (``rows.send``), without waiting
    for the server, which runs them while the next requests are computed; the server's work and
    the client's then overlap (they take about a third and two thirds of a batch's time). The
    transaction is the same one; ``flush()`` waits for everything sent (``rows.sync``) and raises
    the first error or lost optimistic lock of any chunk, so a batch still fails whole before its
    commit. Any other statement on the connection (a read: ``_pick_user``, the holders of a phone
    a customer held only between two steps, see ``_check_claims``...) syncs first, so it sees
    every write sent before it. COPY is not allowed in pipeline mode: the rows of a plain INSERT go
    as one multi-row ``INSERT ... VALUES`` there.

    Why pipeline mode: it keeps the batch one transaction on one connection, in the order the
    writes were made, and costs the client about what the statements sent at the end cost (the
    extra statements of the chunks, ~4 per 100 requests each, are cheap; per-column arrays were
    not, see rows.py). It pays only when the server has a core of its own: on 2 idle cores the
    onboarding series of bench/engine.py (100 requests per batch) ran ~1,480 instances/s in
    chunks of 25 or 34 requests against ~1,330 with everything sent at the end; with the other
    core busy, ~10% slower (each chunk's statements cost client and server ~0.1 ms each). Chunks
    of 15 cost more than they gain; 34 costs less than 25 when the machine is busy.
    """

    #: Requests of a batch per chunk sent without waiting (PostgreSQL).
    CHUNK = 34

    __slots__ = ("session", "batch", "claims", "released", "_changes", "_ops", "_open", "_requests", "_pipelined", "_new")

    def __init__(self, session: Session, *, batch: bool = False):
        self.session = session
        # A batch (see engine/store/batch.py) gathers the writes of many requests and flushes them
        # once: a request's end does not flush, and phone/e-mail uniqueness is checked for all its
        # customers at once, at flush (``claims``: (customer id, column, value) to be unique; see
        # ``_check_claims``). ``released``: the phone/e-mail values customers of these writes give
        # up, by (column, value): the last customer that gave it up.
        self.batch = batch
        self.claims: list[tuple[int, str, Any]] = []
        self.released: dict[tuple[str, Any], int] = {}
        self._changes: dict[int, _Change] = {}
        self._ops: list[tuple[Table, list[dict[str, Any]]] | _Update] = []
        self._open: dict[Table, list[dict[str, Any]]] = {}
        self._requests = 0
        self._pipelined: bool | None = None  # known at the first chunk
        # Rows queued by add_new and not written yet, by id(obj): [row, whether its revision moved].
        self._new: dict[int, list[Any]] = {}

    def change(self, obj: Any, table: Table, values: Mapping[str, Any], *, versioned: bool = False) -> None:
        """Give a loaded object new column values now and write them at flush.

        Only values that differ from the loaded ones count, as in an ORM flush: an instance that
        an event left as it was is not written, and its revision stays.
        """
        loaded = obj.__dict__  # the ORM's loaded values (inspect(obj).dict is this dict)
        new = {key: value for key, value in values.items() if key not in loaded or loaded[key] != value}
        if not new:
            return
        set_committed_values(obj, new)
        queued = self._new.get(id(obj))
        if queued is not None:
            self._change_new(obj, queued, new, versioned)
            return
        written_here(self.session, obj)
        pending = self._changes.get(id(obj))
        if pending is None:
            self._changes[id(obj)] = _Change(obj, table, new, versioned)
        else:
            pending.values.update(new)

    @staticmethod
    def _change_new(obj: Any, queued: list[Any], new: dict[str, Any], versioned: bool) -> None:
        """A change of an object whose row waits to be inserted: the row takes the new values. Its
        revision moves once, as one UPDATE of the row would move it (no other writer knows the row yet)."""
        row = queued[0]
        row.update(new)
        if versioned and not queued[1]:
            queued[1] = True
            row["revision"] += 1
            set_committed_value(obj, "revision", row["revision"])

    def add_new(self, obj: Any, table: Table, row: dict[str, Any]) -> None:
        """Queue the INSERT of a new object's row, its id given (the object attached as loaded, see
        ``new_instances``); the object's changes go in the row until it is written."""
        self._new[id(obj)] = [row, False]
        self.add(table, row)

    def add(self, table: Table, row: dict[str, Any]) -> None:
        rows = self._open.get(table)
        if rows is None:
            rows = self._open[table] = []
            self._ops.append((table, rows))
        rows.append(row)

    def update(self, table: Table, statement: Executable, params: Mapping[str, Any] | None = None,
               then: _Sync | None = None) -> None:
        """Queue an UPDATE of ``table``; ``then`` syncs the loaded objects right after it.

        Without ``params`` the statement is run by the ORM, which syncs loaded objects itself.
        Consecutive UPDATEs of one prebuilt statement are run as one executemany.
        """
        self._open.pop(table, None)  # rows added from now on go after this statement
        self._ops.append(_Update(table, statement, params, then))

    def timeline(
        self, customer_id: int, at: datetime, kind: str, title: Mapping[str, str],
        data: Mapping[str, Any] | None = None, instance_id: int | None = None,
    ) -> None:
        """The same row as ``customers.add_timeline``."""
        self.add(TIMELINE, {"customer_id": customer_id, "at": at, "kind": kind, "title": dict(title),
                            "data": dict(data or {}), "instance_id": instance_id})

    def request_done(self) -> None:
        """A request of the batch is complete: every ``CHUNK`` requests, send what they wrote."""
        self._requests += 1
        if self._requests % self.CHUNK or not self.batch:
            return
        if self._pipelined is None:
            self._pipelined = pipelining(self.session.connection())
        if self._pipelined:
            self._write(wait=False)

    def flush(self) -> None:
        """Write everything gathered so far, in order, in the session's transaction."""
        self._write(wait=True)

    def _write(self, *, wait: bool) -> None:
        pipelined = bool(self._pipelined)
        if self.claims:
            claims, self.claims = self.claims, []
            _check_claims(self.session, claims, self.released, pipelined)
        if self.released:
            self.released = {}  # given up in the database once these writes run
        if not (self._changes or self._ops):
            if pipelined and wait:
                sync_rows(self.session.connection())
            return
        changes, self._changes = self._changes, {}
        ops, self._ops, self._open = self._ops, [], {}
        self._new.clear()  # their rows are written now: a later change is an UPDATE
        conn = self.session.connection()
        run = send_rows if pipelined else execute_rows
        # Changed objects first: a lost optimistic lock then fails the request before anything else
        # (pipelined: at the sync, before the commit).
        # Changes of the same shape (table, columns) go in one executemany.
        shapes: dict[tuple[Table, tuple[str, ...], bool], list[_Change]] = {}
        for change in changes.values():
            shapes.setdefault((change.table, tuple(sorted(change.values)), change.versioned), []).append(change)
        for (table, keys, versioned), group in shapes.items():
            _write_changes(conn, table, keys, versioned, group, pipelined)
        for op in _merged(ops):
            if isinstance(op, _Update):  # an ORM statement: the ORM syncs loaded objects itself
                self.session.execute(op.statement)
                continue
            if isinstance(op, _Updates):
                run(conn, op.statement, op.params)
                if op.then:
                    _sync_loaded(self.session, op.then)
                continue
            table, added = op
            run(conn, _insert_into(table), added)
            if table is OUTBOX:
                for _row in added:
                    crash_point("after_outbox_insert")
        if pipelined and wait:
            sync_rows(conn)


@dataclass(slots=True)
class _Change:
    """Changed columns of one loaded object, written by primary key."""

    obj: Any
    table: Table
    values: dict[str, Any] = field(default_factory=dict)
    versioned: bool = False


def _write_changes(conn: Any, table: Table, keys: tuple[str, ...], versioned: bool, group: list[_Change],
                   pipelined: bool = False) -> None:
    """One UPDATE by id (executemany for several objects); versioned rows check their revision.

    Pipelined, the check runs when the rows matched are known (``rows.sync``), before the commit;
    the objects take their new revision at once, as the rows will have it unless the batch fails."""
    statement = _update_by_id(table, keys, versioned)
    params_list = []
    for change in group:
        params = {f"v_{key}": value for key, value in change.values.items()}
        params["b_id"] = change.obj.id
        if versioned:
            revision = change.obj.revision
            params["b_revision"], params["v_revision"] = revision, revision + 1
        params_list.append(params)
    expected = len(params_list)

    def check(matched: int) -> None:
        if matched != expected:
            # What the ORM raises: a row was changed (or deleted) by another transaction. Both SQLite and
            # psycopg report the rows matched by an executemany in total (sane multi-row count).
            raise StaleDataError(f"UPDATE statement on table '{table.name}' expected to update {expected} row(s); "
                                 f"{matched} were matched.")

    if pipelined:
        send_rows(conn, statement, params_list, check if versioned else None)
    else:
        matched = execute_rows(conn, statement, params_list).rowcount
        if versioned:
            check(matched)
    if not versioned:
        return
    for change in group:
        set_committed_value(change.obj, "revision", change.obj.revision + 1)


@lru_cache(maxsize=32)
def _insert_into(table: Table) -> Executable:
    return table.insert()


@lru_cache(maxsize=128)
def _update_by_id(table: Table, keys: tuple[str, ...], versioned: bool) -> Executable:
    """UPDATE table SET <keys> WHERE id = :b_id [AND revision = :b_revision], built once per shape."""
    values = {key: bindparam(f"v_{key}") for key in keys}
    statement = update(table).where(table.c.id == bindparam("b_id"))
    if versioned:
        statement = statement.where(table.c.revision == bindparam("b_revision"))
        values["revision"] = bindparam("v_revision")
    return statement.values(values)


def set_committed_values(obj: Any, values: Mapping[str, Any]) -> None:
    """``set_committed_value(obj, key, value)`` for each item, with one commit of the object's state.

    For a column attribute, ``set_committed_value`` puts the value in the object's ``__dict__`` and
    commits that key (no history, not expired); committing several keys at once is the same as
    committing them one after the other. Anything but plain columns goes through the ORM's function.
    """
    state = instance_state(obj)
    keys = _COLUMN_KEYS.get(state.class_)
    if keys is None:
        keys = _COLUMN_KEYS[state.class_] = _column_keys(state.class_)
    if not keys.issuperset(values):
        for key, value in values.items():
            set_committed_value(obj, key, value)
        return
    loaded = state.dict
    loaded.update(values)
    # What set_committed_value itself calls, there with one key. It forgets the keys' pending
    # changes, expiry and loader callables: for an object that has none of these, nothing.
    if state.committed_state or state.expired_attributes or state.callables or state.expired:
        state._commit(loaded, values)


_COLUMN_KEYS: dict[type, frozenset[str]] = {}  # _column_keys by class, without lru_cache's call


@lru_cache(maxsize=64)
def _column_keys(cls: type) -> frozenset[str]:
    """The mapped column attributes of ``cls``, whose values set_committed_value stores as they are."""
    return frozenset(prop.key for prop in inspect(cls).column_attrs)


# --- objects whose rows are written here, not by the ORM's flush -----------------------------------

_WRITTEN = "careflow.written_here"


def written_here(session: Session, obj: Any, *, inserted: bool = False) -> None:
    """Remember an object whose row this module writes behind the ORM's back.

    The ORM expires the objects it wrote when their transaction or savepoint is rolled back
    (and removes the ones it inserted), so that they are read again. These objects get the same
    treatment (see ``_rolled_back``); without it, a savepoint rolled back and carried on from
    would leave them showing values the database no longer has. An object already remembered in
    the same transaction or savepoint (as inserted, or not if neither is) is not remembered again:
    a rollback would treat it the same way twice.
    """
    written_here_all(session, (obj,), inserted=inserted)


def written_here_all(session: Session, objs: Iterable[Any], *, inserted: bool = False) -> None:
    """``written_here`` for each object, the transaction looked up once."""
    current, written, last = _written_record(session)
    for obj in objs:
        seen = last.get(id(obj))
        if seen is not None and seen[0] is current and seen[1]() is obj and (seen[2] or not inserted):
            continue
        # Weakly, as the session holds its objects: one no longer used needs no expiring.
        entry = (current, weakref.ref(obj), inserted)
        written.append(entry)
        last[id(obj)] = entry


def _written_record(session: Session) -> tuple[Any, list[Any], dict[int, Any]]:
    """The current transaction or savepoint, the objects remembered in the session's transaction
    and the last entry of each (by id)."""
    root = session.get_transaction()
    record = session.info.get(_WRITTEN)
    if record is None:
        event.listen(session, "after_soft_rollback", _rolled_back)
    if record is None or record[0] is not root:  # a new transaction: what the last one wrote is settled
        record = session.info[_WRITTEN] = (root, [], {})
    return session.get_nested_transaction() or root, record[1], record[2]


def _rolled_back(session: Session, transaction: Any) -> None:
    record = session.info.get(_WRITTEN)
    if record is None:
        return
    kept = []
    for written_in, ref, inserted in record[1]:
        obj = ref()
        if obj is None:
            continue
        if not _within(written_in, transaction):
            kept.append((written_in, ref, inserted))
        elif obj in session:
            if inserted:
                session.expunge(obj)
            else:
                session.expire(obj)
    record[1][:] = kept
    record[2].clear()  # only spares duplicates: the kept ones may be remembered again


def _within(transaction: Any, outer: Any) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


@dataclass(frozen=True, slots=True)
class _Update:
    table: Table
    statement: Executable
    params: Mapping[str, Any] | None
    then: _Sync | None


@dataclass(slots=True)
class _Updates:
    """UPDATEs of one prebuilt statement, run as one executemany (see ``_merged``)."""

    table: Table
    statement: Executable
    params: list[Mapping[str, Any]]
    then: list[_Sync]


def _merged(ops: list[Any]) -> list[Any]:
    """The ops, with each UPDATE of a prebuilt statement joined to an earlier UPDATE of the same
    statement when nothing in between touches its table: it may then run earlier, since an
    UPDATE never reads another table (the requests of a batch each cancel their task...)."""
    out: list[Any] = []
    for op in ops:
        if isinstance(op, _Update) and op.params is not None:
            for earlier in reversed(out):
                if isinstance(earlier, _Updates) and earlier.statement is op.statement:
                    earlier.params.append(op.params)
                    if op.then is not None:
                        earlier.then.append(op.then)
                    break
                if (earlier.table if isinstance(earlier, (_Update, _Updates)) else earlier[0]) is op.table:
                    out.append(_Updates(op.table, op.statement, [op.params], [op.then] if op.then else []))
                    break
            else:
                out.append(_Updates(op.table, op.statement, [op.params], [op.then] if op.then else []))
        else:
            out.append(op)
    return out


@dataclass(frozen=True, slots=True)
class _Sync:
    """After a Core UPDATE: loaded ``cls`` objects whose columns match ``where`` take ``values``.

    ``key`` (a column of ``where``) indexes the syncs of a group of UPDATEs, so that one pass over
    the session's objects serves them all.
    """

    cls: type
    key: str
    where: Mapping[str, Any]
    values: Mapping[str, Any]


def _sync_loaded(session: Session, syncs: list[_Sync]) -> None:
    """After Core UPDATEs, do to the objects already loaded in the session what the ORM's own
    bulk UPDATE does ("evaluate" synchronisation): an object whose loaded columns match a sync's
    ``where`` takes its ``values`` as its database state; an object that cannot be judged (a column
    of ``where`` not loaded), or that has unflushed changes to those columns, forgets them and
    reloads them when next used. ``syncs`` (one class, one key) come from UPDATEs of one statement."""
    cls, key = syncs[0].cls, syncs[0].key
    by_key: dict[Any, list[_Sync]] = {}
    for sync in syncs:
        by_key.setdefault(sync.where[key], []).append(sync)
    identity_map = session.identity_map
    for identity in [i for i in identity_map.keys() if i[0] is cls]:  # keys are (class, pk, token)
        obj = identity_map.get(identity)
        if obj is None:
            continue
        loaded = instance_dict(obj)  # the loaded column values; reading it never loads anything
        if key not in loaded:
            session.expire(obj, list(syncs[0].values))
            continue
        for sync in by_key.get(loaded[key], ()):
            if not all(k in loaded for k in sync.where):
                session.expire(obj, list(sync.values))
                continue
            if any(loaded[k] != value for k, value in sync.where.items()):
                continue
            unmodified = inspect(obj).unmodified
            for k, value in sync.values.items():
                if k in unmodified:
                    set_committed_value(obj, k, value)
                else:
                    session.expire(obj, [k])
            written_here(session, obj)
            break


# Hot statements, built once: building and hashing a statement costs more than running it.
_CANCEL_TASKS = update(TASK).where(TASK.c.instance_id == bindparam("b_instance"), TASK.c.status == "open").values(
    status="cancelled", outcome=bindparam("b_reason"), completed_at=bindparam("b_now"))
_CANCEL_TOKEN_TASKS = _CANCEL_TASKS.where(TASK.c.token == bindparam("b_token"))
_CANCEL_TIMERS = update(TIMER).where(TIMER.c.instance_id == bindparam("b_instance"), TIMER.c.status == "pending").values(
    status="cancelled")
_CANCEL_TOKEN_TIMERS = _CANCEL_TIMERS.where(TIMER.c.token == bindparam("b_token"))
_RELEASE_ENROLLMENT = update(ENROLLMENT).where(
    ENROLLMENT.c.flow_id == bindparam("b_flow"), ENROLLMENT.c.customer_id == bindparam("b_customer"),
    ENROLLMENT.c.active_instance_id == bindparam("b_instance"),
).values(active_instance_id=None)
_INSERT_INSTANCE = insert(INSTANCE).returning(INSTANCE.c.id)
_INSERT_INSTANCES = insert(INSTANCE).returning(INSTANCE.c.id, sort_by_parameter_order=True)
_HOLDERS = select(CUSTOMER.c.id, CUSTOMER.c.phone, CUSTOMER.c.email).where(
    in_list(CUSTOMER.c.phone, "b_phones") | in_list(CUSTOMER.c.email, "b_emails"))
_INSTANCE_BY_ID = select(Instance).where(Instance.id == bindparam("b_id"))
_ENROLLMENT_OF = select(Enrollment).where(Enrollment.flow_id == bindparam("b_flow"), Enrollment.customer_id == bindparam("b_customer"))


def _instance_info(instance: Instance) -> dict[str, Any]:
    loaded = columns_of(instance, _INFO_COLUMNS)
    return {
        "id": loaded["id"],
        "flow": loaded["flow_id"],
        "started_at": loaded["started_at"].isoformat(),
        "parent_id": loaded["parent_id"],
    }


_INFO_COLUMNS = frozenset({"id", "flow_id", "started_at", "parent_id"})
_RUN_COLUMNS = frozenset({"id", "customer_id", "flow_id", "parent_id", "state"})


def columns_of(obj: Any, keys: frozenset[str]) -> Mapping[str, Any]:
    """The object's values of ``keys``: its ``__dict__`` (where the ORM keeps the loaded values) when
    they are all loaded, else the values read through the ORM's attributes, which load the expired
    ones. Reading ``__dict__`` spares the attributes' descriptors (a Python call each) in hot loops."""
    loaded = obj.__dict__
    if loaded.keys() >= keys:
        return loaded
    return {key: getattr(obj, key) for key in keys}


def _check_enrollment(session: Session, flow: Flow, customer_id: int, now: datetime) -> Enrollment | None:
    row = session.scalars(_ENROLLMENT_OF, {"b_flow": flow.id, "b_customer": customer_id}).first()
    enrollment_allows(flow, row, customer_id, now)
    return row


def enrollment_allows(flow: Flow, row: Enrollment | None, customer_id: int, now: datetime) -> None:
    """NotEnrolled unless the flow's policy lets the customer (enrolled as ``row``) in now."""
    if row is None:
        return
    policy = flow.enrollment
    if policy.concurrent == "one_per_customer" and row.active_instance_id is not None:
        raise NotEnrolled(f"customer {customer_id} is already in flow {flow.id!r} (instance {row.active_instance_id})")
    if policy.reenroll == "never":
        raise NotEnrolled(f"flow {flow.id!r} enrolls customer {customer_id} only once")
    if policy.reenroll == "after":
        wait = (policy.reenroll_after or Duration(days=0)).plain
        if now < row.last_started_at + wait:
            raise NotEnrolled(f"customer {customer_id} may re-enter flow {flow.id!r} after {(row.last_started_at + wait).isoformat()}")


def start_instance(
    session: Session,
    rt: Runtime,
    flow_id: str,
    *,
    customer_id: int | None = None,
    data: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
    started_by: str | None = None,
    parent: tuple[int, str, int] | None = None,
) -> Instance:
    """Create an instance on the newest version of a flow and run it until it waits."""
    version_id, flow = latest_flow(session, flow_id)
    customer = cust.get_customer(session, customer_id) if customer_id is not None else None
    enrollment = _check_enrollment(session, flow, customer_id, rt.now) if customer_id is not None else None
    instance = _insert_instance(session, instance_columns(rt, flow, version_id, customer_id, started_by, parent))
    begin(session, rt, flow, instance, customer, enrollment, ev.Start(dict(data or {}), dict(trigger or {})),
          Writes(session))
    return instance


def instance_columns(rt: Runtime, flow: Flow, version_id: int, customer_id: int | None, started_by: str | None,
                     parent: tuple[int, str, int] | None = None) -> dict[str, Any]:
    """Every column of a new instance row but its id."""
    return {
        "flow_id": flow.id,
        "flow_version_id": version_id,
        "customer_id": customer_id,
        "status": Status.RUNNING.value,
        "outcome": None,
        "state": start_state(flow),
        "revision": 1,
        "parent_id": parent[0] if parent else None,
        "parent_token": parent[1] if parent else None,
        "parent_gen": parent[2] if parent else None,
        "started_at": rt.now,
        "ended_at": None,
        "started_by": started_by,
    }


def begin(session: Session, rt: Runtime, flow: Flow, instance: Instance, customer: Customer | None,
          enrollment: Enrollment | None, start: ev.Start, writes: Writes) -> Outcome:
    """Enroll the customer of a new instance (its row inserted) and run it until it waits."""
    customer_id = instance.customer_id
    if customer_id is not None:
        if enrollment is None:
            writes.add(ENROLLMENT, {"flow_id": flow.id, "customer_id": customer_id, "active_instance_id": instance.id,
                                    "last_started_at": rt.now, "count": 1})
        else:
            writes.change(enrollment, ENROLLMENT, {"active_instance_id": instance.id, "last_started_at": rt.now,
                                                   "count": enrollment.count + 1})
        writes.timeline(
            customer_id, rt.now, "flow_started",
            {"zh": f"进入流程：{flow.name.get('zh', flow.id)}", "en": f"Entered flow: {flow.name.get('en', flow.id)}"},
            instance_id=instance.id,
        )
    return _run(session, rt, instance, flow, customer, start, writes)


def _insert_instance(session: Session, columns: dict[str, Any]) -> Instance:
    """INSERT the row (its id is needed at once: every other row refers to it) and attach it as loaded.

    ``columns`` names every column but the id, so nothing of the object is left to load.
    """
    session.flush()  # as the ORM would: the caller's pending rows (a new customer...) go first
    instance = _as_loaded(session, session.connection().execute(_INSERT_INSTANCE, columns).scalar_one(), columns)
    written_here(session, instance, inserted=True)
    return instance


def new_instances(session: Session, rows: list[dict[str, Any]]) -> list[Instance] | None:
    """Instance objects for new rows, their ids given now (``rows.new_ids``), attached as loaded;
    their rows are written later, each once, with the values its first run leaves (``Writes.add_new``).
    None where ids cannot be given beforehand.

    The caller queues each row (``add_new``) before anything that refers to it, and on SQLite all
    of them at once: another new instance of the transaction (a subflow's) takes ``max(id) + 1``
    when it is inserted, which must not be one of these ids (any write of the batch writes them all first).
    """
    session.flush()
    ids = new_ids(session.connection(), INSTANCE, len(rows))
    if ids is None:
        return None
    instances = [_as_loaded(session, instance_id, columns) for instance_id, columns in zip(ids, rows, strict=True)]
    written_here_all(session, instances, inserted=True)
    return instances


def insert_instances(session: Session, rows: list[dict[str, Any]]) -> list[Instance]:
    """``_insert_instance`` for many rows: one INSERT … RETURNING, ids in the order of ``rows``."""
    session.flush()
    ids = insert_ids(session.connection(), _INSERT_INSTANCES, rows)
    instances = [_as_loaded(session, instance_id, columns) for instance_id, columns in zip(ids, rows, strict=True)]
    written_here_all(session, instances, inserted=True)
    return instances


_INSTANCE_MANAGER = inspect(Instance).class_manager


def _as_loaded(session: Session, instance_id: int, columns: dict[str, Any]) -> Instance:
    """The Instance object of a row just inserted, in the session as if loaded (see ``attach_loaded``).

    The values go straight into the object's __dict__, where loading puts them, instead of through
    the constructor's instrumented setattr calls (four times the cost, for the same object).
    """
    instance = _INSTANCE_MANAGER.new_instance()
    loaded = instance.__dict__
    loaded.update(columns)
    loaded["id"] = instance_id
    attach_loaded(session, instance, instance_id)
    return instance


def attach_loaded(session: Session, obj: Any, pk: Any) -> None:
    """Make ``obj``, new (``ClassManager.new_instance``) and holding a row's column values in its
    ``__dict__``, an object of the session as loaded from that row: persistent, nothing pending.

    This is what the ORM's loading does with a row whose object is not in the session yet (``_instance``
    in sqlalchemy/orm/loading.py): the identity key set, the state put in the identity map. Here
    without ``make_transient_to_detached`` and ``session.add``, whose generic checks and cascade walk
    over every mapped attribute cost three times the loading itself. The identity map still refuses
    a second object of the same identity. For mapped classes with no relationship (nothing to cascade).
    """
    state = instance_state(obj)
    state.key = (state.class_, (pk,), None)
    state.identity_token = None
    state.session_id = session.hash_key
    session.identity_map.add(state)
    if session.dispatch.loaded_as_persistent:
        session.dispatch.loaded_as_persistent(session, state)


def get_instance(session: Session, instance_id: int) -> Instance:
    instance = cust.load_by_id(session, Instance, _INSTANCE_BY_ID, instance_id)
    if instance is None:
        raise InstanceLookupError(instance_id)
    return instance


def deliver(session: Session, rt: Runtime, instance: Instance, event: ev.Event) -> Outcome:
    """Advance one instance by one event and apply the outcome."""
    return deliver_with(session, rt, instance, event, Writes(session))


def deliver_with(session: Session, rt: Runtime, instance: Instance, event: ev.Event, writes: Writes) -> Outcome:
    """``deliver``, also writing the rows the caller gathered in ``writes`` for this request."""
    session.flush()  # the caller's pending rows go before this request's, as they did with the ORM
    flow = flow_of_version(session, instance.flow_version_id)
    customer = cust.customer_by_id(session, instance.customer_id) if instance.customer_id is not None else None
    return _run(session, rt, instance, flow, customer, event, writes)


def _run(
    session: Session, rt: Runtime, instance: Instance, flow: Flow, customer: Customer | None, event: ev.Event,
    writes: Writes,
) -> Outcome:
    # Columns that running the instance never changes (state is replaced, not changed in place).
    loaded = columns_of(instance, _RUN_COLUMNS)
    ctx = Context(
        now=rt.now,
        instance=_instance_info(instance),
        customer=cust.customer_dict(customer) if customer is not None else None,
        calendar=rt.calendar,
        pick_user=lambda role, strategy, c: _pick_user(session, writes, role, strategy, c),
    )
    # Whether this event ends the instance: its end (end time, the customer's timeline, the parent
    # told) is then recorded here, once. Not when it had ended already (an ended status is final:
    # the event is only logged as ignored), nor when a subflow that ended at once moves it on to
    # its end while the effects are applied: that delivery of its own records the end.
    was_running = loaded["state"]["status"] == _RUNNING
    outcome = advance(flow, loaded["state"], event, ctx)
    state = outcome.state
    columns = {"state": state, "status": state["status"], "outcome": state.get("outcome")}
    ends = was_running and columns["status"] != _RUNNING
    # The end time goes in the same change as the state, unless a subflow starts first (its start
    # writes the state, and the child's end may deliver to this instance meanwhile).
    end_known = ends and not any(isinstance(e, fx.StartSubflow) for e in outcome.effects)
    if end_known:
        columns["ended_at"] = rt.now
    writes.change(instance, INSTANCE, columns, versioned=True)
    writes.add(HISTORY, {"instance_id": loaded["id"], "at": rt.now, "event": type(event).__name__,
                         "entries": outcome.history})
    for effect in outcome.effects:
        _APPLIERS.get(type(effect), _apply)(session, rt, instance, customer, outcome, effect, writes)
    if ends:
        if not end_known:
            writes.change(instance, INSTANCE, {"ended_at": rt.now}, versioned=True)
        _record_end(rt, instance, flow, writes)
        _release_enrollment(instance, writes)
    if writes.batch and not (ends and loaded["parent_id"] is not None):
        return outcome  # the batch writes everything at its end
    writes.flush()
    if ends:
        _notify_parent(session, rt, instance)
    return outcome


def _record_end(rt: Runtime, instance: Instance, flow: Flow, writes: Writes) -> None:
    loaded = columns_of(instance, _END_COLUMNS)
    if loaded["customer_id"] is None:
        return
    outcome = loaded["outcome"] or loaded["status"]
    writes.timeline(
        loaded["customer_id"], rt.now, "flow_ended",
        {"zh": f"流程结束：{flow.name.get('zh', flow.id)}（{outcome}）", "en": f"Flow ended: {flow.name.get('en', flow.id)} ({outcome})"},
        {"outcome": outcome}, loaded["id"],
    )


_END_COLUMNS = frozenset({"id", "customer_id", "outcome", "status"})


def _release_enrollment(instance: Instance, writes: Writes) -> None:
    """The customer may enter the flow again (the policy allowing): it has no active instance now.

    Queued last, after the rows of the request (an enrollment created by it included)."""
    loaded = columns_of(instance, _RUN_COLUMNS)
    instance_id, flow_id, customer_id = loaded["id"], loaded["flow_id"], loaded["customer_id"]
    if customer_id is None:
        return
    where = {"flow_id": flow_id, "customer_id": customer_id, "active_instance_id": instance_id}
    writes.update(ENROLLMENT, _RELEASE_ENROLLMENT,
                  {"b_flow": flow_id, "b_customer": customer_id, "b_instance": instance_id},
                  then=_Sync(Enrollment, "active_instance_id", where, {"active_instance_id": None}))


def _notify_parent(session: Session, rt: Runtime, instance: Instance) -> None:
    if instance.parent_id is not None and instance.parent_token is not None:
        parent = get_instance(session, instance.parent_id)
        done = ev.SubflowDone(instance.parent_token, instance.parent_gen or 0, instance.outcome or "", dict(instance.state.get("vars", {})))
        deliver(session, rt, parent, done)


def _token_gen(outcome: Outcome, token: str) -> int:
    t = outcome.state["tokens"].get(token)
    return int(t["gen"]) if t else 0


def _pick_user(session: Session, writes: Writes, role: str, strategy: str, customer: Mapping[str, Any] | None) -> str | None:
    writes.flush()  # the workload counts must include the tasks of this request
    return cust.pick_user(session, role, strategy, customer)


def _open_tasks_of(session: Session, writes: Writes, instance: Instance, token: str) -> list[Task]:
    writes.flush()  # tasks created earlier in this request must be found too
    return list(session.scalars(select(Task).where(Task.instance_id == instance.id, Task.token == token, Task.status == "open")))


def _apply(
    session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome, effect: fx.Effect,
    writes: Writes,
) -> None:
    """Apply one effect, by the applier of its type (``_APPLIERS``; of the nearest base type that has one)."""
    for cls in type(effect).__mro__:
        applier = _APPLIERS.get(cls)
        if applier is not None:
            applier(session, rt, instance, customer, outcome, effect, writes)
            return


def _create_task_effect(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                        effect: fx.CreateTask, writes: Writes) -> None:
    _create_task(session, rt, instance, customer, outcome, effect, writes)


def _cancel_tasks_effect(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                         effect: fx.CancelTasks, writes: Writes) -> None:
    _cancel_tasks(session, rt, instance, effect, writes)


def _set_timer(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
               effect: fx.SetTimer, writes: Writes) -> None:
    writes.add(TIMER, {"instance_id": instance.id, "token": effect.token, "kind": effect.kind, "due_at": effect.due_at,
                       "status": "pending", "data": dict(effect.data)})


def _cancel_timers(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                   effect: fx.CancelTimers, writes: Writes) -> None:
    where: dict[str, Any] = {"instance_id": instance.id, "status": "pending"}
    params: dict[str, Any] = {"b_instance": instance.id}
    if effect.token is not None:
        where["token"] = params["b_token"] = effect.token
    writes.update(TIMER, _CANCEL_TIMERS if effect.token is None else _CANCEL_TOKEN_TIMERS, params,
                  then=_Sync(Timer, "instance_id", where, {"status": "cancelled"}))


def _send_message(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                  effect: fx.SendMessage, writes: Writes) -> None:
    loaded = columns_of(instance, _MESSAGE_COLUMNS)
    params = effect.params
    writes.add(OUTBOX, {
        "effect_key": effect.effect_key, "instance_id": loaded["id"], "token": effect.token,
        "gen": _token_gen(outcome, effect.token), "step_id": effect.step, "customer_id": loaded["customer_id"],
        "connector": effect.connector, "payload": dict(params),
        "category": "marketing" if params.get("category") == "marketing" else "service",
        "status": "pending", "wait": effect.wait, "attempts": 0, "max_attempts": effect.max_attempts,
        "backoff_seconds": effect.backoff_seconds, "next_attempt_at": rt.now, "created_at": rt.now,
    })


_MESSAGE_COLUMNS = frozenset({"id", "customer_id"})


def _update_customer(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                     effect: fx.UpdateCustomer, writes: Writes) -> None:
    if customer is None:
        return
    # The fields as they are when no tag changes (preparing the update copies them before changing anything).
    data = {**effect.fields, **_tags(customer, effect)} if effect.add_tags or effect.remove_tags else effect.fields
    _changed, columns = _prepare_customer_update(session, customer, data, rt.now, writes)
    writes.change(customer, CUSTOMER, columns)
    if effect.note:
        writes.timeline(customer.id, rt.now, "note", effect.note, dict(effect.fields), instance.id)


def _escalate_tasks(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                    effect: fx.EscalateTasks, writes: Writes) -> None:
    for task in _open_tasks_of(session, writes, instance, effect.token):
        task.role = effect.to_role
        task.assignee = None
        task.escalation_level = effect.level
        writes.add(NOTIFICATION, {"user": None, "role": effect.to_role, "task_id": task.id, "kind": "escalated", "at": rt.now})
        _tell_staff(session, writes, task, "escalated", effect.level, rt.now)


def _remind_tasks(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                  effect: fx.RemindTasks, writes: Writes) -> None:
    for task in _open_tasks_of(session, writes, instance, effect.token):
        task.reminders_sent += 1
        writes.add(NOTIFICATION, {"user": task.assignee, "role": None if task.assignee else task.role, "task_id": task.id,
                                  "kind": f"reminder_{effect.when}", "at": rt.now})
        _tell_staff(session, writes, task, f"reminder_{effect.when}", task.reminders_sent, rt.now)


def _start_subflow_effect(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                          effect: fx.StartSubflow, writes: Writes) -> None:
    writes.flush()  # the child may read what this request wrote so far
    _start_subflow(session, rt, instance, outcome, effect)


def _raise_incident(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                    effect: fx.RaiseIncident, writes: Writes) -> None:
    writes.add(INCIDENT, {"instance_id": instance.id, "token": effect.token, "step_id": effect.step, "kind": "step_failed",
                          "message": effect.message, "status": "open", "created_at": rt.now})


def _resolve_incidents(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
                       effect: fx.ResolveIncidents, writes: Writes) -> None:
    writes.update(INCIDENT, update(Incident)
                  .where(Incident.instance_id == instance.id, Incident.token == effect.token, Incident.status == "open")
                  .values(status="resolved", resolution=effect.resolution, resolved_at=rt.now))


def _timeline(session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome,
              effect: fx.Timeline, writes: Writes) -> None:
    if instance.customer_id is not None:
        writes.timeline(instance.customer_id, rt.now, effect.kind, effect.title, dict(effect.data), instance.id)


#: How each type of effect is applied: looked up by the effect's type, one dict lookup where a
#: chain of isinstance tests took up to a dozen.
_APPLIERS: dict[type, Any] = {
    fx.CreateTask: _create_task_effect,
    fx.CancelTasks: _cancel_tasks_effect,
    fx.SetTimer: _set_timer,
    fx.CancelTimers: _cancel_timers,
    fx.SendMessage: _send_message,
    fx.UpdateCustomer: _update_customer,
    fx.EscalateTasks: _escalate_tasks,
    fx.RemindTasks: _remind_tasks,
    fx.StartSubflow: _start_subflow_effect,
    fx.RaiseIncident: _raise_incident,
    fx.ResolveIncidents: _resolve_incidents,
    fx.Timeline: _timeline,
}


def _tell_staff(session: Session, writes: Writes, task: Task, kind: str, occurrence: int, now: datetime) -> None:
    """Queue the e-mail / IM messages of a reminder or escalation (see ``engine.reminders``)."""
    from engine import reminders  # imported late: it reaches the web pages' task address

    for row in reminders.outbox_rows(session, task, kind, occurrence, now):
        writes.add(OUTBOX, row)


def _prepare_customer_update(
    session: Session, customer: Customer, data: Mapping[str, Any], now: datetime, writes: Writes,
) -> tuple[list[str], dict[str, Any]]:
    """``customers.prepare_update``; in a batch, the phone/e-mail uniqueness check is left to the
    batch's flush, which checks the new values of all its customers at once (``claims``, and the
    values given up for them, ``released``: see ``_check_claims``)."""
    if not writes.batch:
        return cust.prepare_update(session, customer, data, now)
    if cust._other_customers_unflushed(session, customer):
        changed, columns = cust.prepare_update(session, customer, data, now)
    else:
        # The same steps as prepare_update, the unique check aside (see customers._check_unique: a
        # value the customer already has, as loaded or as written by this batch, is not checked again).
        values, errors = cust._clean(data)
        if errors:
            raise SubmissionInvalid(errors)
        for key in ("phone", "email"):
            value = values.get(key)
            if value and not cust._stored(customer, key, value):
                writes.claims.append((customer.id, key, value))
        changed, columns = cust._changes(customer, values)
        if changed and customer.updated_at != now:
            columns["updated_at"] = now
    for key in ("phone", "email"):
        if key in columns:
            given_up = getattr(customer, key)
            if given_up:
                writes.released[(key, given_up)] = customer.id
    return changed, columns


def _check_claims(session: Session, claims: list[tuple[int, str, Any]], released: Mapping[tuple[str, Any], int],
                  pipelined: bool = False) -> None:
    """Conflict unless no two claims take the same value and no other customer holds a claimed
    phone/e-mail value. A batch that fails here is retried one request at a time by its caller,
    which then checks each value as it goes (a value freed earlier in the batch is then accepted).

    Not pipelined, the holders are read from the database. Pipelined (PostgreSQL), a read would wait
    for the chunks sent before, so it is left to the unique indexes on phone and e-mail where they
    can do it: they refuse the UPDATE that gives a customer a value another customer holds, which
    fails the batch at the sync as any refused row does. Two cases they cannot see are checked here:
    * a value that another customer of the same writes gives up (``released``): the server may run
      that customer's UPDATE first and accept both, where the requests in their order (the
      claimant's first) would not;
    * a value the claimant no longer has when its row is written (a step set it, a later one
      changed it): no UPDATE writes it. Its holders are read, as when not pipelined."""
    wanted: dict[tuple[str, Any], int] = {}
    for customer_id, key, value in claims:
        if wanted.setdefault((key, value), customer_id) != customer_id:
            raise Conflict(f"customers {wanted[(key, value)]} and {customer_id} would both have this {key}")
    if pipelined:
        for (key, value), claimant in wanted.items():
            holder = released.get((key, value), claimant)
            if holder != claimant:
                raise Conflict(f"customer {holder} gives up this {key} in the same writes as customer {claimant} takes it")
        wanted = {claim: claimant for claim, claimant in wanted.items() if not _kept(session, claimant, *claim)}
        if not wanted:
            return
    phones = [value for (key, value) in wanted if key == "phone"]
    emails = [value for (key, value) in wanted if key == "email"]
    rows = session.connection().execute(_HOLDERS, {"b_phones": phones, "b_emails": emails})
    for holder, phone, email in rows:
        for key, value in (("phone", phone), ("email", email)):
            claimant = wanted.get((key, value))
            if claimant is not None and claimant != holder:
                raise Conflict(f"customer {holder} already has this phone or e-mail")


def _kept(session: Session, customer_id: int, key: str, value: Any) -> bool:
    """Whether the customer's ``key`` is ``value`` now, as its row will be written."""
    customer = session.identity_map.get((Customer, (customer_id,), None))
    return customer is not None and customer.__dict__.get(key) == value


def _cancel_tasks(session: Session, rt: Runtime, instance: Instance, effect: fx.CancelTasks, writes: Writes) -> None:
    where: dict[str, Any] = {"instance_id": instance.id, "status": "open"}
    params: dict[str, Any] = {"b_instance": instance.id, "b_reason": effect.reason, "b_now": rt.now}
    if effect.token is not None:
        where["token"] = params["b_token"] = effect.token
    values = {"status": "cancelled", "outcome": effect.reason, "completed_at": rt.now}
    writes.update(TASK, _CANCEL_TASKS if effect.token is None else _CANCEL_TOKEN_TASKS, params,
                  then=_Sync(Task, "instance_id", where, values))


def _start_subflow(session: Session, rt: Runtime, instance: Instance, outcome: Outcome, effect: fx.StartSubflow) -> None:
    parent = (instance.id, effect.token, _token_gen(outcome, effect.token)) if effect.wait else None
    try:
        with session.begin_nested():
            start_instance(session, rt, effect.flow, customer_id=instance.customer_id, data=effect.data,
                           trigger={"type": "subflow", "parent": instance.id}, parent=parent)
    except NotEnrolled as exc:
        # The child flow's enrollment policy said no: record it, and let a waiting parent go on.
        session.add(Incident(instance_id=instance.id, token=effect.token, step_id=None, kind="subflow_refused",
                             message=str(exc), status="open", created_at=rt.now))
        if parent is not None:
            deliver(session, rt, instance, ev.SubflowDone(effect.token, parent[2], "not_enrolled", {}))


def _tags(customer: Customer, effect: fx.UpdateCustomer) -> dict[str, Any]:
    if not (effect.add_tags or effect.remove_tags):
        return {}
    tags = [t for t in customer.tags or [] if t not in effect.remove_tags]
    tags += [t for t in effect.add_tags if t not in tags]
    return {"tags": tags}


def _create_task(
    session: Session, rt: Runtime, instance: Instance, customer: Customer | None, outcome: Outcome, effect: fx.CreateTask,
    writes: Writes,
) -> None:
    spec = effect.assignee
    assignee = spec.get("user")
    role = spec.get("role")
    strategy = spec.get("strategy", "claim")
    # The customer as it is now, after any update applied earlier in this outcome.
    customer_data = None
    if assignee is None and role and strategy in ("round_robin", "least_loaded"):
        customer_data = cust.customer_dict(customer) if customer is not None else None
        assignee = _pick_user(session, writes, role, strategy, customer_data)
    form = latest_form(session, effect.form)
    initial: dict[str, Any] = {}
    if _prefills(form):  # else prefill gives {} whatever the context
        if customer_data is None and customer is not None:
            customer_data = cust.customer_dict(customer)
        context = {"customer": customer_data or {}, "vars": outcome.state["vars"], "instance": _instance_info(instance)}
        initial = forms.prefill(form, context)
    writes.add(TASK, {
        "instance_id": instance.id, "token": effect.token, "gen": _token_gen(outcome, effect.token), "step_id": effect.step,
        "form_id": effect.form, "title": dict(effect.title), "role": role, "assignee": assignee, "approval": effect.approval,
        "status": "open", "due_at": effect.due_at, "readonly": list(effect.readonly), "hidden": list(effect.hidden),
        "initial": initial, "created_at": rt.now, "escalation_level": 0, "reminders_sent": 0,
    })


def _prefills(form: forms.Form) -> bool:
    """Whether a field of the form has a prefill; worked out once per form object (a loaded form
    never changes, and the latest version's object is cached), kept with the form so that its id
    is not reused meanwhile."""
    entry = _PREFILLS.get(id(form))
    if entry is not None and entry[0] is form:
        return entry[1]
    prefills = any(item.prefill is not None for item in form.fields)
    if len(_PREFILLS) >= 256:
        _PREFILLS.clear()
    _PREFILLS[id(form)] = (form, prefills)
    return prefills


_PREFILLS: dict[int, tuple[forms.Form, bool]] = {}
