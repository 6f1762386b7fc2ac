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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    #: One row's parameters for the driver: a tuple in the driver's order, or a dict by name.
    convert: Callable[[Mapping[str, Any]], Any]


_plans: dict[tuple[int, Executable, frozenset[str]], tuple[Executable, Dialect, _Plan | None]] = {}


def execute(conn: Connection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> Any:
    """``conn.execute(statement, rows)`` for an INSERT or UPDATE without RETURNING: the result
    (``rowcount`` = rows matched in total)."""
    keys = frozenset(rows[0])
    plan = _plan(conn.dialect, statement, keys)
    if plan is None or any(len(row) != len(keys) or not keys.issuperset(row) for row in rows[1:]):
        return conn.execute(statement, list(rows) if len(rows) > 1 else rows[0])
    params = [plan.convert(row) for row in rows]
    return conn.exec_driver_sql(plan.sql, params if len(params) > 1 else params[0])


def _plan(dialect: Dialect, statement: Executable, keys: frozenset[str]) -> _Plan | None:
    cache_key = (id(dialect), statement, keys)
    hit = _plans.get(cache_key)
    if hit is not None and hit[1] is dialect:
        return hit[2]
    plan = _build(dialect, statement, keys)
    if len(_plans) >= 1024:  # a few dozen shapes per engine; many engines (tests) come and go
        _plans.clear()
    _plans[cache_key] = (statement, dialect, plan)  # the statement and dialect are kept alive with it
    return plan


def _build(dialect: Dialect, statement: Executable, keys: frozenset[str]) -> _Plan | None:
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))
    if (getattr(compiled, "returning", None) or compiled.literal_execute_params or compiled.post_compile_params
            or compiled.update_prefetch or getattr(compiled, "escaped_bind_names", None)):
        return None
    defaults: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        default = column.default
        if default is None or not (default.is_scalar or default.is_callable):
            return None
        defaults[column.key] = (1, default.arg) if default.is_scalar else (2, default.arg)
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
        binds.append((name, source, fixed, processors.get(name)))
    if len({b[0] for b in binds}) != len(binds) and not compiled.positional:
        return None
    return _Plan(compiled.string, _converter(binds, bool(compiled.positional)))


def _converter(binds: list[tuple[str, int, Any, Callable[[Any], Any] | None]], positional: bool) -> Any:
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
            value = f"p{index}({value})"
        parts.append(value if positional else f"{name!r}: {value}")
    body = f"({', '.join(parts)},)" if positional else f"{{{', '.join(parts)}}}"
    return eval(f"lambda row: {body}", names)  # noqa: S307 - built from bind names of our own statements
