"""engine/store/rows.py stores exactly what ``conn.execute`` stores, on SQLite and PostgreSQL.

On PostgreSQL several rows go by ``COPY``, ``UPDATE ... FROM unnest`` and ``INSERT ... SELECT
unnest`` instead of an executemany; each test checks that they did, and that the rows and counts
are those of ``conn.execute``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import String, bindparam, cast, event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.store.instances import _INSERT_INSTANCES, CUSTOMER, HISTORY, INSTANCE, OUTBOX, TIMELINE, _insert_into
from engine.store.models import FlowVersion
from engine.store.rows import execute, insert_ids, send, sync

AT = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Shanghai"))
#: What COPY's text format must escape (tab, newline, carriage return, backslash), what it reads as
#: NULL when unescaped (\N), quotes, and text beyond ASCII.
TRICKY = '制表\tTab 换行\nnewline 回车\r 反斜杠\\ \\N \\\\N "引号" \'单\' 中文'


def _text_rows(cf: Careflow, table: Any, where: Any) -> list[tuple[Any, ...]]:
    """Every column but the id, as the database's own text (JSON as stored, date-times as stored)."""
    columns = [cast(c, String) for c in table.c if c.key != "id"]
    with cf.db.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns).where(where).order_by(table.c.id))]


def _both(cf: Careflow, statement: Any, make_rows: Any) -> list[str]:
    """Run statement with make_rows("a") through conn.execute, and make_rows("b") through rows.execute;
    the SQL rows.execute sent (seen by the engine's events, as a statement counter sees it)."""
    with cf.db.begin() as conn:
        plain = make_rows("a")
        conn.execute(statement, plain if len(plain) > 1 else plain[0])
        with _statements(cf) as sent:
            execute(conn, statement, make_rows("b"))
    return sent


class _statements:
    """The SQL statements the engine's before_cursor_execute listeners see meanwhile."""

    def __init__(self, cf: Careflow):
        self.cf = cf
        self.sent: list[str] = []

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.sent.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.cf.db, "before_cursor_execute", self._seen)
        return self.sent

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.cf.db, "before_cursor_execute", self._seen)


def _postgres(cf: Careflow) -> bool:
    return cf.db.dialect.name == "postgresql"


def test_inserts_and_updates_store_the_same_rows(database_url: str, clock: FixedClock) -> None:
    """One Careflow per backend (migrated, nothing deployed): setting it up is most of the cost."""
    cf = Careflow(database_url, clock=clock, registry=Registry())
    try:
        _inserts_store_the_same_rows(cf)
        _copy_keeps_every_character_and_json_null(cf)
        _updates_match_the_same_rows_and_count_them(cf)
        _bulk_updates_store_the_same_rows(cf)
        _inserted_ids_come_in_the_rows_order(cf)
        _a_refused_row_raises_what_an_insert_raises(cf)
        _values_of_mixed_types_store_what_an_executemany_stores(cf)
        _json_lists_in_bulk_updates_store_what_an_executemany_stores(cf)
    finally:
        cf.close()


def _inserts_store_the_same_rows(cf: Careflow) -> None:
    customer_id = cf.create_customer({"name": "张三", "phone": "13800138000"})

    def timeline(tag: str) -> list[dict[str, Any]]:
        return [{"customer_id": customer_id, "at": AT + timedelta(days=i), "kind": tag,
                 "title": {"zh": "进入流程：欢迎", "en": "Entered \"flow\""}, "data": {"n": i, "x": [None, 1.5, True]},
                 "instance_id": None if i % 2 else 7} for i in range(3)]

    def timeline_defaults(tag: str) -> list[dict[str, Any]]:  # "data" left to the column's Python default
        return [{"customer_id": customer_id, "at": AT, "kind": f"{tag}-d", "title": {"zh": "备注"}, "instance_id": None}]

    def history(tag: str) -> list[dict[str, Any]]:
        return [{"instance_id": 1000 + i, "at": AT.astimezone(timezone.utc), "event": tag,
                 "entries": [{"type": "step_entered", "step": "s", "token": "t1"}, None]} for i in range(2)]

    def outbox(tag: str) -> list[dict[str, Any]]:
        return [{"effect_key": f"{tag}:1:s:{i}", "instance_id": 1, "token": "t1", "gen": 0, "step_id": "s",
                 "customer_id": customer_id, "connector": "timeline", "payload": {"text": "欢迎 / welcome"},
                 "category": "service", "status": "pending", "wait": False, "attempts": 0, "max_attempts": 5,
                 "backoff_seconds": 60.0, "next_attempt_at": AT, "created_at": AT} for i in range(2)]

    sent = _both(cf, _insert_into(TIMELINE), timeline)
    assert len(sent) == 1 and sent[0].startswith("COPY timeline_entry (") == _postgres(cf)  # one statement either way
    _both(cf, _insert_into(TIMELINE), timeline_defaults)  # one row: the plain INSERT
    _both(cf, _insert_into(HISTORY), history)
    _both(cf, _insert_into(OUTBOX), outbox)
    for table, column, (a, b) in ((TIMELINE, "kind", ("a", "b")), (TIMELINE, "kind", ("a-d", "b-d")),
                                  (HISTORY, "event", ("a", "b"))):
        rows_a = [tuple(v for k, v in zip([c.key for c in table.c if c.key != "id"], r) if k != column)
                  for r in _text_rows(cf, table, table.c[column] == a)]
        rows_b = [tuple(v for k, v in zip([c.key for c in table.c if c.key != "id"], r) if k != column)
                  for r in _text_rows(cf, table, table.c[column] == b)]
        assert rows_a and rows_a == rows_b
    keys = [c.key for c in OUTBOX.c if c.key != "id"]
    strip = lambda rows: [tuple(v for k, v in zip(keys, r) if k != "effect_key") for r in rows]  # noqa: E731
    assert strip(_text_rows(cf, OUTBOX, OUTBOX.c.effect_key.like("a:%"))) == \
        strip(_text_rows(cf, OUTBOX, OUTBOX.c.effect_key.like("b:%")))


def _copy_keeps_every_character_and_json_null(cf: Careflow) -> None:
    """Tabs, newlines, backslashes and "\\N" in text and in JSON; a JSON column given None holds
    JSON null, one left out holds SQL NULL (as with INSERT); Python-side defaults apply."""

    def customers(tag: str, reason: bool) -> list[dict[str, Any]]:
        rows = []
        for i, why in enumerate([None, {"why": TRICKY, "list": [TRICKY, None, 1.25]}, {}]):
            row: dict[str, Any] = {
                "name": f"{tag}{i}{'r' if reason else ''}", "region": TRICKY if i != 2 else "\\N", "owner": None,
                "attributes": {"note": TRICKY, "none": None, TRICKY: "key"}, "expected_value": 0.1 + 0.2,
                "created_at": AT, "updated_at": AT.astimezone(timezone.utc), "last_purchase_at": None,
            }
            if reason:
                row["churn_reason"] = why
            rows.append(row)
        return rows

    for reason in (True, False):
        sent = _both(cf, _insert_into(CUSTOMER), lambda tag: customers(tag, reason))  # noqa: B023
        assert not _postgres(cf) or sent[0].startswith("COPY customer (")
        by_name = {}
        for tag in ("a", "b"):
            names = [f"{tag}{i}{'r' if reason else ''}" for i in range(3)]
            text = _text_rows(cf, CUSTOMER, CUSTOMER.c.name.in_(names))
            keys = [c.key for c in CUSTOMER.c if c.key != "id"]
            by_name[tag] = [{k: v for k, v in zip(keys, row) if k != "name"} for row in text]
        assert by_name["a"] == by_name["b"]
        rows = by_name["b"]
        assert [r["region"] for r in rows] == [TRICKY, TRICKY, "\\N"]
        assert [r["churn_reason"] for r in rows] == (["null", rows[1]["churn_reason"], "{}"] if reason else [None] * 3)
        assert rows[0]["tags"] == "[]" and rows[0]["status"] == "active"  # the columns' Python defaults
    with cf.session() as s:
        stored = s.execute(select(CUSTOMER.c.attributes, CUSTOMER.c.churn_reason, CUSTOMER.c.expected_value)
                           .where(CUSTOMER.c.name == "b1r")).one()
    assert stored.attributes == {"note": TRICKY, "none": None, TRICKY: "key"}
    assert stored.churn_reason == {"why": TRICKY, "list": [TRICKY, None, 1.25]}
    assert stored.expected_value == 0.1 + 0.2


def _updates_match_the_same_rows_and_count_them(cf: Careflow) -> None:
    customer_id = cf.create_customer({"name": "李四", "phone": "13900139000"})
    with cf.db.begin() as conn:
        conn.execute(_insert_into(TIMELINE), [{"customer_id": customer_id, "at": AT, "kind": kind, "title": {},
                                               "data": {}, "instance_id": None} for kind in ("u", "u", "v")])
    statement = (update(TIMELINE).where(TIMELINE.c.customer_id == bindparam("b_customer"), TIMELINE.c.kind == "u")
                 .values(data=bindparam("v_data"), at=bindparam("v_at")))
    with cf.db.begin() as conn:
        result = execute(conn, statement, [{"b_customer": customer_id, "v_data": {"done": "是"}, "v_at": AT}])
        assert result.rowcount == 2
        with _statements(cf) as sent:
            assert execute(conn, statement, [{"b_customer": customer_id, "v_data": None, "v_at": AT},
                                             {"b_customer": -1, "v_data": {}, "v_at": AT}]).rowcount == 2
        assert len(sent) == 1 and ("FROM unnest(" in sent[0]) == _postgres(cf)
        # Two rows of parameters matching the same rows: an executemany updates them twice, and counts
        # them twice; one UPDATE ... FROM would do it once, so such rows keep the executemany.
        with _statements(cf) as sent:
            assert execute(conn, statement, [{"b_customer": customer_id, "v_data": None, "v_at": AT},
                                             {"b_customer": customer_id, "v_data": None, "v_at": AT}]).rowcount == 4
        assert not any("unnest" in s for s in sent)
    with cf.db.connect() as conn:
        data = conn.execute(select(cast(TIMELINE.c.data, String), TIMELINE.c.kind)
                            .where(TIMELINE.c.customer_id == customer_id, TIMELINE.c.kind.in_(["u", "v"]))
                            .order_by(TIMELINE.c.id)).all()
    assert [(d, k) for d, k in data] == [("null", "u"), ("null", "u"), ("{}", "v")]


def _bulk_updates_store_the_same_rows(cf: Careflow) -> None:
    """Several UPDATEs by key store what the same UPDATEs one by one store, and count the rows they
    matched: a row whose WHERE no longer holds (an optimistic lock lost) is not counted."""
    customer_id = cf.create_customer({"name": "王五", "phone": "13700137000"})
    with cf.db.begin() as conn:
        conn.execute(_insert_into(TIMELINE), [{"customer_id": customer_id, "at": AT, "kind": f"{tag}{i}", "title": {},
                                               "data": {}, "instance_id": i} for tag in ("a", "b") for i in range(3)])
    statement = (update(TIMELINE).where(TIMELINE.c.customer_id == bindparam("b_customer"),
                                        TIMELINE.c.kind == bindparam("b_kind"), TIMELINE.c.instance_id == bindparam("b_seen"))
                 .values(data=bindparam("v_data"), at=bindparam("v_at"), title=bindparam("v_title"),
                         instance_id=bindparam("v_seen")))

    def params(tag: str) -> list[dict[str, Any]]:
        return [{"b_customer": customer_id, "b_kind": f"{tag}{i}", "b_seen": i if i != 2 else 99, "v_seen": i + 10,
                 "v_data": None if i == 0 else {"text": TRICKY, "n": i}, "v_title": {"zh": TRICKY},
                 "v_at": AT + timedelta(hours=i)} for i in range(3)]

    with cf.db.begin() as conn:
        assert conn.execute(statement, params("a")).rowcount == 2  # the third row's "seen" is not 99
        with _statements(cf) as sent:
            assert execute(conn, statement, params("b")).rowcount == 2
    assert len(sent) == 1 and ("FROM unnest(" in sent[0]) == _postgres(cf)
    keys = [c.key for c in TIMELINE.c if c.key != "id"]
    strip = lambda rows: [tuple(v for k, v in zip(keys, r) if k != "kind") for r in rows]  # noqa: E731
    a = strip(_text_rows(cf, TIMELINE, TIMELINE.c.kind.in_(["a0", "a1", "a2"])))
    assert a == strip(_text_rows(cf, TIMELINE, TIMELINE.c.kind.in_(["b0", "b1", "b2"])))
    data = [k for k in keys if k != "kind"].index("data")
    assert [row[data] for row in a][0] == "null"  # None through the JSON type, as conn.execute sends it


def _inserted_ids_come_in_the_rows_order(cf: Careflow) -> None:
    """``insert_ids``: the new rows' ids, in the order of the rows given, as ``conn.execute`` returns them."""
    cf.deploy_flow_text("id: bare\nname: {zh: 空, en: Bare}\nsteps:\n  - id: done\n    type: end\n", "bare.yaml")
    with cf.session() as s:
        version_id = s.scalars(select(FlowVersion.id).where(FlowVersion.flow_id == "bare")).one()

    def instances(tag: str) -> list[dict[str, Any]]:
        return [{"flow_id": "bare", "flow_version_id": version_id, "customer_id": None, "status": "running",
                 "outcome": None, "state": {"vars": {"t": TRICKY}, "n": i}, "revision": 1, "parent_id": None,
                 "parent_token": None, "parent_gen": None, "started_at": AT, "ended_at": None,
                 "started_by": f"{tag}{i}"} for i in (3, 1, 4, 1, 5)]

    with cf.db.begin() as conn:
        plain = list(conn.execute(_INSERT_INSTANCES, instances("a")).scalars())
        with _statements(cf) as sent:
            ids = insert_ids(conn, _INSERT_INSTANCES, instances("b"))
    assert not _postgres(cf) or len(sent) == 1 and "FROM unnest(" in sent[0]
    assert len(set(ids)) == 5
    with cf.db.connect() as conn:
        started_by = dict(conn.execute(select(INSTANCE.c.id, INSTANCE.c.started_by).where(INSTANCE.c.id.in_(ids + plain))).all())
    assert [started_by[i] for i in ids] == [f"b{i}" for i in (3, 1, 4, 1, 5)]
    assert [started_by[i] for i in plain] == [f"a{i}" for i in (3, 1, 4, 1, 5)]
    keys = [c.key for c in INSTANCE.c if c.key != "id"]
    strip = lambda rows: [tuple(v for k, v in zip(keys, r) if k != "started_by") for r in rows]  # noqa: E731
    assert strip(_text_rows(cf, INSTANCE, INSTANCE.c.id.in_(plain))) == strip(_text_rows(cf, INSTANCE, INSTANCE.c.id.in_(ids)))


def _a_refused_row_raises_what_an_insert_raises(cf: Careflow) -> None:
    """A COPY refused by a constraint raises SQLAlchemy's IntegrityError, as the INSERT would (the
    batch API retries its requests one by one on it), and leaves nothing behind."""
    def message(key: str) -> dict[str, Any]:
        return {"effect_key": key, "instance_id": None, "connector": "timeline", "payload": {}, "status": "pending",
                "next_attempt_at": AT, "created_at": AT}

    with pytest.raises(IntegrityError, match="dup:1"), cf.db.begin() as conn:
        execute(conn, _insert_into(OUTBOX), [message("dup:1"), message("dup:2"), message("dup:1")])
    with cf.db.connect() as conn:
        assert conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.effect_key.like("dup:%"))).all() == []


def _values_of_mixed_types_store_what_an_executemany_stores(cf: Careflow) -> None:
    """A float column given ints for some rows and floats for others (a flow's computed amounts):
    an executemany sends each value as it is and the server converts it; one array parameter
    cannot hold two types, so such rows keep the executemany rather than fail the statement."""
    ids = [cf.create_customer({"name": f"混{i}", "phone": f"1370013710{i}"}) for i in range(3)]
    statement = update(CUSTOMER).where(CUSTOMER.c.id == bindparam("b_id")).values(
        purchase_total=bindparam("v_total"), expected_value=bindparam("v_value"))
    totals = [100, 99.5, 7]
    with cf.db.begin() as conn:
        assert execute(conn, statement, [{"b_id": i, "v_total": t, "v_value": 2.5}
                                         for i, t in zip(ids, totals, strict=True)]).rowcount == 3
    with cf.db.connect() as conn:
        stored = dict(conn.execute(select(CUSTOMER.c.id, CUSTOMER.c.purchase_total).where(CUSTOMER.c.id.in_(ids))).all())
    assert [stored[i] for i in ids] == [100.0, 99.5, 7.0]

    cf.deploy_flow_text("id: mixed\nname: {zh: 混, en: Mixed}\nsteps:\n  - id: done\n    type: end\n", "mixed.yaml")
    with cf.session() as s:
        version_id = s.scalars(select(FlowVersion.id).where(FlowVersion.flow_id == "mixed")).one()
    rows = [{"flow_id": "mixed", "flow_version_id": version_id, "customer_id": None, "status": "running",
             "outcome": None, "state": {}, "revision": revision, "parent_id": None, "parent_token": None,
             "parent_gen": None, "started_at": AT, "ended_at": None, "started_by": "m"}
            for revision in (1, True)]  # an int column given a bool: the executemany stores 1
    with cf.db.begin() as conn:
        new = insert_ids(conn, _INSERT_INSTANCES, rows)
    with cf.db.connect() as conn:
        assert conn.execute(select(INSTANCE.c.revision).where(INSTANCE.c.id.in_(new))).scalars().all() == [1, 1]


def _json_lists_in_bulk_updates_store_what_an_executemany_stores(cf: Careflow) -> None:
    """A JSON value that is a list (a task's read-only fields, history entries) is one element of
    the array parameter, not a dimension of it."""
    customer_id = cf.create_customer({"name": "列表", "phone": "13500135000"})
    with cf.db.begin() as conn:
        conn.execute(_insert_into(TIMELINE), [{"customer_id": customer_id, "at": AT, "kind": f"l{tag}{i}", "title": {},
                                               "data": {}, "instance_id": i} for tag in ("a", "b") for i in range(2)])
    statement = update(TIMELINE).where(TIMELINE.c.kind == bindparam("b_kind")).values(data=bindparam("v_data"))

    def params(tag: str) -> list[dict[str, Any]]:
        return [{"b_kind": f"l{tag}{i}", "v_data": [i, "二", {"k": [None]}]} for i in range(2)]

    with cf.db.begin() as conn:
        assert conn.execute(statement, params("a")).rowcount == 2
        assert execute(conn, statement, params("b")).rowcount == 2
    with cf.db.connect() as conn:
        data = conn.execute(select(TIMELINE.c.kind, cast(TIMELINE.c.data, String)).where(
            TIMELINE.c.kind.like("l%")).order_by(TIMELINE.c.kind)).all()
    stored = [json.loads(d) for _k, d in data]
    assert stored == [[0, "二", {"k": [None]}], [1, "二", {"k": [None]}]] * 2
    assert [d for _k, d in data][:2] == [d for _k, d in data][2:]


def test_statements_sent_in_pipeline_mode(pg_schema_url: str, clock: FixedClock) -> None:
    """``send`` (PostgreSQL): the rows ``execute`` stores, a read on the connection sees them, the
    rows matched reach the checks at ``sync``, and any statement's error fails the transaction."""
    cf = Careflow(pg_schema_url, clock=clock, registry=Registry())
    try:
        _sent_rows_are_those_execute_stores(cf)
        _a_read_waits_for_the_rows_sent_before_it(cf)
        _the_checks_run_at_sync_and_fail_it(cf)
        _an_error_in_an_early_statement_fails_the_transaction(cf)
        _the_error_names_the_statement_refused(cf)
    finally:
        cf.close()


def _sent_rows_are_those_execute_stores(cf: Careflow) -> None:
    customer_id = cf.create_customer({"name": "管道", "phone": "13600136000"})

    def timeline(tag: str) -> list[dict[str, Any]]:
        return [{"customer_id": customer_id, "at": AT + timedelta(days=i), "kind": f"p{tag}",
                 "title": {"zh": TRICKY}, "data": {"n": i, "x": [None, 1.5, True]},
                 "instance_id": None if i % 2 else 7} for i in range(3)]

    def timeline_defaults(tag: str) -> list[dict[str, Any]]:  # "data" left to the column's Python default
        return [{"customer_id": customer_id, "at": AT, "kind": f"p{tag}-d", "title": {"zh": "备注"}, "instance_id": None}
                for _i in range(2)]

    def history(tag: str) -> list[dict[str, Any]]:
        return [{"instance_id": 2000 + i, "at": AT.astimezone(timezone.utc), "event": f"p{tag}",
                 "entries": [{"type": "step_entered", "step": "s", "token": "t1"}, None]} for i in range(2)]

    def outbox(tag: str) -> list[dict[str, Any]]:  # category, wait, attempts... left to their defaults
        return [{"effect_key": f"p{tag}:1:s:{i}", "instance_id": 1, "token": "t1", "gen": 0, "step_id": "s",
                 "customer_id": customer_id, "connector": "timeline", "payload": {"text": TRICKY},
                 "status": "pending", "next_attempt_at": AT, "created_at": AT} for i in range(2)]

    for statement, make_rows in ((_insert_into(TIMELINE), timeline), (_insert_into(TIMELINE), timeline_defaults),
                                 (_insert_into(HISTORY), history), (_insert_into(OUTBOX), outbox)):
        with cf.db.begin() as conn:
            conn.execute(statement, make_rows("a"))
            with _statements(cf) as sent:
                send(conn, statement, make_rows("b"))
                sync(conn)
        assert len(sent) == 1 and " VALUES ($1::" in sent[0] and "), ($" in sent[0]  # one multi-row INSERT
    for table, column, (a, b) in ((TIMELINE, "kind", ("pa", "pb")), (TIMELINE, "kind", ("pa-d", "pb-d")),
                                  (HISTORY, "event", ("pa", "pb"))):
        keys = [c.key for c in table.c if c.key != "id"]
        strip = lambda rows: [tuple(v for k, v in zip(keys, r) if k != column) for r in rows]  # noqa: E731
        rows_a = strip(_text_rows(cf, table, table.c[column] == a))
        assert rows_a and rows_a == strip(_text_rows(cf, table, table.c[column] == b))
    keys = [c.key for c in OUTBOX.c if c.key != "id"]
    strip = lambda rows: [tuple(v for k, v in zip(keys, r) if k != "effect_key") for r in rows]  # noqa: E731
    rows_a = strip(_text_rows(cf, OUTBOX, OUTBOX.c.effect_key.like("pa:%")))
    assert len(rows_a) == 2 and rows_a == strip(_text_rows(cf, OUTBOX, OUTBOX.c.effect_key.like("pb:%")))
    # More parameters than one statement takes (4 columns x 8,000 rows): one INSERT ... SELECT unnest.
    many = [{"instance_id": 3000 + i, "at": AT, "event": "many", "entries": [i]} for i in range(8000)]
    with cf.db.begin() as conn, _statements(cf) as sent:
        send(conn, _insert_into(HISTORY), many)
        sync(conn)
    assert len(sent) == 1 and "FROM unnest(" in sent[0]
    with cf.db.connect() as conn:
        assert conn.execute(select(HISTORY.c.instance_id).where(HISTORY.c.event == "many")
                            .order_by(HISTORY.c.id)).scalars().all() == [row["instance_id"] for row in many]


def _a_read_waits_for_the_rows_sent_before_it(cf: Careflow) -> None:
    customer_id = cf.create_customer({"name": "读", "phone": "13600136001"})
    rows = [{"customer_id": customer_id, "at": AT, "kind": "r", "title": {}, "data": {}, "instance_id": i}
            for i in range(3)]
    with cf.db.begin() as conn:
        send(conn, _insert_into(TIMELINE), rows)
        assert conn.execute(select(TIMELINE.c.instance_id).where(TIMELINE.c.customer_id == customer_id, TIMELINE.c.kind == "r")
                            .order_by(TIMELINE.c.id)).scalars().all() == [0, 1, 2]
        send(conn, update(TIMELINE).where(TIMELINE.c.customer_id == customer_id, TIMELINE.c.kind == "r").values(kind="r2"), [{}])
        # An ORM query, and a bulk statement of rows.py's own, each wait for what was sent first too.
        assert execute(conn, update(TIMELINE).where(TIMELINE.c.kind == bindparam("b_kind")).values(
            data=bindparam("v_data")), [{"b_kind": "r2", "v_data": {"seen": 1}}]).rowcount == 3


def _the_checks_run_at_sync_and_fail_it(cf: Careflow) -> None:
    customer_id = cf.create_customer({"name": "锁", "phone": "13600136002"})
    statement = update(CUSTOMER).where(CUSTOMER.c.id == bindparam("b_id"), CUSTOMER.c.name == bindparam("b_name")).values(
        name=bindparam("v_name"))
    matched: list[int] = []

    def check(count: int) -> None:
        matched.append(count)
        if count != 2:
            raise StaleDataError(f"2 expected, {count} matched")

    with pytest.raises(StaleDataError, match="2 expected, 1 matched"), cf.db.begin() as conn:
        send(conn, statement, [{"b_id": customer_id, "b_name": "锁", "v_name": "锁2"},
                               {"b_id": customer_id + 1000, "b_name": "无", "v_name": "无2"}], check)
        assert matched == []  # not known before the sync
        sync(conn)
    assert matched == [1]
    with cf.db.connect() as conn:  # the transaction was rolled back, and the connection works
        assert conn.execute(select(CUSTOMER.c.name).where(CUSTOMER.c.id == customer_id)).scalar() == "锁"


def _the_error_names_the_statement_refused(cf: Careflow) -> None:
    """An executemany sent before the statement refused (rows matched twice by one UPDATE's parameters
    go by one) ran without a result of its own to keep: the error still names the refused INSERT."""
    customer_id = cf.create_customer({"name": "错", "phone": "13600136003"})
    rename = update(CUSTOMER).where(CUSTOMER.c.id == bindparam("b_id")).values(name=bindparam("v_name"))
    message = {"effect_key": "perr:0", "instance_id": None, "connector": "timeline", "payload": {}, "status": "pending",
               "next_attempt_at": AT, "created_at": AT}
    with pytest.raises(IntegrityError) as refused, cf.db.begin() as conn:
        send(conn, rename, [{"b_id": customer_id, "v_name": "错1"}, {"b_id": customer_id, "v_name": "错2"}])
        send(conn, _insert_into(OUTBOX), [message])
        send(conn, _insert_into(OUTBOX), [message])  # refused: the same key
        sync(conn)
    assert refused.value.statement is not None and refused.value.statement.startswith("INSERT INTO outbox_message")
    # The refusal comes back while a later statement is sent: it is still the refused one that is named.
    with pytest.raises(IntegrityError) as refused, cf.db.begin() as conn:
        send(conn, _insert_into(OUTBOX), [{**message, "effect_key": "perr:1"}, {**message, "effect_key": "perr:1"}])
        time.sleep(0.5)  # the server's answer is in when the next statement goes
        send(conn, _insert_into(OUTBOX), [{**message, "effect_key": "perr:2"}])
        sync(conn)
    assert "perr:1" in refused.value.params and "perr:2" not in refused.value.params


def _an_error_in_an_early_statement_fails_the_transaction(cf: Careflow) -> None:
    def message(key: str) -> dict[str, Any]:
        return {"effect_key": key, "instance_id": None, "connector": "timeline", "payload": {}, "status": "pending",
                "next_attempt_at": AT, "created_at": AT}

    with pytest.raises(IntegrityError, match="pdup:1"), cf.db.begin() as conn:
        send(conn, _insert_into(OUTBOX), [message("pdup:0"), message("pdup:1")])
        send(conn, _insert_into(OUTBOX), [message("pdup:1"), message("pdup:2")])  # refused by the server
        send(conn, _insert_into(OUTBOX), [message("pdup:3"), message("pdup:4")])
        sync(conn)
    with cf.db.connect() as conn:
        assert conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.effect_key.like("pdup:%"))).all() == []
    # Not even a sync: the rollback leaves pipeline mode, and the next transaction runs as usual.
    with pytest.raises(RuntimeError), cf.db.begin() as conn:
        send(conn, _insert_into(OUTBOX), [message("pdup:5"), message("pdup:6")])
        raise RuntimeError("the request failed")
    with cf.db.begin() as conn:
        assert execute(conn, _insert_into(OUTBOX), [message("pdup:7"), message("pdup:8")]).rowcount == 2
    with cf.db.connect() as conn:
        assert conn.execute(select(OUTBOX.c.effect_key).where(OUTBOX.c.effect_key.like("pdup:%"))
                            .order_by(OUTBOX.c.id)).scalars().all() == ["pdup:7", "pdup:8"]
