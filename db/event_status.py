"""Reads for GET /v1/events/status and the dead-letter list."""

import sqlalchemy as sa

from db import pagination
from db.access import Caller, readable_by
from db.schema import bot_status, consumer_state, dead_letters
from tiris.errors import NotFound


def status(conn: sa.Connection, caller: Caller) -> dict:
    consumers = conn.execute(sa.select(
        consumer_state.c.consumer.label("name"), consumer_state.c.pending, consumer_state.c.processed,
        consumer_state.c.duplicates, consumer_state.c.failed, consumer_state.c.dead_lettered,
        consumer_state.c.balance_drifts, consumer_state.c.last_stream_seq, consumer_state.c.last_processed_at,
        consumer_state.c.seen_at).order_by(consumer_state.c.consumer)).mappings().all()
    bots = conn.execute(sa.select(bot_status.c.bot_id, bot_status.c.user_id, bot_status.c.exchange_id,
                                  bot_status.c.status, bot_status.c.version, bot_status.c.last_seen_at)
                        .where(readable_by(bot_status, caller))
                        .order_by(bot_status.c.last_seen_at.desc())).mappings().all()
    waiting = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)
                           .where(dead_letters.c.redriven_at.is_(None))).scalar()
    return {"consumers": [dict(c) for c in consumers], "bots": [dict(b) for b in bots], "dead_letters": waiting}


def consumer_seen_within(conn: sa.Connection, seconds: int) -> bool | None:
    """True if a consumer was alive lately, False if only long ago, None if none ever ran."""
    latest = sa.func.max(consumer_state.c.seen_at)
    row = conn.execute(sa.select(
        latest.label("latest"),
        (latest > sa.func.now() - sa.literal_column("interval '1 second'") * seconds).label("fresh"))).one()
    return None if row.latest is None else row.fresh


def dead_letter_page(conn: sa.Connection, *, limit: int, cursor: str | None, redriven: bool | None):
    query = sa.select(dead_letters)
    if redriven is not None:
        query = query.where(dead_letters.c.redriven_at.isnot(None) if redriven else dead_letters.c.redriven_at.is_(None))
    return pagination.page(conn, query, dead_letters.c.created_at, dead_letters.c.id, limit, cursor)


def dead_letter(conn: sa.Connection, dead_letter_id: str, *, lock: bool = False) -> dict:
    query = sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise NotFound("Dead letter not found.")
    return dict(row)


def mark_redriven(conn: sa.Connection, dead_letter_id) -> dict:
    return dict(conn.execute(sa.update(dead_letters).where(dead_letters.c.id == dead_letter_id)
                             .values(redriven_at=sa.func.now()).returning(dead_letters)).mappings().one())
