"""The one event applier. The batch loop, the isolation of a failing batch, the re-drive of a dead letter and a
replay of the stream all hand their parsed messages to `handle`, so "handled" means one thing everywhere.

Each message is handled exactly once, in the caller's database transaction: applied (its event id claimed and its
entry booked), refused (dead-lettered with the precise reason, and its id claimed as refused, so no replay applies
it), or recognised as a duplicate of an event handled before (nothing changes).
"""

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from consumers.entries import entry_for
from consumers.parse import Parsed
from db import booking, dead_letters, feed, handled
from generated.models import DeadLetter


@dataclass(frozen=True)
class Handled:
    parsed: Parsed
    outcome: Literal["applied", "refused", "duplicate"]
    reason: str | None = None
    drifted: bool = False  # a balance.updated whose previous balance differed from ours
    new_dead_letter: bool = False  # refused, and its dead letter is new (not the same message kept before)


def handle(conn: sa.Connection, messages: list[Parsed], attempts: int, *, redrive: bool = False) -> list[Handled]:
    """Handles the messages in stream order; `attempts` is recorded on their dead letters. With `redrive`, an event
    refused before is tried again."""
    results: dict[int, Handled] = {}
    valid = [(i, parsed) for i, parsed in enumerate(messages) if parsed.event is not None]
    for i, parsed in enumerate(messages):
        if parsed.event is None:
            results[i] = refuse(conn, parsed, parsed.reason, attempts, claimed=False)
    claimed = handled.claim(conn, [_claim(parsed) for _, parsed in valid], retry_refused=redrive)
    todo = []
    for i, parsed in valid:
        if parsed.event.event_id in claimed:
            claimed.discard(parsed.event.event_id)  # a second copy in the same batch is a duplicate
            todo.append((i, parsed))
        else:
            results[i] = Handled(parsed, "duplicate")
    outcomes = booking.book(conn, [entry_for(parsed.event) for _, parsed in todo])
    refused = []
    for (i, parsed), outcome in zip(todo, outcomes):
        if isinstance(outcome, booking.Rejected):
            results[i] = refuse(conn, parsed, f"{outcome.error.code}: {outcome.error.message}", attempts)
            refused.append(parsed.event.event_id)
        else:
            results[i] = Handled(parsed, "applied", drifted=outcome.drift != 0)
    handled.mark(conn, refused, "refused")
    return [results[i] for i in range(len(messages))]


def refuse(conn: sa.Connection, parsed: Parsed, reason: str, attempts: int, *, claimed: bool = True) -> Handled:
    """Dead-letters the message. A valid event not `claimed` yet is claimed now, as refused, so that no replay
    applies it. The same message (sequence and bytes) is kept once, however often it is refused."""
    message = parsed.message
    if not claimed and parsed.event is not None:
        handled.claim(conn, [_claim(parsed)], "refused")
    kept = dead_letters.keep(conn, event_id=parsed.event_id, msg_id=message.msg_id, subject=message.subject,
                             stream_seq=message.stream_seq, payload=parsed.payload, reason=reason,
                             attempts=max(attempts, message.delivered))
    if kept is not None and parsed.event is not None:  # the user's own dead letter reaches their live feed
        feed.write(conn, [(parsed.event.user_id, "dead_letter.created", feed.resource(DeadLetter, kept))])
    return Handled(parsed, "refused", reason, new_dead_letter=kept is not None)


def _claim(parsed: Parsed) -> handled.Claim:
    event = parsed.event
    return handled.Claim(event.event_id, event.event_type.value, event.user_id, parsed.message.subject,
                         parsed.message.stream_seq)
