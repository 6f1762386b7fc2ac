"""``rows.new_ids``: ids for rows inserted later in the same transaction (a batch's new instances).

They must be the ids the database would give those rows, and never ids it gives another row: on
PostgreSQL the id sequence's next values, on SQLite ``max(id) + 1``... (a rowid table without
AUTOINCREMENT gives a new row the largest id plus one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from engine.store.definitions import latest_flow
from engine.store.instances import INSTANCE, instance_columns
from engine.store.rows import new_ids


def _row(cf: Any, s: Any) -> dict[str, Any]:
    version_id, flow = latest_flow(s, "onboarding")
    return instance_columns(cf.runtime(), flow, version_id, None, "test")


def test_new_ids_are_the_ids_the_database_gives_next_and_gives_no_one_else(cf) -> None:  # type: ignore[no-untyped-def]
    with cf.sessions.begin() as s:
        conn = s.connection()
        first = conn.execute(insert(INSTANCE).returning(INSTANCE.c.id), _row(cf, s)).scalar_one()
        ids = new_ids(conn, INSTANCE, 3)
        assert ids is not None and len(set(ids)) == 3 and min(ids) > first
        if conn.dialect.name == "sqlite":
            assert ids == [first + 1, first + 2, first + 3]
        # Written first, as the batch writes them, the rows keep their ids; the next row takes a new one.
        conn.execute(insert(INSTANCE), [{**_row(cf, s), "id": i} for i in ids])
        after = conn.execute(insert(INSTANCE).returning(INSTANCE.c.id), _row(cf, s)).scalar_one()
        assert after > max(ids)
        assert new_ids(conn, INSTANCE, 0) == []
    with cf.session() as s:
        assert sorted(s.scalars(select(INSTANCE.c.id))) == sorted([first, *ids, after])


def test_a_table_whose_id_is_not_generated_gets_no_ids(cf) -> None:  # type: ignore[no-untyped-def]
    table = Table("plain_codes", MetaData(), Column("id", String(8), primary_key=True), Column("n", Integer))
    with cf.sessions.begin() as s:
        assert new_ids(s.connection(), table, 2) is None
