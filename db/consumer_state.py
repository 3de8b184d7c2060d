"""Each partition consumer's counters and sign of life, written in the transactions of its batches, so the
counters agree with the effects."""

import functools

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.schema import consumer_state

COUNTERS = ("processed", "duplicates", "failed", "dead_lettered", "balance_drifts")


def add(conn: sa.Connection, consumer: str, *, now: tuple[str, ...] = (), **values) -> None:
    """Adds the counters among `values` to the consumer's row (created on first use), sets its other columns named
    in `values` to theirs and those named in `now` to the transaction's time."""
    conn.execute(_adding(tuple(values), now), {"consumer": consumer, **values})


@functools.cache
def _adding(names: tuple[str, ...], now: tuple[str, ...]) -> sa.Insert:
    """The statement for one set of columns, built once: every batch records itself with the same one (building it
    anew was an eighth of the CPU of a one-event batch)."""
    statement = insert(consumer_state).values(consumer=sa.bindparam("consumer"),
                                              **{name: sa.bindparam(name) for name in names},
                                              **{name: sa.func.now() for name in now})
    set_ = {name: consumer_state.c[name] + statement.excluded[name] if name in COUNTERS else statement.excluded[name]
            for name in (*names, *now)}
    return statement.on_conflict_do_update(index_elements=[consumer_state.c.consumer], set_=set_)


def alive(conn: sa.Connection, consumers: list[str]) -> None:
    """Marks these consumers alive, so readiness can tell an idle consumer from a dead one."""
    for name in consumers:
        add(conn, name, now=("seen_at",))


def rows(conn: sa.Connection) -> dict[str, dict]:
    c = consumer_state.c
    return {row["name"]: dict(row) for row in conn.execute(sa.select(
        c.consumer.label("name"), c.processed, c.duplicates, c.failed, c.dead_lettered, c.balance_drifts,
        c.last_stream_seq, c.last_processed_at, c.seen_at)).mappings()}


def seen_within(conn: sa.Connection, seconds: int) -> bool | None:
    """True if a consumer was alive lately, False if only long ago, None if none ever ran."""
    latest = sa.func.max(consumer_state.c.seen_at)
    row = conn.execute(sa.select(
        latest.label("latest"),
        (latest > sa.func.now() - sa.literal_column("interval '1 second'") * seconds).label("fresh"))).one()
    return None if row.latest is None else row.fresh
