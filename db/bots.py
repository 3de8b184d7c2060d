"""The bots' last-seen status: one row per bot, brought up to date by its heartbeats (not one row per beat)."""

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.access import Caller, readable_by
from db.commands import BotSeen
from db.schema import bot_status

# A beat reaches the live feed when the bot's status changes, else at most this often per bot.
ANNOUNCE_EVERY = dt.timedelta(seconds=60)


def seen(conn: sa.Connection, user_id: uuid.UUID, beat: BotSeen, event_id: str | None) -> dict | None:
    """Records the beat; returns the bot's status (as the API shows it) when the live feed should hear of it."""
    c = bot_status.c
    before = conn.execute(sa.select(c.status, c.last_seen_at, c.announced_at).where(
        c.user_id == user_id, c.bot_id == beat.bot_id).with_for_update()).first()
    if before is not None and before.last_seen_at > beat.seen_at:
        return None  # an older beat delivered late must not overwrite a newer one
    announce = (before is None or before.status != beat.status.value or before.announced_at is None
                or beat.seen_at - before.announced_at >= ANNOUNCE_EVERY)
    values = {"user_id": user_id, "bot_id": beat.bot_id, "exchange_id": beat.exchange_id,
              "status": beat.status.value, "version": beat.version, "last_seen_at": beat.seen_at,
              "last_event_id": event_id, "info": beat.info,
              "announced_at": beat.seen_at if announce else before.announced_at}
    statement = insert(bot_status).values(**values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[c.user_id, c.bot_id],
        set_={k: statement.excluded[k] for k in values if k not in ("user_id", "bot_id")},
        where=c.last_seen_at <= statement.excluded.last_seen_at))
    return values if announce else None


def visible(conn: sa.Connection, caller: Caller) -> list[dict]:
    """The caller's bots (an admin's: every bot), most recently seen first."""
    c = bot_status.c
    return [dict(row) for row in conn.execute(
        sa.select(c.bot_id, c.user_id, c.exchange_id, c.status, c.version, c.last_seen_at)
        .where(readable_by(bot_status, caller)).order_by(c.last_seen_at.desc())).mappings()]
