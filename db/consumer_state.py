"""Each partition consumer's counters and sign of life, written in the transactions of its batches, so the
counters agree with the effects."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.schema import consumer_state

COUNTERS = ("processed", "duplicates", "failed", "dead_lettered", "balance_drifts")


def add(conn: sa.Connection, consumer: str, **values) -> None:
    """Adds the counters among `values` to the consumer's row (created on first use) and sets the other columns."""
    statement = insert(consumer_state).values(consumer=consumer, **values)
    set_ = {key: consumer_state.c[key] + statement.excluded[key] if key in COUNTERS else statement.excluded[key]
            for key in values}
    conn.execute(statement.on_conflict_do_update(index_elements=[consumer_state.c.consumer], set_=set_))


def alive(conn: sa.Connection, consumers: list[str]) -> None:
    """Marks these consumers alive, so readiness can tell an idle consumer from a dead one."""
    for name in consumers:
        add(conn, name, seen_at=sa.func.now())


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
