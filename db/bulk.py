"""Many rows in one statement: `INSERT ... SELECT FROM unnest(arrays)`.

One bind per column instead of one per value, so a batch of a thousand rows costs one statement to compile, send
and plan. JSONB and array columns travel as text and are cast in SQL (psycopg cannot send an array of them).
"""

import functools
import json

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB


def _text_cast(column: sa.Column) -> str | None:
    """The SQL cast of a column sent as text, or None when it is sent in its own type."""
    if isinstance(column.type, JSONB):
        return "jsonb"
    if isinstance(column.type, ARRAY):
        return column.type.compile(dialect=sa.dialects.postgresql.dialect())
    return None


@functools.cache
def _statement(table: sa.Table, columns: tuple[str, ...], suffix: str) -> sa.TextClause:
    quoted = [f'"{name}"' for name in columns]
    selected = [f"{q}::{cast}" if (cast := _text_cast(table.c[name])) else q for q, name in zip(quoted, columns)]
    binds = [sa.bindparam(name, type_=ARRAY(sa.Text if _text_cast(table.c[name]) else table.c[name].type))
             for name in columns]
    return sa.text(f'INSERT INTO "{table.name}" ({", ".join(quoted)}) SELECT {", ".join(selected)} '
                   f'FROM unnest({", ".join(":" + name for name in columns)}) AS u({", ".join(quoted)}) {suffix}'
                   ).bindparams(*binds)


def _as_text(value, cast: str):
    if value is None:
        return None
    if cast == "jsonb":
        return json.dumps(value)
    return "{" + ",".join(_array_element(str(element)) for element in value) + "}"


def _array_element(text: str) -> str:
    """An element of a PostgreSQL array literal, quoted so that commas, braces, quotes and spaces are kept."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def insert(conn: sa.Connection, table: sa.Table, rows: list[dict], *, suffix: str = "") -> sa.CursorResult | None:
    """Inserts `rows` (dicts with the same keys) into `table`; `suffix` is SQL after the SELECT (ON CONFLICT,
    RETURNING). Returns the result, or None when there was nothing to insert."""
    if not rows:
        return None
    columns = tuple(rows[0])
    arrays = {}
    for name in columns:
        cast = _text_cast(table.c[name])
        values = [row[name] for row in rows]
        arrays[name] = [_as_text(value, cast) for value in values] if cast else values
    return conn.execute(_statement(table, columns, suffix), arrays)
