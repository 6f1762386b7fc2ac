"""engine/store/rows.py stores exactly what ``conn.execute`` stores, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, bindparam, cast, select, update

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.store.instances import HISTORY, OUTBOX, TIMELINE, _insert_into
from engine.store.rows import execute

AT = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Shanghai"))


def _text_rows(cf: Careflow, table: Any, where: Any) -> list[tuple[Any, ...]]:
    """Every column but the id, as the database's own text (JSON as stored, date-times as stored)."""
    columns = [cast(c, String) for c in table.c if c.key != "id"]
    with cf.db.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns).where(where).order_by(table.c.id))]


def _both(cf: Careflow, statement: Any, make_rows: Any) -> None:
    """Run statement with make_rows("a") through conn.execute, and make_rows("b") through rows.execute."""
    with cf.db.begin() as conn:
        plain = make_rows("a")
        conn.execute(statement, plain if len(plain) > 1 else plain[0])
        execute(conn, statement, make_rows("b"))


def test_inserts_and_updates_store_the_same_rows(database_url: str, clock: FixedClock) -> None:
    """One Careflow per backend (migrated, nothing deployed): setting it up is most of the cost."""
    cf = Careflow(database_url, clock=clock, registry=Registry())
    try:
        _inserts_store_the_same_rows(cf)
        _updates_match_the_same_rows_and_count_them(cf)
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

    _both(cf, _insert_into(TIMELINE), timeline)
    _both(cf, _insert_into(TIMELINE), timeline_defaults)
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
        assert execute(conn, statement, [{"b_customer": customer_id, "v_data": None, "v_at": AT},
                                         {"b_customer": -1, "v_data": {}, "v_at": AT}]).rowcount == 2
    with cf.db.connect() as conn:
        data = conn.execute(select(cast(TIMELINE.c.data, String), TIMELINE.c.kind)
                            .where(TIMELINE.c.customer_id == customer_id, TIMELINE.c.kind.in_(["u", "v"]))
                            .order_by(TIMELINE.c.id)).all()
    assert [(d, k) for d, k in data] == [("null", "u"), ("null", "u"), ("{}", "v")]
