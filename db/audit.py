"""The security audit trail: who logged in or failed to, token use, role and status changes, exchange key changes.

Rows are written in the same transaction as the change they describe, so the trail never claims a change that was
rolled back; failures (a refused login) are written in a transaction of their own, since the request's rolls back.
"""

import uuid

import sqlalchemy as sa

from db import pagination
from db.schema import audit_events


def record(conn: sa.Connection, type: str, *, user_id: uuid.UUID | str | None = None,
           actor_id: uuid.UUID | str | None = None, ip: str | None = None, trace_id: str | None = None,
           info: dict | None = None) -> None:
    conn.execute(sa.insert(audit_events).values(type=type, user_id=user_id, actor_id=actor_id, ip=ip,
                                                trace_id=trace_id, info=info or {}))


def list_page(conn: sa.Connection, *, limit: int, cursor: str | None, user_id=None, type=None, start_time=None,
              end_time=None) -> tuple[list[dict], str | None]:
    c = audit_events.c
    query = sa.select(audit_events)
    for column, value in ((c.user_id, user_id), (c.type, type)):
        if value is not None:
            query = query.where(column == value)
    query = pagination.in_range(query, c.timestamp, start_time, end_time)
    return pagination.page(conn, query, c.timestamp, c.id, limit, cursor)
