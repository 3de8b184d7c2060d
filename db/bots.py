"""The bots' last-seen status: one row per bot, brought up to date by its heartbeats (not one row per beat)."""

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.access import Caller, readable_by
from db.commands import BotSeen
from db.schema import bot_status


def seen(conn: sa.Connection, user_id: uuid.UUID, beat: BotSeen, event_id: str | None) -> None:
    values = {"user_id": user_id, "bot_id": beat.bot_id, "exchange_id": beat.exchange_id,
              "status": beat.status.value, "version": beat.version, "last_seen_at": beat.seen_at,
              "last_event_id": event_id, "info": beat.info}
    statement = insert(bot_status).values(**values)
    # An older beat delivered late must not overwrite a newer one.
    conn.execute(statement.on_conflict_do_update(
        index_elements=[bot_status.c.user_id, bot_status.c.bot_id],
        set_={k: statement.excluded[k] for k in values if k not in ("user_id", "bot_id")},
        where=bot_status.c.last_seen_at <= statement.excluded.last_seen_at))


def visible(conn: sa.Connection, caller: Caller) -> list[dict]:
    """The caller's bots (an admin's: every bot), most recently seen first."""
    c = bot_status.c
    return [dict(row) for row in conn.execute(
        sa.select(c.bot_id, c.user_id, c.exchange_id, c.status, c.version, c.last_seen_at)
        .where(readable_by(bot_status, caller)).order_by(c.last_seen_at.desc())).mappings()]
