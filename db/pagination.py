"""Keyset pagination on (time, id), newest first; the cursor is opaque to clients."""

import base64
import datetime as dt
import json
import uuid

import sqlalchemy as sa

from db.errors import Invalid, field_error


def encode_cursor(time: dt.datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([time.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def instant(text: str) -> dt.datetime:
    """An RFC 3339 date-time as an aware datetime; ValueError, worded for the client, when it names no instant."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:  # valid RFC 3339 that Python cannot hold, e.g. a leap second
        raise ValueError("unsupported date-time") from None
    if parsed.tzinfo is None:  # compared with timestamptz and cut into UTC buckets, a local time names no instant
        raise ValueError("a UTC offset is required")
    return parsed


def query_time(name: str, value: str | None) -> dt.datetime | None:
    """The date-time query parameter `name` (None when absent); 400 with a field detail when it names no instant."""
    if value is None:
        return None
    try:
        return instant(value)
    except ValueError as error:
        raise Invalid(details=[field_error(f"query/{name}", str(error))]) from None


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        time, row_id = json.loads(raw)
        return instant(time), uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("The cursor is not one this service issued.",
                         details=[field_error("query/cursor", "unreadable cursor")]) from None


def in_range(query: sa.Select, time_col: sa.Column, start_time: str | None, end_time: str | None) -> sa.Select:
    """[start_time, end_time): the RFC 3339 strings Connexion validated, compared as instants."""
    for name, value, compare in (("start_time", start_time, time_col.__ge__), ("end_time", end_time, time_col.__lt__)):
        if (moment := query_time(name, value)) is not None:
            query = query.where(compare(moment))
    return query


def page(conn: sa.Connection, query: sa.Select, time_col: sa.Column, id_col: sa.Column,
         limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """Runs `query` for one page; returns its rows and the cursor of the next page (None on the last)."""
    if cursor:
        time, row_id = decode_cursor(cursor)
        query = query.where(sa.tuple_(time_col, id_col) < sa.tuple_(sa.literal(time), sa.literal(row_id)))
    rows = conn.execute(query.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)).mappings().all()
    if len(rows) <= limit:
        return [dict(r) for r in rows], None
    last = rows[limit - 1]
    return [dict(r) for r in rows[:limit]], encode_cursor(last[time_col.name], last[id_col.name])
