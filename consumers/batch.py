"""One fetched batch of a partition's events, handled in one database transaction, in stream order.

Each message is applied, refused (dead-lettered) or found a duplicate by consumers/applier.py; the caller
acknowledges them all after the commit. What happens when the transaction fails depends on why:
- a failure of the infrastructure (connection lost, time-out, serialization failure) rolls the batch back and
  raises: the caller retries the same batch with backoff, so a user's later events never overtake an earlier one;
  after MAX_ATTEMPTS the batch is handled one event at a time and an event that still fails is dead-lettered;
- any other failure (a value the database refuses, a bug) is no better on a retry: the batch is handled again at
  once, one event at a time in savepoints, and the event at fault is dead-lettered with the precise reason.
"""

import logging
from collections import Counter

import sqlalchemy as sa

from consumers import applier
from consumers.contract import Channel
from consumers.parse import Incoming, Parsed, parse
from db import consumer_state, engine

log = logging.getLogger("tiris.consumer")
MAX_ATTEMPTS = 5


def backoff(attempt: int) -> float:
    """Seconds before the next attempt: 0.5, 1, 2, 4 ... capped at half a minute."""
    return min(0.5 * 2 ** max(attempt - 1, 0), 30.0)


def process(batch: list[Incoming], channels: dict[str, Channel], consumer: str, attempt: int = 1) -> Counter:
    """Handles the batch and commits; returns its counters; raises on a transient failure (nothing committed)."""
    parsed = [parse(message, channels) for message in batch]
    if attempt < MAX_ATTEMPTS:
        try:
            with engine.transaction() as conn:
                return _record(conn, consumer, parsed, applier.handle(conn, parsed, attempt))
        except Exception as error:
            if engine.transient(error):
                raise
            log.warning("batch on %s failed (%s); handling its events one at a time", consumer, _why(error))
    return _one_at_a_time(parsed, consumer, attempt)


def _one_at_a_time(parsed: list[Parsed], consumer: str, attempt: int) -> Counter:
    """The same handling, each event in a savepoint, so the one that fails is named and the others take effect."""
    with engine.transaction() as conn:
        results = []
        for message in parsed:
            try:
                with conn.begin_nested():
                    results += applier.handle(conn, [message], attempt)
            except Exception as error:
                if engine.transient(error) and attempt < MAX_ATTEMPTS:
                    raise
                reason = f"failed after {attempt} attempts: {_why(error)}" if engine.transient(error) else _why(error)
                log.error("event at stream sequence %s dead-lettered: %s", message.message.stream_seq, reason,
                          exc_info=error)
                results.append(applier.refuse(conn, message, reason, attempt, claimed=False))
        return _record(conn, consumer, parsed, results)


def _why(error: BaseException) -> str:
    """The precise reason, in one line: the database's own message when it refused a value."""
    detail = getattr(error, "orig", None) or error
    return f"{type(detail).__name__}: {str(detail).strip().splitlines()[0] if str(detail).strip() else ''}".rstrip(": ")


def _record(conn: sa.Connection, consumer: str, parsed: list[Parsed], results: list[applier.Handled]) -> Counter:
    """Adds the batch's counters to the consumer's row, in the batch's transaction."""
    stats = Counter({"processed": sum(r.outcome == "applied" for r in results),
                     "duplicates": sum(r.outcome == "duplicate" or (r.outcome == "refused" and not r.new_dead_letter)
                                       for r in results),
                     "dead_lettered": sum(r.new_dead_letter for r in results),
                     "balance_drifts": sum(r.drifted for r in results)})
    consumer_state.add(conn, consumer, **stats, last_stream_seq=parsed[-1].message.stream_seq,
                       now=("last_processed_at",))
    return +stats


def record_failure(consumer: str) -> None:
    """Counts a failed attempt, if the database takes it (it may be the thing that failed)."""
    try:
        with engine.transaction() as conn:
            consumer_state.add(conn, consumer, failed=1)
    except Exception:  # noqa: BLE001 - best effort by design
        log.debug("could not count a failed attempt", exc_info=True)
