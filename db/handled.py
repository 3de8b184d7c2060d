"""The one record of which events were handled, and how: applied or refused.

An event's id is claimed in the same database transaction as its effects (or its dead letter), so an event is
handled exactly once: a redelivery or a replay of a handled event, refused ones included, finds its claim and
changes nothing. Only an explicit re-drive of a dead letter (consumers/admin.py) turns a refusal into an effect.
"""

import uuid
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from db import bulk
from db.schema import processed_events

Outcome = Literal["applied", "refused"]


@dataclass(frozen=True)
class Claim:
    event_id: str
    event_type: str
    user_id: uuid.UUID
    subject: str
    stream_seq: int | None


def claim(conn: sa.Connection, claims: list[Claim], outcome: Outcome = "applied", *,
          retry_refused: bool = False) -> set[str]:
    """Claims these events, in one statement; returns the ids claimed. The others were handled before (or appear
    twice in `claims`), except that with `retry_refused` (a re-drive) a refused event is claimed again."""
    on_conflict = ("ON CONFLICT (event_id) DO UPDATE SET outcome = 'applied' WHERE processed_events.outcome = 'refused'"
                   if retry_refused else "ON CONFLICT DO NOTHING")
    result = bulk.insert(conn, processed_events, [
        {"event_id": c.event_id, "event_type": c.event_type, "user_id": c.user_id, "subject": c.subject,
         "stream_seq": c.stream_seq, "outcome": outcome} for c in claims], suffix=on_conflict + " RETURNING event_id")
    return set(result.scalars()) if result is not None else set()


_set_outcome = sa.text("UPDATE processed_events SET outcome = :outcome WHERE event_id = ANY(:ids)").bindparams(
    sa.bindparam("ids", type_=bulk.Array(sa.Text())))


def mark(conn: sa.Connection, event_ids: list[str], outcome: Outcome) -> None:
    if event_ids:
        conn.execute(_set_outcome, {"ids": event_ids, "outcome": outcome})
