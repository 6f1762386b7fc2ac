"""SQLite's cheaper forms of a batch's statements give what SQLAlchemy's own forms give.

* ``rows.insert_ids`` numbers new instance rows itself (``max(id) + 1``...) and inserts them with
  one executemany, where SQLAlchemy sends one INSERT ... RETURNING per row: the ids must be
  those SQLite gives, in the rows' order.
* ``inlist.in_list`` is ``IN (SELECT value FROM json_each(:list))``: it must match the rows an
  expanding ``IN`` matches.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Enum, Integer, MetaData, String, Table, bindparam, delete, event, insert, select
from sqlalchemy.exc import IntegrityError

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.store.db import make_engine
from engine.store.inlist import in_list
from engine.store.instances import _INSERT_INSTANCES, INSTANCE
from engine.store.models import FlowVersion
from engine.store.rows import insert_ids

AT = datetime(2026, 11, 24, 1, 30, tzinfo=timezone.utc)


@pytest.fixture
def cf(sqlite_url: str, clock: FixedClock):  # type: ignore[no-untyped-def]
    careflow = Careflow(sqlite_url, clock=clock, registry=Registry())
    careflow.deploy_flow_text("id: bare\nname: {zh: 空, en: Bare}\nsteps:\n  - id: done\n    type: end\n", "bare.yaml")
    yield careflow
    careflow.close()


def _instances(cf: Careflow, tags: list[str]) -> list[dict[str, Any]]:
    with cf.session() as s:
        version_id = s.scalars(select(FlowVersion.id).where(FlowVersion.flow_id == "bare")).one()
    return [{"flow_id": "bare", "flow_version_id": version_id, "customer_id": None, "status": "running",
             "outcome": None, "state": {"n": i}, "started_at": AT, "ended_at": None, "parent_id": None,
             "parent_token": None, "parent_gen": None, "started_by": tag} for i, tag in enumerate(tags)]


def _sent(cf: Careflow) -> list[str]:
    sent: list[str] = []
    event.listen(cf.db, "before_cursor_execute", lambda _c, _cur, sql, *_a: sent.append(sql))
    return sent


def test_inserted_ids_are_those_sqlite_gives_in_the_rows_order(cf: Careflow) -> None:
    tags = ["c", "a", "d", "b", "a"]
    top, rows = _instances(cf, ["top"]), _instances(cf, tags)
    with cf.db.begin() as conn:
        conn.execute(insert(INSTANCE), top)
        conn.execute(delete(INSTANCE).where(INSTANCE.c.started_by == "top"))  # SQLite reuses a freed top id
        expected = [conn.execute(_INSERT_INSTANCES, row).scalar_one() for row in rows]
        conn.rollback()
    with cf.db.begin() as conn:
        conn.execute(insert(INSTANCE), top)
        conn.execute(delete(INSTANCE).where(INSTANCE.c.started_by == "top"))
        sent = _sent(cf)
        ids = insert_ids(conn, _INSERT_INSTANCES, rows)
    assert ids == expected
    assert len(sent) == 2 and sent[0].startswith("SELECT max(") and "RETURNING" not in sent[1]
    with cf.db.connect() as conn:
        stored = dict(conn.execute(select(INSTANCE.c.id, INSTANCE.c.started_by).where(INSTANCE.c.id.in_(ids))).all())
        revisions = set(conn.execute(select(INSTANCE.c.revision).where(INSTANCE.c.id.in_(ids))).scalars())
    assert [stored[i] for i in ids] == tags
    assert revisions == {1}  # the column's default, as the plain INSERT gives it


def test_an_id_taken_meanwhile_fails_the_insert_rather_than_shifting_an_id(sqlite_url: str, clock: FixedClock) -> None:
    """Without BEGIN IMMEDIATE another writer could insert between the max(id) read and the
    INSERT: the INSERT then fails on the primary key (nothing is stored under a wrong id)."""
    cf = Careflow(sqlite_url, clock=clock, registry=Registry())
    try:
        cf.deploy_flow_text("id: bare\nname: {zh: 空, en: Bare}\nsteps:\n  - id: done\n    type: end\n", "bare.yaml")
        rows = _instances(cf, ["a", "b"])
        with cf.db.begin() as conn:
            top = conn.execute(select(INSTANCE.c.id).order_by(INSTANCE.c.id.desc()).limit(1)).scalar() or 0
            seen = []

            def writer_slips_in(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
                if sql.startswith("INSERT INTO instance") and not seen:
                    seen.append(sql)
                    _conn.exec_driver_sql(f"INSERT INTO instance (id, flow_id, flow_version_id, status, state, revision, "
                                          f"started_at) VALUES ({top + 2}, 'bare', {rows[0]['flow_version_id']}, "
                                          f"'running', '{{}}', 1, '2026-11-24 01:30:00')")

            event.listen(cf.db, "before_cursor_execute", writer_slips_in)
            with pytest.raises(IntegrityError):
                insert_ids(conn, _INSERT_INSTANCES, rows)
            event.remove(cf.db, "before_cursor_execute", writer_slips_in)
            conn.rollback()
    finally:
        cf.close()


def test_one_row_goes_the_plain_way(cf: Careflow) -> None:
    rows = _instances(cf, ["only"])
    with cf.db.begin() as conn:
        sent = _sent(cf)
        ids = insert_ids(conn, _INSERT_INSTANCES, rows)
    assert len(ids) == 1 and len(sent) == 1 and "RETURNING" in sent[0]


_METADATA = MetaData()
_THINGS = Table("things", _METADATA, Column("id", Integer, primary_key=True), Column("name", String(20)),
                Column("kind", Enum("red", "green", name="kind")))
_NAMES = ["a", "b'quote", '"dq"', "中文", "", "  spaced ", "a%b_c", "12", "\\back", "12.0", "1.5", "1"]


@pytest.mark.parametrize("values", [[1, 3, 5], [], [2, 2, 99], [None, 4], list(range(1, 12)), ["3", "4.0", 5.0, "x", True]])
def test_an_id_list_matches_what_an_expanding_in_matches(tmp_path: Any, values: list[Any]) -> None:
    _match_like_expanding_in(tmp_path, _THINGS.c.id, values)


@pytest.mark.parametrize("values", [_NAMES, ["12"], [12], [12.0, 1.5, True, None], [], ["nobody", "中文"]])
def test_a_text_list_matches_what_an_expanding_in_matches(tmp_path: Any, values: list[Any]) -> None:
    _match_like_expanding_in(tmp_path, _THINGS.c.name, values)


def _match_like_expanding_in(tmp_path: Any, column: Any, values: list[Any]) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'in.db'}")
    try:
        _METADATA.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(_THINGS), [{"id": i + 1, "name": name, "kind": "red"} for i, name in enumerate(_NAMES)])
        listed = select(_THINGS.c.id).where(in_list(column, "b_values")).order_by(_THINGS.c.id)
        expanding = select(_THINGS.c.id).where(column.in_(bindparam("b_values", expanding=True))).order_by(_THINGS.c.id)
        assert "json_each" in str(listed.compile(engine))
        with engine.connect() as conn:
            assert conn.execute(listed, {"b_values": values}).scalars().all() == \
                conn.execute(expanding, {"b_values": values}).scalars().all()
    finally:
        engine.dispose()


def test_values_a_bind_processor_converts_keep_the_expanding_in(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'in.db'}")
    try:
        assert "json_each" not in str(select(_THINGS.c.id).where(in_list(_THINGS.c.kind, "b_kinds")).compile(engine))
    finally:
        engine.dispose()
