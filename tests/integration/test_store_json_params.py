"""JSON parameters of rows.py's prebuilt statements go as the document's text, made by rows.py.

On PostgreSQL SQLAlchemy hands psycopg a ``Json`` wrapper, which psycopg turns into text with the
connection's serializer; rows.py sends that text itself, cast to JSON in the SQL. On both
databases a dict or list goes to the serializer without SQLAlchemy's processor. The stored text,
SQL NULL and JSON ``null`` must be those of ``conn.execute``, by every path (an executemany, COPY,
multi-row VALUES in pipeline mode, one row).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, bindparam, cast, null, select
from sqlalchemy.dialects import postgresql, sqlite

from connectors.registry import Registry
from engine.clock import FixedClock
from engine.core import Careflow
from engine.store import jsontext
from engine.store.instances import _insert_into
from engine.store.rows import _binds, _build, execute, send, sync

_DOCS = Table("json_docs", MetaData(), Column("id", Integer, primary_key=True), Column("tag", String(20)),
              Column("doc", JSON), Column("doc_or_null", JSON(none_as_null=True)))
DOCUMENTS: list[Any] = [
    {"zh": "进入流程：新客户", "en": 'Entered "flow"\n\\ \t \u2028 \\N'}, [1, 2.5, None, True, "x"], "plain text", 0, [], {},
    {"nested": {"deep": [{"a": None}]}}, None, JSON.NULL, null(),
]


DIALECTS = {"postgresql": postgresql.psycopg.dialect, "sqlite": sqlite.dialect}


def _processor(column: str, dialect_name: str = "postgresql") -> Any:
    dialect = DIALECTS[dialect_name](json_serializer=jsontext.dumps)
    statement = _insert_into(_DOCS)
    keys = frozenset(["tag", "doc", "doc_or_null"])
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    by_name = {name: process for name, _source, _fixed, process in _binds(compiled, keys) or []}
    return by_name[column], compiled._bind_processors[column]


def _sqlalchemys_text(dialect_name: str, value: Any) -> Any:
    """What SQLAlchemy's processor gives, as text: psycopg's Json wrapper as psycopg dumps it."""
    if dialect_name == "postgresql" and value is not None:
        return json.dumps(value.obj)
    return value


@pytest.mark.parametrize("dialect_name", sorted(DIALECTS))
@pytest.mark.parametrize("column", ["doc", "doc_or_null"])
@pytest.mark.parametrize("document", DOCUMENTS, ids=repr)
def test_the_text_is_the_one_sqlalchemys_processor_gives(document: Any, column: str, dialect_name: str) -> None:
    ours, sqlalchemys = _processor(column, dialect_name)
    assert ours.json_serializer is jsontext.dumps  # the converter's shortcut is on
    text = ours(document)
    assert text is None or type(text) is str
    assert text == _sqlalchemys_text(dialect_name, sqlalchemys(document))
    # The converter's shortcut for dicts and lists gives the same.
    dialect = DIALECTS[dialect_name](json_serializer=jsontext.dumps)
    statement = _DOCS.update().values(doc=bindparam("doc"), doc_or_null=bindparam("doc_or_null")).where(
        _DOCS.c.tag == bindparam("b_tag"))
    plan = _build(dialect, statement, frozenset(["b_tag", "doc", "doc_or_null"]))
    assert plan is not None
    sent = plan.convert({"b_tag": "t", "doc": document, "doc_or_null": document})
    by_name = sent if isinstance(sent, dict) else dict(zip(["doc", "doc_or_null", "b_tag"], sent))  # SET, then WHERE
    assert by_name[column] == text


def _rows(tag: str) -> list[dict[str, Any]]:
    return [{"tag": f"{tag}{i}", "doc": document, "doc_or_null": document} for i, document in enumerate(DOCUMENTS)]


def test_every_path_stores_what_conn_execute_stores(database_url: str, clock: FixedClock) -> None:
    cf = Careflow(database_url, clock=clock, registry=Registry())
    try:
        _DOCS.metadata.create_all(cf.db)
        statement = _insert_into(_DOCS)
        with cf.db.begin() as conn:
            conn.execute(statement, _rows("plain"))
            execute(conn, statement, _rows("many"))  # several rows: COPY on PostgreSQL, an executemany on SQLite
            for row in _rows("one"):
                execute(conn, statement, [row])  # one row: the prebuilt statement
        postgres = cf.db.dialect.name == "postgresql"
        if postgres:
            with cf.db.begin() as conn:
                send(conn, statement, _rows("sent"))  # pipeline mode: one multi-row INSERT ... VALUES
                sync(conn)

        def stored(tag: str) -> list[tuple[Any, ...]]:
            with cf.db.connect() as conn:
                return [tuple(r) for r in conn.execute(
                    select(cast(_DOCS.c.doc, String), cast(_DOCS.c.doc_or_null, String), _DOCS.c.doc.is_(None))
                    .where(_DOCS.c.tag.like(f"{tag}%")).order_by(_DOCS.c.id))]

        plain = stored("plain")
        assert len(plain) == len(DOCUMENTS)
        assert ("null", "null", False) in plain and ("null", None, False) in plain and (None, None, True) in plain
        for tag in ("many", "one", "sent") if postgres else ("many", "one"):
            assert stored(tag) == plain, tag
    finally:
        cf.close()
