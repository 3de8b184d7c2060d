"""One fetched batch of a partition's events, applied in one database transaction, in stream order.

Each message is applied, found duplicate (its id was processed before) or dead-lettered (it can never take
effect); the caller acknowledges them all after the commit. A transient failure rolls the whole batch back and
raises: the caller retries the same batch with backoff, so a user's later events never overtake an earlier one.
"""

import json
import logging
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from consumers.contract import Channel
from db import engine, events, ledger
from tiris.errors import ApiError

log = logging.getLogger("tiris.consumer")
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Incoming:
    subject: str
    data: bytes
    msg_id: str | None
    stream_seq: int | None
    delivered: int
    pending: int


@dataclass
class _Poison(Exception):
    index: int
    reason: str


def backoff(attempt: int) -> float:
    """Seconds before the next attempt: 0.5, 1, 2, 4 ... capped at half a minute."""
    return min(0.5 * 2 ** max(attempt - 1, 0), 30.0)


def parse(message: Incoming, channels: dict[str, Channel]) -> tuple[dict | None, str | None]:
    """The event as JSON, or why it can never be applied."""
    prefix, _, user_token = message.subject.rpartition(".")
    channel = channels.get(prefix)
    if channel is None:
        return None, f"no channel in asyncapi.yaml for subject {message.subject}"
    try:
        payload = json.loads(message.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"malformed JSON: {error}"
    errors = channel.errors(payload)
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in errors[:10])
        return None, f"invalid {channel.model.__name__}: {problems}"
    if payload["event_type"] != channel.event_type:
        return None, f"event_type {payload['event_type']} does not belong on {prefix}"
    if payload["user_id"] != user_token:
        return None, "the subject's user id and the payload's user_id differ"
    if message.msg_id and message.msg_id != payload["event_id"]:
        return None, "Nats-Msg-Id and event_id differ"
    return payload, None


def process(batch: list[Incoming], channels: dict[str, Channel], consumer: str, attempt: int = 1) -> Counter:
    """Applies the batch and commits; returns its counters; raises on a transient failure (nothing committed)."""
    parsed = [parse(m, channels) for m in batch]
    poison = {i: reason for i, (_, reason) in enumerate(parsed) if reason}
    for _ in range(len(batch) + 1):  # each round either commits or finds one more poison message
        try:
            # The last attempt goes one event at a time, so a failure that is not a rule's names its event.
            commit = _commit_in_sets if attempt < MAX_ATTEMPTS else _commit
            return commit(batch, parsed, poison, consumer, attempt)
        except _Poison as found:
            poison[found.index] = found.reason
    raise RuntimeError("unreachable: every message was found poisonous")


def record_failure(consumer: str) -> None:
    """Counts a failed attempt, if the database takes it (it may be the thing that failed)."""
    try:
        with engine.transaction() as conn:
            events.count(conn, consumer, failed=1)
    except Exception:  # noqa: BLE001 - best effort by design
        log.debug("could not count a failed attempt", exc_info=True)


def _commit(batch, parsed, poison: dict[int, str], consumer: str, attempt: int) -> Counter:
    stats: Counter = Counter()
    with engine.transaction() as conn:
        for i, message in enumerate(batch):
            event = parsed[i][0]
            if i in poison:
                kept = events.dead_letter(conn, event_id=(event or {}).get("event_id") or message.msg_id,
                                          subject=message.subject, stream_seq=message.stream_seq,
                                          payload=message.data.decode("utf-8", "replace"), reason=poison[i],
                                          attempts=max(attempt, message.delivered))
                stats["dead_lettered" if kept else "duplicates"] += 1
                continue
            try:
                if not events.claim(conn, event, message.subject, message.stream_seq):
                    stats["duplicates"] += 1
                    continue
                stats.update(events.apply(conn, event))
            except ApiError as refused:
                if refused.status >= 500:
                    raise  # the database is down: transient
                raise _Poison(i, f"{refused.code}: {refused.message}") from None  # a rule refuses it for good
            except Exception as error:
                if attempt < MAX_ATTEMPTS:
                    raise  # transient until proven otherwise: the batch is retried
                log.error("event %s failed on its last attempt", event["event_id"], exc_info=error)
                raise _Poison(i, f"failed after {attempt} attempts: {type(error).__name__}") from None
            stats["processed"] += 1
        events.count(conn, consumer, **stats, pending=batch[-1].pending, last_stream_seq=batch[-1].stream_seq,
                     last_processed_at=sa.func.now())
    return stats


def _commit_in_sets(batch, parsed, poison: dict[int, str], consumer: str, attempt: int) -> Counter:
    """Like _commit, with the claims in one statement and each run of fills booked as one set.

    Fills are gathered in stream order and booked together before any event that changes balances otherwise, so
    every event still sees the balances its predecessors left. A refused fill is poison like in _commit.
    """
    stats: Counter = Counter()
    with engine.transaction() as conn:
        for i in sorted(poison):
            message, event = batch[i], parsed[i][0]
            kept = events.dead_letter(conn, event_id=(event or {}).get("event_id") or message.msg_id,
                                      subject=message.subject, stream_seq=message.stream_seq,
                                      payload=message.data.decode("utf-8", "replace"), reason=poison[i],
                                      attempts=max(attempt, message.delivered))
            stats["dead_lettered" if kept else "duplicates"] += 1
        wanted = [i for i in range(len(batch)) if i not in poison]
        new = events.claim_many(conn, [(parsed[i][0], batch[i].subject, batch[i].stream_seq) for i in wanted])
        fills: list[int] = []

        def book_fills() -> None:
            try:
                events.apply_fills(conn, [parsed[i][0] for i in fills])
            except ledger.Refused as refused:
                raise _Poison(fills[refused.index], f"{refused.error.code}: {refused.error.message}") from None
            stats["processed"] += len(fills)
            fills.clear()

        for i in wanted:
            event = parsed[i][0]
            if event["event_id"] not in new:
                stats["duplicates"] += 1
                continue
            new.discard(event["event_id"])  # a second copy in the same batch is a duplicate
            if event["event_type"] == "orders.filled":
                fills.append(i)
                continue
            if event["event_type"] in events.BALANCE_EVENTS and fills:
                book_fills()
            try:
                stats.update(events.apply(conn, event))
            except ApiError as refused:
                if refused.status >= 500:
                    raise
                raise _Poison(i, f"{refused.code}: {refused.message}") from None
            stats["processed"] += 1
        if fills:
            book_fills()
        events.count(conn, consumer, **stats, pending=batch[-1].pending, last_stream_seq=batch[-1].stream_seq,
                     last_processed_at=sa.func.now())
    return stats
