"""Many rows in one statement: `INSERT ... SELECT FROM unnest(arrays)`, and lists bound as arrays.

One bind per column instead of one per value, so a batch of a thousand rows costs one statement to compile, send
and plan. Each list travels as ONE text value, a PostgreSQL array literal written here and cast in SQL: psycopg
adapts a list element by element in Python (a regular expression per text element), which was a quarter of the
consumer's time per batch. JSONB and array columns travel as text elements and are cast row by row.
"""

import enum
import functools
import json
import operator
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

# Types whose text never holds a character that an array literal treats specially: written bare.
_BARE = (sa.Numeric, sa.Integer, postgresql.UUID, sa.Uuid, sa.Boolean)


def _bare(value) -> str:
    return "NULL" if value is None else str(value)


def _iso(value) -> str:  # digits, '-', ':', '.', '+' and 'T' only
    return "NULL" if value is None else value.isoformat()


def _quoted(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, enum.Enum):
        value = value.value
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(values, item: sa.types.TypeEngine) -> str:
    """`values` as a PostgreSQL array literal of `item`s (NULL for None)."""
    values = list(values)
    if not values:
        return "{}"
    kinds = set(map(type, values))
    if type(None) in kinds:  # the general path, an element at a time
        element = _bare if isinstance(item, _BARE) else _iso if isinstance(item, (sa.DateTime, sa.Date)) else _quoted
        return "{" + ",".join(map(element, values)) + "}"
    # The common case, a column without NULLs, written by C loops: this runs for every column of every batch.
    if kinds == {uuid.UUID} and isinstance(item, (postgresql.UUID, sa.Uuid)):
        return "{" + ",".join(map(_HEX, values)) + "}"  # 32 hex digits, a form PostgreSQL reads as a uuid
    if isinstance(item, _BARE):
        return "{" + ",".join(map(str, values)) + "}"
    if isinstance(item, (sa.DateTime, sa.Date)):
        return "{" + ",".join(map(_ISOFORMAT, values)) + "}"
    if kinds - {str}:
        values = [value.value if isinstance(value, enum.Enum) else str(value) for value in values]
    # Escaped once over the whole column; U+0000, which no text column can hold, separates the elements meanwhile.
    joined = "\x00".join(values)
    if joined.count("\x00") != len(values) - 1:
        raise ValueError("U+0000 is not allowed in a string (the database cannot store it)")
    return '{"' + joined.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", '","') + '"}'


_HEX = operator.attrgetter("hex")
_ISOFORMAT = operator.methodcaller("isoformat")


class Array(sa.types.TypeDecorator):
    """A bind of a list of `item`s, sent as its array literal and cast to `item[]` in the statement."""

    impl = sa.types.NullType  # no bind cast: the server reads the parameter as the array type it is cast to
    cache_ok = True

    def __init__(self, item: sa.types.TypeEngine):
        super().__init__()
        self.item = item

    def bind_expression(self, bindvalue):
        return sa.cast(bindvalue, ARRAY(self.item))

    def process_bind_param(self, value, dialect):
        return None if value is None else literal(value, self.item)


def among(column: sa.ColumnElement, values) -> sa.ColumnElement:
    """`column = ANY(array)`: the values bound as one array, where `in_` would bind (and render) one per value."""
    return column == sa.any_(sa.bindparam(None, list(values), type_=Array(column.type)))


def among_bound(column: sa.ColumnElement, name: str) -> sa.ColumnElement:
    """`among` for a statement built once: the array is bound by `name` when it runs."""
    return column == sa.any_(sa.bindparam(name, type_=Array(column.type)))


def _text_cast(column: sa.Column) -> str | None:
    """The SQL cast of a column sent as text, or None when it is sent in its own type."""
    if isinstance(column.type, JSONB):
        return "jsonb"
    if isinstance(column.type, ARRAY):
        return column.type.compile(dialect=postgresql.dialect())
    return None


def _selected(table: sa.Table, columns: tuple[str, ...]) -> list[str]:
    """The unnested columns, cast where they travel as text."""
    return [f'u."{name}"::{cast}' if (cast := _text_cast(table.c[name])) else f'u."{name}"' for name in columns]


def _unnest(table: sa.Table, columns: tuple[str, ...]) -> tuple[str, list[sa.BindParameter]]:
    """`unnest(...) AS u(...)` over one bound array per column, and its binds."""
    binds = [sa.bindparam(name, type_=Array(sa.Text() if _text_cast(table.c[name]) else table.c[name].type))
             for name in columns]
    names = ", ".join(f'"{name}"' for name in columns)
    return f'unnest({", ".join(":" + name for name in columns)}) AS u({names})', binds


@functools.cache
def _insert(table: sa.Table, columns: tuple[str, ...], suffix: str) -> sa.TextClause:
    source, binds = _unnest(table, columns)
    names = ", ".join(f'"{name}"' for name in columns)
    return sa.text(f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(_selected(table, columns))} '
                   f'FROM {source} {suffix}').bindparams(*binds)


@functools.cache
def _update(table: sa.Table, columns: tuple[str, ...], key: str) -> sa.TextClause:
    source, binds = _unnest(table, columns)
    sets = ", ".join(f'"{name}" = {value}' for name, value in zip(columns, _selected(table, columns)) if name != key)
    return sa.text(f'UPDATE "{table.name}" AS t SET {sets} FROM {source} WHERE t."{key}" = u."{key}"'
                   ).bindparams(*binds)


def _as_text(value, column: sa.Column):
    """A JSONB value as its JSON, an array as its own literal (written by its item type's fast path)."""
    if value is None:
        return None
    if isinstance(column.type, JSONB):
        return json.dumps(value)
    return literal(value, column.type.item_type)


@functools.cache
def _travelling_as_text(table: sa.Table, columns: tuple[str, ...]) -> tuple[sa.Column | None, ...]:
    """Per column, the column when its values travel as text, else None; worked out once per statement shape
    (`_text_cast` compiles an array column's type)."""
    return tuple(table.c[name] if _text_cast(table.c[name]) else None for name in columns)


def _arrays(table: sa.Table, rows: list[dict]) -> dict[str, list]:
    names = tuple(rows[0])
    arrays = {}
    for name, as_text in zip(names, _travelling_as_text(table, names)):
        values = [row[name] for row in rows]
        arrays[name] = values if as_text is None else [_as_text(value, as_text) for value in values]
    return arrays


def insert(conn: sa.Connection, table: sa.Table, rows: list[dict], *, suffix: str = "") -> sa.CursorResult | None:
    """Inserts `rows` (dicts with the same keys) into `table`; `suffix` is SQL after the SELECT (ON CONFLICT,
    RETURNING). Returns the result, or None when there was nothing to insert."""
    if not rows:
        return None
    return conn.execute(_insert(table, tuple(rows[0]), suffix), _arrays(table, rows))


def update(conn: sa.Connection, table: sa.Table, rows: list[dict], *, key: str = "id") -> None:
    """Sets the other columns of `rows` (dicts with the same keys) on the rows whose `key` they name."""
    if rows:
        conn.execute(_update(table, tuple(rows[0]), key), _arrays(table, rows))
