"""``column IN <list parameter>`` whose SQL text does not depend on the list's length on PostgreSQL.

An expanding ``IN`` (``bindparam(..., expanding=True)``) is written out with one placeholder per
value at each execution: a new SQL text for each length of the list, which psycopg converts to
its own placeholders again at every call (it caches only short texts), some milliseconds for the
few hundred ids of a batch. On PostgreSQL ``in_list`` is ``column = ANY(:name)`` instead, with the
list sent as one array parameter: one text, converted and prepared once. On SQLite, where
SQLAlchemy's rewriting of the statement for each list costs more than running it, a column of
integers or text is ``column IN (SELECT value FROM json_each(:name))``, the list sent as the JSON
text of an array: one text, one parameter, whose values compare as bound values do (the column's
affinity applies). Other databases and types keep the expanding ``IN``. Either way the parameter
is given as a list.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Enum, Integer, String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class InList(ColumnElement[bool]):
    """``column`` is one of the values of the list parameter ``name``."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison already: no "= 1" where booleans are integers
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: ColumnElement[Any], name: str):
        self.column = column
        self.name = name


def in_list(column: Any, name: str) -> InList:
    return InList(column, name)


@compiles(InList)
def _expanding_in(element: InList, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(InList, "postgresql")
def _equals_any(element: InList, compiler: Any, **kw: Any) -> str:
    item = element.column.type
    if isinstance(item, String) and item.length is not None:
        item = String()  # CAST(x AS VARCHAR(n)) would cut longer values, which could then match
    return compiler.process(element.column == any_(bindparam(element.name, type_=ARRAY(item))), **kw)


@compiles(InList, "sqlite")
def _in_json_array(element: InList, compiler: Any, **kw: Any) -> str:
    kind = element.column.type
    if not isinstance(kind, (Integer, String)) or isinstance(kind, Enum):  # values a bind processor converts
        return _expanding_in(element, compiler, **kw)
    column = compiler.process(element.column, **kw)
    values = compiler.process(bindparam(element.name, type_=JSON()), **kw)
    # Compared with a list of bound values, a text column's affinity turns numbers into text; with
    # json_each's values it does not (an integer column's does): the CAST does it.
    value = "CAST(value AS TEXT)" if isinstance(kind, String) else "value"
    return f"{column} IN (SELECT {value} FROM json_each({values}))"
