"""Prebuilt Core statements run with many parameter sets, for the write path of a request or batch.

``conn.execute(statement, rows)`` rebuilds, for every execution, what does not change between
executions of one statement: which bind parameters it has, in which order, which of them are
literals of the statement or column defaults, and which type processor each one goes through.
For the dozen rows a request writes, that bookkeeping costs more than the database's work.
``execute`` works it out once per statement and set of keys (a ``_Plan``), then converts each
row with SQLAlchemy's own bind processors (so the values sent are exactly those
``conn.execute`` would send) and runs the SQL with ``exec_driver_sql``: the same driver call
(``cursor.executemany`` for several rows), in the same transaction, seen by the same engine
events. A statement whose compiled form needs more than this (expanding or post-compile
parameters, SQL-side defaults to prefetch, escaped names) is left to ``conn.execute``.

On PostgreSQL, psycopg's ``executemany`` costs some 30 us of Python per row (each row is a
statement of its own in a pipeline), more than the server's work. There, several rows for one
statement go as one bulk statement instead: the rows of a plain INSERT as ``COPY ... FROM STDIN``
(``_Copy``), the rows of an UPDATE by key as one ``UPDATE ... FROM unnest(<one array per
parameter>)`` (``_UpdateFrom``), and new rows whose ids are wanted back as one ``INSERT ... SELECT
... FROM unnest(...) RETURNING id`` (``_InsertSelect``, through ``insert_ids``); the text of
these two is the same for any number of rows, so psycopg converts and prepares it once. All send the
values ``conn.execute`` would send (the same bind processors), in the same transaction, and count
the rows the same way. SQLite, one row, and any statement these cannot express keep the plain path.

``send`` / ``sync`` (PostgreSQL, psycopg): statements sent in pipeline mode, without waiting for
the server, so that it runs a batch's first writes while the client computes the rest (see
``instances.Writes``). The rows matched reach the caller's checks at ``sync``, where the first
error of any statement is raised; every other statement on the connection, a savepoint and the
commit sync first (engine listeners, ``watch``), so a read sees what was sent before it and
nothing commits unchecked; a rollback leaves pipeline mode. COPY is not allowed there: a plain
INSERT's rows go as one multi-row ``INSERT ... VALUES`` (``_InsertValues``).
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any

from sqlalchemy import (
    JSON, Boolean, Connection, Date, DateTime, Enum, Float, Integer, String, Table, bindparam, column, event, func, insert,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable, operators, visitors
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, ColumnClause, Null
from sqlalchemy.sql.selectable import FromClause, ReturnsRows
from sqlalchemy.types import TypeDecorator, TypeEngine


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    #: One row's parameters for the driver: a tuple in the driver's order, or a dict by name.
    convert: Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class _Done:
    """What a bulk statement returns: the rows it wrote or matched, as a result's ``rowcount``."""

    rowcount: int


_Cache = dict[tuple[int, Executable, frozenset[str]], tuple[Executable, Dialect, Any]]
_plans: _Cache = {}
_bulks: _Cache = {}
_insert_selects: _Cache = {}


def execute(conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> Any:
    """``conn.execute(statement, rows)`` for an INSERT or UPDATE without RETURNING: the result
    (``rowcount`` = rows matched in total)."""
    keys = frozenset(rows[0])
    same_keys = all(len(row) == len(keys) and keys.issuperset(row) for row in rows[1:])
    if len(rows) > 1 and same_keys and conn.dialect.name == "postgresql":
        bulk = _cached(_bulks, _build_bulk, conn.dialect, statement, keys)
        if bulk is not None:
            done = bulk.run(conn, rows)
            if done is not None:
                return done
    plan = _cached(_plans, _build, conn.dialect, statement, keys)
    if plan is None or not same_keys:
        return conn.execute(statement, list(rows) if len(rows) > 1 else rows[0])
    params = [plan.convert(row) for row in rows]
    return conn.exec_driver_sql(plan.sql, params if len(params) > 1 else params[0])


def insert_ids(conn: Connection, statement: Insert, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """``conn.execute(statement, rows).scalars().all()`` for ``insert(table).returning(table.c.id,
    sort_by_parameter_order=True)``: the new rows' ids, in the order of ``rows``."""
    keys = frozenset(rows[0])
    if len(rows) > 1 and conn.dialect.name == "postgresql" and all(
            len(row) == len(keys) and keys.issuperset(row) for row in rows[1:]):
        bulk = _cached(_insert_selects, _build_insert_select, conn.dialect, statement, keys)
        if bulk is not None:
            ids = bulk.run(conn, rows)
            if ids is not None:
                return ids
    if len(rows) > 1 and conn.dialect.name == "sqlite":
        numbered = _cached(_numbered_inserts, _build_numbered_insert, conn.dialect, statement, keys)
        if numbered is not None:
            ids = numbered.run(conn, rows)
            if ids is not None:
                return ids
    return list(conn.execute(statement, list(rows)).scalars().all())


def _cached(cache: _Cache, build: Callable[[Dialect, Any, frozenset[str]], Any], dialect: Dialect,
            statement: Executable, keys: frozenset[str]) -> Any:
    cache_key = (id(dialect), statement, keys)
    hit = cache.get(cache_key)
    if hit is not None and hit[1] is dialect:
        return hit[2]
    plan = build(dialect, statement, keys)
    if len(cache) >= 1024:  # a few dozen shapes per engine; many engines (tests) come and go
        cache.clear()
    cache[cache_key] = (statement, dialect, plan)  # the statement and dialect are kept alive with it
    return plan


def _build(dialect: Dialect, statement: Executable, keys: frozenset[str], *, returning: bool = False) -> _Plan | None:
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    binds = _binds(compiled, keys)
    if binds is None or bool(getattr(compiled, "returning", None)) != returning:
        return None
    if len({b[0] for b in binds}) != len(binds) and not compiled.positional:
        return None
    return _Plan(compiled.string, _converter(binds, bool(compiled.positional)))


_Bind = tuple[str, int, Any, Callable[[Any], Any] | None]


def _binds(compiled: Any, keys: frozenset[str]) -> list[_Bind] | None:
    """The compiled statement's parameters in the driver's order, each with where its value comes
    from (0: the row, 1: a constant, 2: a column default) and its bind processor; None if the
    statement needs more than that (see the module's docstring)."""
    if (compiled.literal_execute_params or compiled.post_compile_params or compiled.update_prefetch
            or getattr(compiled, "escaped_bind_names", None)):
        return None
    defaults: dict[str, Any] = {}
    for column_ in compiled.insert_prefetch:
        default = column_.default
        if default is None or not (default.is_scalar or default.is_callable):
            return None
        defaults[column_.key] = (1, default.arg) if default.is_scalar else (2, default.arg)
    names = compiled.positiontup if compiled.positional else list(compiled.bind_names.values())
    processors = compiled._bind_processors
    binds = []
    for name in names:
        if name in keys:
            source, fixed = 0, None
        elif name in defaults:
            source, fixed = defaults[name]
        else:
            bind = compiled.binds.get(name)
            if bind is None or bind.callable is not None or bind.value is None and bind.required:
                return None
            source, fixed = 1, bind.effective_value
        binds.append((name, source, fixed, _json_as_text(compiled, name, processors.get(name))))
    return binds


def _json_as_text(compiled: Any, name: str, process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A JSON parameter's processor, as SQLAlchemy's (``JSON._make_bind_processor``) but known to
    give the document's text from the dialect's serializer, so that ``_converter`` may call the
    serializer itself for a dict or list (the usual document), one call fewer per value.

    On psycopg SQLAlchemy's gives a ``psycopg.types.json.Json`` wrapper, which psycopg then turns
    into the same text (with the same serializer) through a dumper written in Python; this one
    gives the text, sent as a plain string converted in C, which the SQL casts to JSON (a ``json``
    value keeps its text as given). Any other parameter keeps ``process``."""
    dialect = compiled.dialect
    bind = compiled.binds.get(name)
    if process is None or bind is None:
        return process
    impl = bind.type.dialect_impl(dialect)
    if dialect.driver == "psycopg" and type(impl) is _pg_json():
        if compiled.string.count(f"%({name})s") != compiled.string.count(f"%({name})s::JSON"):
            return process  # no cast: the server would take the text for a string
    elif not (dialect.name == "sqlite" and isinstance(impl, JSON)  # SQLAlchemy's gives the serializer's text too
              and type(impl).bind_processor is JSON.bind_processor
              and type(impl)._make_bind_processor is JSON._make_bind_processor
              and impl._str_impl.bind_processor(dialect) is None):
        return process
    null, serialize, none_as_null = bind.type.NULL, dialect._json_serializer or json.dumps, bind.type.none_as_null

    def as_text(value: Any) -> Any:
        if value is null:
            value = None
        elif value is None and none_as_null or isinstance(value, Null):
            return None
        return serialize(value)

    as_text.json_serializer = serialize  # type: ignore[attr-defined]
    return as_text


@cache
def _pg_json() -> type:
    """The JSON type SQLAlchemy's psycopg dialect binds parameters with (a ``Json`` wrapper)."""
    from sqlalchemy.dialects.postgresql.psycopg import _PGJSON

    return _PGJSON


def _converter(binds: list[_Bind], positional: bool) -> Any:
    """A function of one row giving the driver's parameters, written out for this plan (one
    expression per bind: the row's value, a constant or a default, through its processor). As
    SQLAlchemy does, None goes through the processor too (JSON's turns it into 'null')."""
    names: dict[str, Any] = {}
    parts = []
    for index, (name, source, fixed, process) in enumerate(binds):
        value = f"row[{name!r}]" if source == 0 else f"c{index}" if source == 1 else f"c{index}(None)"
        if source:
            names[f"c{index}"] = fixed
        if process is not None:
            names[f"p{index}"] = process
            serialize = getattr(process, "json_serializer", None)
            if serialize is not None and source == 0:  # a JSON document: a dict or a list goes straight to text
                names[f"s{index}"] = serialize
                value = f"(s{index}(v{index}) if type(v{index} := {value}) is dict or type(v{index}) is list else p{index}(v{index}))"
            else:
                value = f"p{index}({value})"
        parts.append(value if positional else f"{name!r}: {value}")
    body = f"({', '.join(parts)},)" if positional else f"{{{', '.join(parts)}}}"
    return eval(f"lambda row: {body}", names)  # noqa: S307 - built from bind names of our own statements


# --- PostgreSQL: several rows in one statement ------------------------------------------------------

def _build_bulk(dialect: Dialect, statement: Executable, keys: frozenset[str]) -> _Copy | _UpdateFrom | None:
    if isinstance(statement, Insert):
        return _build_copy(dialect, statement, keys)
    if isinstance(statement, Update):
        return _build_update_from(dialect, statement, keys)
    return None


@dataclass(frozen=True, slots=True)
class _Copy:
    """A plain ``table.insert()``'s rows as ``COPY table (columns) FROM STDIN``.

    COPY inserts rows as INSERT does (column defaults, constraints, triggers), but bypasses
    SQLAlchemy's execution, so the engine's ``before_cursor_execute`` / ``after_cursor_execute``
    listeners are called here (with no execution context, which SQLAlchemy allows): a statement
    counter sees one statement, as for an executemany.
    """

    sql: str
    #: One row's values in the COPY's column order, through the same bind processors as an INSERT.
    convert: Callable[[Mapping[str, Any]], tuple[Any, ...]]

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> _Done:
        values = [self.convert(row) for row in rows]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        events = conn.dispatch
        try:
            events.before_cursor_execute(conn, cursor, self.sql, values, None, True)
            with cursor.copy(self.sql) as copy:
                for value in values:
                    copy.write_row(value)
            count = cursor.rowcount
            events.after_cursor_execute(conn, cursor, self.sql, values, None, True)
        except Exception as exc:  # the same SQLAlchemy error (IntegrityError...) as an INSERT's
            conn._handle_dbapi_exception(exc, self.sql, values, cursor, None)
        finally:
            cursor.close()
        return _Done(count)


def _build_copy(dialect: Dialect, statement: Insert, keys: frozenset[str]) -> _Copy | None:
    table = statement.table
    if (not isinstance(table, Table) or statement._values or statement._multi_values or statement._returning
            or statement.select is not None or statement._post_values_clause is not None):
        return None
    for column_ in table.c:  # a default that only SQL can compute has no place in a COPY
        if column_.key not in keys and column_.default is not None and not (
                column_.default.is_scalar or column_.default.is_callable):
            return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys), for_executemany=True)
    binds = _binds(compiled, keys)
    if binds is None or compiled.positional or getattr(compiled, "returning", None):
        return None
    names = [name for name, _source, _fixed, _process in binds]
    if len(set(names)) != len(names) or not all(name in table.c for name in names):
        return None
    quote = dialect.identifier_preparer
    columns = ", ".join(quote.format_column(table.c[name]) for name in names)
    return _Copy(f"COPY {quote.format_table(table)} ({columns}) FROM STDIN", _converter(binds, positional=True))


@dataclass(frozen=True, slots=True)
class _UpdateFrom:
    """An UPDATE's rows as one ``UPDATE ... FROM unnest(:a1, :a2...) AS rows(...)``: each parameter
    that varies from row to row becomes an array of the rows' values, and each reference to it a
    column of ``rows``.

    That is an executemany's outcome only when no table row is matched by two rows of parameters
    (the executemany would update it twice, the join once) and no row's UPDATE changes which table
    rows another one matches. Hence ``distinct``: parameters compared for equality (in the WHERE
    clause's top-level AND) with columns the statement does not SET. Rows whose values of these
    differ match disjoint sets of table rows, which no UPDATE of the batch moves between them; the
    rows are checked for that at run time (else the plain executemany runs). The total rowcount is
    then the executemany's: optimistic locks and compare-and-set updates are checked as before.
    """

    plan: _Plan
    #: The rows' keys, one array parameter each (named ``u_<key>``).
    names: tuple[str, ...]
    distinct: tuple[str, ...]

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> Any:
        params = self.params(rows)
        return None if params is None else conn.exec_driver_sql(self.plan.sql, params)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> Any:
        """The driver's parameters for these rows; None if they must go by an executemany."""
        distinct = self.distinct
        try:
            keys = {tuple(row[name] for name in distinct) for row in rows}
        except TypeError:  # a value that cannot be hashed: let the executemany do it
            return None
        if len(keys) != len(rows):
            return None
        arrays = {f"u_{name}": [row[name] for row in rows] for name in self.names}
        params = self.plan.convert(arrays)
        return params if _one_type_each(params) else None


def _one_type_each(params: Mapping[str, Any]) -> bool:
    """Whether every array parameter holds values of one Python type (None aside). psycopg dumps
    an array with one element type and refuses a list of ints and floats, or of ints and bools,
    where an executemany sends each row's value as it is and the server converts it: such rows
    keep the executemany."""
    for value in params.values():
        if type(value) is list:
            kinds = {type(item) for item in value}
            kinds.discard(type(None))
            if len(kinds) > 1:
                return False
    return True


#: The column types an array parameter may carry, each cast as the plain statement casts it.
_ARRAY_TYPES = (Integer, String, JSON, DateTime, Date, Boolean, Float)


def _array_item(type_: TypeEngine[Any]) -> TypeEngine[Any] | None:
    """The element type of an array parameter carrying values of ``type_``; None for a type not known
    to cast as its plain parameter does."""
    base = type_.impl_instance if isinstance(type_, TypeDecorator) else type_
    if not isinstance(base, _ARRAY_TYPES) or isinstance(base, Enum) or isinstance(base, Float) and base.precision:
        return None
    if isinstance(base, String) and base.length is not None:
        # CAST(x AS VARCHAR(n)) cuts longer text silently, where storing it in the column fails.
        return None if isinstance(type_, TypeDecorator) else String()
    return type_


def _unnest(names: Sequence[str], items: Mapping[str, TypeEngine[Any]], *, ordinality: str | None = None) -> Any:
    """``unnest(:u_a, :u_b...) AS u_rows(u_a, u_b...)``: one array parameter per name, as a table."""
    return func.unnest(*[BindParameter(f"u_{name}", type_=ARRAY(items[name], dimensions=1)) for name in names]).table_valued(
        *[column(f"u_{name}", items[name]) for name in names], with_ordinality=ordinality).render_derived(name="u_rows")


def _binary_arrays(plan: _Plan, names: Sequence[str]) -> _Plan | None:
    """The plan with its array parameters in psycopg's binary format: its text format quotes every
    element of an array with regular expressions, which costs more than the bulk statement saves."""
    sql = plan.sql
    for name in names:
        placeholder = f"%(u_{name})s"
        if sql.count(placeholder) != 1:
            return None
        sql = sql.replace(placeholder, f"%(u_{name})b")
    return _Plan(sql, plan.convert)


@dataclass(frozen=True, slots=True)
class _InsertSelect:
    """Rows inserted with their ids returned, as ``INSERT ... SELECT ... FROM unnest(...) WITH
    ORDINALITY ORDER BY ordinality RETURNING id``: what SQLAlchemy's own "insertmanyvalues" sends
    for a RETURNING in parameter order on PostgreSQL (with a VALUES list where this has arrays),
    and read the same way: the sequence numbers the rows in the order the SELECT gives them, so
    the ids sorted are those of the rows in order.

    Without RETURNING (a plain ``table.insert()`` sent in pipeline mode, where COPY is not
    allowed), a column the rows leave out but that has a Python default gets it in every row, as
    an INSERT's executemany gives it (``defaults``)."""

    plan: _Plan
    names: tuple[str, ...]
    #: (column, whether the default is a function, the value or function) for columns left out.
    defaults: tuple[tuple[str, bool, Any], ...] = ()

    def params(self, rows: Sequence[Mapping[str, Any]]) -> Any:
        """The driver's parameters for these rows; None if an array would mix types (_one_type_each)."""
        arrays = {f"u_{name}": [row[name] for row in rows] for name in self.names}
        for name, is_callable, arg in self.defaults:
            arrays[f"u_{name}"] = [arg(None) for _row in rows] if is_callable else [arg] * len(rows)
        params = self.plan.convert(arrays)
        return params if _one_type_each(params) else None

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int] | None:
        params = self.params(rows)
        if params is None:
            return None  # see _one_type_each
        ids = sorted(conn.exec_driver_sql(self.plan.sql, params).scalars())
        if len(ids) != len(rows):
            raise AssertionError(f"{len(rows)} rows inserted, {len(ids)} ids returned")
        return ids


def _plain_insert_table(statement: Insert) -> Table | None:
    """The table of ``insert(table)`` with no values, VALUES list, SELECT or suffix of its own: a
    statement whose rows come only from the parameters, which the bulk forms below can rewrite."""
    table = statement.table
    if (not isinstance(table, Table) or statement._values or statement._multi_values
            or statement.select is not None or statement._post_values_clause is not None):
        return None
    return table


def _build_insert_select(dialect: Dialect, statement: Insert, keys: frozenset[str]) -> _InsertSelect | None:
    """The bulk form of ``insert(table).returning(table.c.id, sort_by_parameter_order=True)``, or,
    for the pipeline, of a plain ``table.insert()``."""
    table = _plain_insert_table(statement)
    if table is None:
        return None
    returning = statement._returning
    id_column = table.c.get("id")
    if returning and (len(returning) != 1 or returning[0] is not id_column or id_column is None
                      or id_column.key in keys or table.autoincrement_column is not id_column):
        return None
    if not keys.issubset(table.c.keys()):
        return None
    defaults = []
    for column_ in table.c:  # INSERT ... SELECT computes no default per row: the arrays carry them
        default = column_.default
        if column_.key in keys or default is None:
            continue
        if returning or not (default.is_scalar or default.is_callable):
            return None
        defaults.append((column_.key, bool(default.is_callable), default.arg))
    names = tuple(sorted(keys))
    columns = names + tuple(name for name, _is_callable, _arg in defaults)
    items: dict[str, TypeEngine[Any]] = {}
    for name in columns:
        item = _array_item(table.c[name].type)
        if item is None:
            return None
        items[name] = item
    rows = _unnest(columns, items, ordinality="u_order")
    bulk = insert(table).from_select([table.c[name] for name in columns],
                                     select(*[rows.c[f"u_{name}"] for name in columns]).order_by(rows.c.u_order))
    arrays = frozenset(f"u_{name}" for name in columns)
    plan = _build(dialect, bulk.returning(id_column), arrays, returning=True) if returning else _build(dialect, bulk, arrays)
    plan = None if plan is None else _binary_arrays(plan, columns)
    return None if plan is None else _InsertSelect(plan, names, tuple(defaults))


def _build_update_from(dialect: Dialect, statement: Update, keys: frozenset[str]) -> _UpdateFrom | None:
    table = statement.table
    if (not isinstance(table, Table) or statement._returning or statement._multi_values
            or not statement._values or not statement._where_criteria):
        return None
    for element in visitors.iterate(statement):  # another table, or a subquery, could read rows this UPDATE writes
        if isinstance(element, (ReturnsRows, FromClause)) and element is not table and element is not statement:
            return None
        if isinstance(element, ColumnClause) and element.table is not None and element.table is not table:
            return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    if _binds(compiled, keys) is None:
        return None
    names = tuple(sorted(keys))
    items: dict[str, TypeEngine[Any]] = {}
    for name in names:
        bind = compiled.binds.get(name)
        item = None if bind is None else _array_item(bind.type)
        if item is None:
            return None
        items[name] = item
    set_columns = {getattr(key, "key", key) for key in statement._values}
    distinct = []
    for criterion in _conjuncts(statement._where_criteria):
        if (isinstance(criterion, BinaryExpression) and criterion.operator is operators.eq
                and isinstance(criterion.left, ColumnClause) and criterion.left.table is table
                and isinstance(criterion.right, BindParameter) and criterion.right.key in keys
                and criterion.left.key not in set_columns):
            distinct.append(criterion.right.key)
    if not distinct:
        return None
    rows = _unnest(names, items)

    def as_column(element: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in items:
            return rows.c[f"u_{element.key}"]
        return None

    bulk = visitors.replacement_traverse(statement, {}, as_column)
    plan = _build(dialect, bulk, frozenset(f"u_{name}" for name in names))
    if plan is None or "FROM unnest(" not in plan.sql:
        return None
    plan = _binary_arrays(plan, names)
    if plan is None:
        return None
    return _UpdateFrom(plan, names, tuple(distinct))


def _conjuncts(criteria: Sequence[Any]) -> list[Any]:
    out = []
    for criterion in criteria:
        if isinstance(criterion, BooleanClauseList) and criterion.operator is operators.and_:
            out += _conjuncts(criterion.clauses)
        else:
            out.append(criterion)
    return out


# --- SQLite: new rows numbered by the caller ------------------------------------------------------

_numbered_inserts: _Cache = {}
_MAX_ROWID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _NumberedInsert:
    """New rows of a table whose id is SQLite's rowid (an INTEGER PRIMARY KEY), given their ids here and inserted by one
    executemany: the ids SQLite would have given them, without a statement per row.

    SQLite has no ordering guarantee for the rows of a multi-row INSERT's RETURNING, so SQLAlchemy
    sends ``insert(...).returning(id, sort_by_parameter_order=True)`` one row per statement. For
    a rowid table without AUTOINCREMENT SQLite gives a new row the largest id in the table plus
    one: rows inserted in order get ``max(id) + 1``, ``+ 2``... That is what is given here, read
    in the same transaction. A writer that slipped in between (a transaction that does not take
    the write lock up front, unlike ``db.make_engine``'s BEGIN IMMEDIATE) makes the INSERT fail
    on the primary key, or the transaction fail as stale in WAL mode; it never shifts an id.
    """

    top: str
    insert: Executable

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int] | None:
        first = (conn.exec_driver_sql(self.top).scalar() or 0) + 1
        if first + len(rows) - 1 > _MAX_ROWID:
            return None  # SQLite would pick ids at random: let it
        ids = list(range(first, first + len(rows)))
        inserted = execute(conn, self.insert, [{**row, "id": id_} for row, id_ in zip(rows, ids)]).rowcount
        if inserted != len(rows):
            raise AssertionError(f"{len(rows)} rows to insert, {inserted} inserted")
        return ids


def _build_numbered_insert(dialect: Dialect, statement: Insert, keys: frozenset[str]) -> _NumberedInsert | None:
    table = _plain_insert_table(statement)
    if table is None:
        return None
    returning = statement._returning
    id_column = table.c.get("id")
    if (id_column is None or len(returning) != 1 or returning[0] is not id_column or "id" in keys
            or table.autoincrement_column is not id_column or table.dialect_options["sqlite"]["autoincrement"]
            or id_column.type.compile(dialect=dialect) != "INTEGER" or not keys.issubset(table.c.keys())):
        return None
    quote = dialect.identifier_preparer
    return _NumberedInsert(f"SELECT max({quote.format_column(id_column)}) FROM {quote.format_table(table)}",
                           insert(table))


def new_ids(conn: Connection, table: Table, count: int) -> list[int] | None:
    """Ids for ``count`` new rows of ``table`` whose INSERT comes later in this transaction, the
    id given in each row; None where this cannot be done (the rows then go by ``insert_ids``).

    PostgreSQL: the next values of the id column's sequence, as its default would take them.
    SQLite, for a rowid table without AUTOINCREMENT: ``max(id) + 1``, ``+ 2``... (see
    ``_NumberedInsert``), read under the transaction's write lock. SQLite gives any other new row of
    the table the same ``max(id) + 1``: the caller writes these rows before another one can be added.
    """
    if count < 1:
        return []
    id_column = table.c.get("id")
    if id_column is None or table.autoincrement_column is not id_column:
        return None
    if conn.dialect.name == "postgresql":
        name = conn.dialect.identifier_preparer.format_table(table)
        ids = list(conn.execute(_NEXT_VALUES, {"table": name, "count": count}).scalars())
        return None if None in ids else ids  # no sequence: nextval(NULL) is NULL
    if conn.dialect.name == "sqlite":
        if table.dialect_options["sqlite"]["autoincrement"] or id_column.type.compile(dialect=conn.dialect) != "INTEGER":
            return None
        first = (conn.execute(select(func.max(id_column))).scalar() or 0) + 1
        if first + count - 1 > _MAX_ROWID:
            return None  # SQLite would pick ids at random: let it
        return list(range(first, first + count))
    return None


#: The next ``:count`` values of the sequence of table ``:table``'s id (PostgreSQL); the sequence's
#: name is a subquery, worked out once per statement rather than once per value.
_NEXT_VALUES = select(func.nextval(select(func.pg_get_serial_sequence(bindparam("table", type_=String), "id"))
                                   .scalar_subquery())).select_from(func.generate_series(1, bindparam("count", type_=Integer)))


# --- PostgreSQL: statements sent without waiting for their results (pipeline mode) ---------------

def pipelining(conn: Connection) -> bool:
    """Whether ``send`` may pipeline on this connection: a PostgreSQL engine watched by ``watch``,
    through a psycopg that has pipeline mode."""
    if conn.dialect.name != "postgresql" or conn.engine not in _watched:
        return False
    driver = conn.connection.driver_connection
    pipeline = getattr(driver, "pipeline", None)
    return pipeline is not None and type(driver).__module__.startswith("psycopg") and _psycopg_pipeline()


def send(conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]],
         check: Callable[[int], None] | None = None) -> None:
    """``execute(conn, statement, rows)`` without waiting for the server: the statement is sent in
    pipeline mode and runs while the caller goes on. ``check`` gets the rows matched once they are
    known (``sync``), and may raise. A statement that cannot go by the pipeline runs as ``execute``
    does, after a sync."""
    keys = frozenset(rows[0])
    same_keys = all(len(row) == len(keys) and keys.issuperset(row) for row in rows[1:])
    sql = params = bulk = None
    many = raw = False
    if same_keys and isinstance(statement, Insert):  # one row too: a single INSERT would ask for its id back
        values = _cached(_insert_values, _build_insert_values, conn.dialect, statement, keys)
        if values is not None and len(rows) * values.width <= _MAX_PARAMS:
            sql, params, raw = values.sql(len(rows)), values.params(rows), True
        elif len(rows) > 1:
            bulk = _cached(_insert_selects, _build_insert_select, conn.dialect, statement, keys)
    elif len(rows) > 1 and same_keys:
        bulk = _cached(_bulks, _build_bulk, conn.dialect, statement, keys)
    if isinstance(bulk, (_InsertSelect, _UpdateFrom)):
        params = bulk.params(rows)
        sql = None if params is None else bulk.plan.sql
    if sql is None and same_keys:
        plan = _cached(_plans, _build, conn.dialect, statement, keys)
        if plan is not None:
            sql, many = plan.sql, len(rows) > 1
            params = [plan.convert(row) for row in rows] if many else plan.convert(rows[0])
    if sql is None:
        sync(conn)
        matched = execute(conn, statement, rows).rowcount
        if check is not None:
            check(matched)
        return
    pipeline = conn.info.get(_PIPELINE)
    if pipeline is None:
        pipeline = conn.info[_PIPELINE] = _Pipeline(conn)
    pipeline.send(sql, params, many, check, raw)


#: Parameters of one statement at most (the protocol's limit is 65535).
_MAX_PARAMS = 30000
_insert_values: _Cache = {}


@dataclass(slots=True)
class _InsertValues:
    """A plain INSERT's rows as one ``INSERT ... VALUES (...), (...)``: the statement an INSERT's
    executemany runs once per row, with one parenthesised list of parameters per row (each cast as
    in the plain statement, Python defaults filled in), as SQLAlchemy's "insertmanyvalues" sends
    it. Its parameters are plain values, which psycopg converts in C; an array per column (as in
    ``_InsertSelect``) costs some 20 us of Python per column and statement, which chunks of a
    batch multiply. The placeholders are PostgreSQL's own ($1, $2...), sent as they are by a raw
    cursor: psycopg parses a long statement's ``%s`` placeholders anew at each execution."""

    head: str
    row: str
    width: int
    convert: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    texts: dict[int, str]

    def sql(self, count: int) -> str:
        text = self.texts.get(count)
        if text is None:
            width, row = self.width, self.row
            text = self.texts[count] = self.head + ", ".join(
                row % tuple(f"${start + 1 + index}" for index in range(width)) for start in range(0, count * width, width))
        return text

    def params(self, rows: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
        return tuple(chain.from_iterable(map(self.convert, rows)))


def _build_insert_values(dialect: Dialect, statement: Insert, keys: frozenset[str]) -> _InsertValues | None:
    if statement._returning or statement._multi_values or statement.select is not None or statement._values:
        return None
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys), for_executemany=True)
    binds = _binds(compiled, keys)
    text = compiled.string
    cut = text.rfind(" VALUES (")
    if binds is None or compiled.positional or cut < 0 or not text.endswith(")") or dialect.paramstyle != "pyformat":
        return None
    head, row = text[:cut + len(" VALUES ")], text[cut + len(" VALUES "):]
    order = re.findall(r"%\((\w+)\)s", row)
    by_name = {bind[0]: bind for bind in binds}
    if len(order) != len(binds) or set(order) != set(by_name) or "%" in re.sub(r"%\(\w+\)s", "", text):
        return None
    row = re.sub(r"%\(\w+\)s", "%s", row)
    return _InsertValues(head, row, len(order), _converter([by_name[name] for name in order], positional=True), {})


def sync(conn: Connection) -> None:
    """Wait for every statement ``send`` sent on this connection, then run their checks. An error
    of any of them is raised here as ``conn.execute`` would raise it (IntegrityError...)."""
    pipeline = conn.info.get(_PIPELINE)
    if pipeline is not None:
        pipeline.sync()


def watch(engine: Any) -> None:
    """Let ``send`` pipeline on this engine's connections, each pipeline synced before anything
    else runs on its connection: any other statement (a read must see the writes sent before it,
    and a statement of the ORM would not get its result in pipeline mode), a savepoint, a commit.
    A rollback drops it (the transaction is lost anyway), and so does a rollback to a savepoint:
    what was sent since the last statement was sent within that savepoint, and goes with it. Synced
    there, a failed check (a task answered meanwhile) would fail the rollback and leave it all in place."""
    if engine in _watched:
        return
    event.listen(engine, "before_cursor_execute", _sync_before)
    event.listen(engine, "commit", _sync_before_commit)
    event.listen(engine, "rollback", _drop)
    event.listen(engine, "rollback_savepoint", _drop_to_savepoint)
    event.listen(engine, "reset", _drop_on_reset)
    _watched.add(engine)


_PIPELINE = "careflow_pipeline"
_watched: weakref.WeakSet[Any] = weakref.WeakSet()


@cache
def _raw_cursor() -> Any:
    import psycopg

    return psycopg.RawCursor


@cache
def _psycopg_pipeline() -> bool:
    import psycopg

    return psycopg.Pipeline.is_supported()


def _sync_before(conn: Connection, _cursor: Any, _statement: str, *_args: Any) -> None:
    pipeline = conn.info.get(_PIPELINE)
    if pipeline is not None and not pipeline.sending:
        pipeline.sync()


def _sync_before_commit(conn: Connection) -> None:
    sync(conn)


def _drop(conn: Connection) -> None:
    if conn.invalidated or conn.closed:
        return
    pipeline = conn.info.get(_PIPELINE)
    if pipeline is not None:
        pipeline.drop()


def _drop_to_savepoint(conn: Connection, _name: str, _context: Any) -> None:
    _drop(conn)


def _drop_on_reset(_dbapi_conn: Any, record: Any, _state: Any) -> None:
    pipeline = record.info.get(_PIPELINE)
    if pipeline is not None:
        pipeline.drop()


class _Pipeline:
    """psycopg's pipeline mode on one connection, with the statements sent in it.

    Each statement goes through a cursor of its own (a cursor keeps the result of its last
    statement), between the engine's ``before_cursor_execute`` / ``after_cursor_execute`` listeners
    as ``exec_driver_sql`` calls them, so a statement counter counts what is sent. Their results
    arrive at ``sync``: the first error then fails the sync (later statements of the transaction
    are not run), and each statement's rows matched go to its check.
    """

    __slots__ = ("conn", "sending", "_info", "_mode", "_sent")

    def __init__(self, conn: Connection):
        self.conn = conn
        self._info = conn.info  # the DBAPI connection's, reachable after conn is closed (``drop``)
        self.sending = False
        self._sent: list[tuple[Any, str, Any, Callable[[int], None] | None]] = []
        self._mode = conn.connection.driver_connection.pipeline()  # type: ignore[union-attr]
        self._mode.__enter__()

    def send(self, sql: str, params: Any, many: bool, check: Callable[[int], None] | None, raw: bool) -> None:
        conn = self.conn
        driver: Any = conn.connection.driver_connection
        cursor = _raw_cursor()(driver) if raw else driver.cursor()
        events = conn.dispatch
        self.sending = True
        try:
            events.before_cursor_execute(conn, cursor, sql, params, None, many)
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
            events.after_cursor_execute(conn, cursor, sql, params, None, many)
        except Exception as exc:  # an earlier statement's error may come back while this one is sent
            failed = sql, params
            if getattr(exc, "pgresult", None) is not None:  # the server's: the results before it all came
                failed = next(((s, p) for c, s, p, _check in self._sent if c.statusmessage is None), failed)
            self.drop()
            cursor.close()
            conn._handle_dbapi_exception(exc, failed[0], failed[1], cursor, None)
        finally:
            self.sending = False
        self._sent.append((cursor, sql, params, check))

    def sync(self) -> None:
        conn = self.conn
        del self._info[_PIPELINE]
        sent, self._sent = self._sent, []
        try:
            self._mode.__exit__(None, None, None)
        except Exception as exc:
            # The first statement without a result is the one that failed: the others were not run.
            # (A status, not ``pgresult``: an executemany that ran keeps no result, only its status.)
            failed = next(((sql, params) for cursor, sql, params, _check in sent if cursor.statusmessage is None),
                          (None, None))
            for cursor, *_rest in sent:
                cursor.close()
            conn._handle_dbapi_exception(exc, failed[0], failed[1], None, None)
        checks = []
        for cursor, _sql, _params, check in sent:
            if check is not None:
                checks.append((check, cursor.rowcount))
            cursor.close()
        for check, matched in checks:
            check(matched)

    def drop(self) -> None:
        """Leave pipeline mode without the results: the transaction is being rolled back."""
        if self._info.get(_PIPELINE) is self:
            del self._info[_PIPELINE]
        sent, self._sent = self._sent, []
        try:
            self._mode.__exit__(None, None, None)
        except Exception:  # noqa: S110 - the errors of a transaction being rolled back
            pass
        for cursor, *_rest in sent:
            cursor.close()
