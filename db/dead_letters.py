"""Events that could not take effect, kept with the reason and the message as received, until an admin re-drives
them."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db import pagination
from db.errors import Conflict, NotFound
from db.schema import dead_letters


def keep(conn: sa.Connection, *, event_id: str | None, msg_id: str | None, subject: str, stream_seq: int | None,
         payload: str, reason: str, attempts: int) -> dict | None:
    """Keeps the message with its reason and returns its row; None if this very message (same sequence and bytes)
    is kept already.

    `event_id` is the payload's (None when it has none), `msg_id` the Nats-Msg-Id header: they may differ, which
    can be the reason it is here.
    """
    row = conn.execute(insert(dead_letters).values(
        event_id=event_id, msg_id=msg_id, subject=subject, stream_seq=stream_seq, payload=payload, reason=reason,
        attempts=attempts).on_conflict_do_nothing().returning(dead_letters)).mappings().first()
    return dict(row) if row is not None else None


def waiting(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(dead_letters)
                        .where(dead_letters.c.redriven_at.is_(None))).scalar()


def page(conn: sa.Connection, *, limit: int, cursor: str | None, redriven: bool | None):
    query = sa.select(dead_letters)
    if redriven is not None:
        query = query.where(dead_letters.c.redriven_at.isnot(None) if redriven else dead_letters.c.redriven_at.is_(None))
    return pagination.page(conn, query, dead_letters.c.created_at, dead_letters.c.id, limit, cursor)


def get(conn: sa.Connection, dead_letter_id: str, *, lock: bool = False) -> dict:
    query = sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise NotFound("Dead letter not found.")
    return dict(row)


def take_for_redrive(conn: sa.Connection, dead_letter_id: str) -> dict:
    """Locks a waiting dead letter for its re-drive; a second re-drive (even a concurrent one) is a conflict."""
    letter = get(conn, dead_letter_id, lock=True)
    if letter["redriven_at"] is not None:
        raise Conflict("This dead letter was re-driven already.", code="ALREADY_REDRIVEN")
    return letter


def mark_redriven(conn: sa.Connection, dead_letter_id) -> dict:
    return dict(conn.execute(sa.update(dead_letters).where(dead_letters.c.id == dead_letter_id)
                             .values(redriven_at=sa.func.now()).returning(dead_letters)).mappings().one())
