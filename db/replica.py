"""Reads a streaming replica may serve (lists, histories, balances at an instant, analytics), and when it may not.

With DATABASE_REPLICA_URL set, such a read goes to the replica only when the replica, asked on the connection that
then runs the read:
- has replayed the primary's write-ahead log past the caller's latest REST write (`write_positions`, recorded
  right after that write committed, before its answer left): the caller reads its own writes;
- and has replayed everything the primary had written when the read began, or else its last replayed transaction
  committed at most REPLICA_MAX_LAG_SECONDS ago: nobody reads older data than that.
Otherwise, and whenever the replica fails in any way (refused, dropped, timed out, or a statement it cannot run),
the read runs on the primary; after a lost connection the replica is skipped for RESTING_SECONDS. Without a
replica every read runs on the primary, as it always did.
"""

import logging
import time
import uuid
from typing import Callable, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

from db import engine

log = logging.getLogger("tiris.replica")

T = TypeVar("T")
CONNECT_TIMEOUT = 3  # seconds: a replica that does not answer must not hold a read up for long
RESTING_SECONDS = 5  # after a lost connection, reads skip the replica this long

_replica: sa.Engine | None = None
_max_lag: float = 5
_resting_until = 0.0


def _unobserved(server: str, reason: str) -> None:
    pass


# Told (server, reason) of every read this module routes; the HTTP door counts them (tiris.metrics).
_observer: Callable[[str, str], None] = _unobserved

# Positions are bytes of WAL since 0/0, so that they compare as integers on both servers.
_PRIMARY = sa.text("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint AS position, "
                   "(SELECT lsn FROM write_positions WHERE user_id = :user_id) AS written")
_REPLICA = sa.text("SELECT pg_is_in_recovery() AS standby, (pg_last_wal_replay_lsn() - '0/0')::bigint AS replayed, "
                   "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float AS lag")
# The insert position read after the write's commit lies at or beyond that commit's record. GREATEST: two writes
# of one user may record out of order.
_WROTE = sa.text("INSERT INTO write_positions AS w (user_id, lsn) "
                 "VALUES (:user_id, (pg_current_wal_insert_lsn() - '0/0')::bigint) "
                 "ON CONFLICT (user_id) DO UPDATE SET lsn = GREATEST(w.lsn, EXCLUDED.lsn), written_at = now()")


def configure(settings, observer: Callable[[str, str], None] | None = None) -> sa.Engine | None:
    """The replica of `settings.database_replica_url`, or none; `observer` hears where each read went and why."""
    global _replica, _max_lag, _resting_until, _observer
    close()
    if settings.database_replica_url:
        _replica = engine.create(settings.database_replica_url, settings, connect_timeout=CONNECT_TIMEOUT)
    _max_lag, _resting_until = settings.replica_max_lag_seconds, 0.0
    _observer = observer or _unobserved
    return _replica


def close() -> None:
    global _replica
    if _replica is not None:
        _replica.dispose()
    _replica = None


def enabled() -> bool:
    return _replica is not None


def wrote(user_id: uuid.UUID | str) -> None:
    """Records that `user_id`'s write has committed: their reads stay on the primary until the replica replays it.
    Call it after the commit and before the answer leaves. A no-op without a replica."""
    if _replica is None:
        return
    with engine.reading() as conn:  # one statement, in autocommit: on an unlogged table it waits for no flush
        conn.execute(_WROTE, {"user_id": str(user_id)})


def read(user_id: uuid.UUID, work: Callable[[sa.Connection], T]) -> T:
    """`work(conn)` for `user_id` on the replica when it may serve them (see the module), else on the primary.
    `work` only reads: it may run twice (on the replica, then on the primary when the replica failed)."""
    if _replica is None:
        with engine.reading() as conn:
            return work(conn)
    if time.monotonic() < _resting_until:
        return _on_primary(work, "replica_down")
    with engine.reading() as conn:
        position, written = conn.execute(_PRIMARY, {"user_id": str(user_id)}).one()
    try:
        with _replica.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            reason = _refusal(conn.execute(_REPLICA).one(), position, written)
            if reason is None:
                result = work(conn)
                _observer("replica", "fresh")
                return result
    except exc.SQLAlchemyError as error:
        _failed(error)
        reason = "replica_failed"
    return _on_primary(work, reason)


def status() -> str | None:
    """For readiness: `ok`, `lagging: N s` (reads go to the primary), `not a standby`, `unreachable`, or `unknown`
    (the primary could not be asked); None without a replica."""
    if _replica is None:
        return None
    try:
        with engine.reading() as conn:
            position = conn.execute(_PRIMARY, {"user_id": None}).one().position
    except Exception:  # the primary's own check reports it
        return "unknown"
    try:
        with _replica.connect() as conn:
            state = conn.execution_options(isolation_level="AUTOCOMMIT").execute(_REPLICA).one()
    except exc.SQLAlchemyError:
        return "unreachable"
    reason = _refusal(state, position, None)
    if reason == "not_standby":
        return "not a standby"
    if reason == "lag":
        return "lagging: unknown" if state.lag is None else f"lagging: {state.lag:.0f} s"
    return "ok"


def _refusal(state, position: int, written: int | None) -> str | None:
    """Why the replica in `state` may not serve a read that began at the primary's `position` for a caller whose
    latest write is at `written`; None when it may."""
    if not state.standby:
        return "not_standby"  # promoted, or not a replica at all: its data may have parted from the primary's
    if state.replayed is None:
        return "lag"
    if written is not None and state.replayed < written:
        return "own_write"
    if state.replayed >= position:
        return None  # it has everything the primary had when the read began
    # Everything committed before its last replayed transaction is there: its data is at most `lag` old.
    if state.lag is None or state.lag > _max_lag:
        return "lag"
    return None


def _on_primary(work: Callable[[sa.Connection], T], reason: str) -> T:
    with engine.reading() as conn:
        result = work(conn)
    _observer("primary", reason)
    return result


def _failed(error: exc.SQLAlchemyError) -> None:
    global _resting_until
    lost = isinstance(error, (exc.OperationalError, exc.TimeoutError)) and engine.is_outage(error)
    if lost:
        _resting_until = time.monotonic() + RESTING_SECONDS
    log.warning("the replica failed a read (%s); read from the primary%s", str(error).splitlines()[0],
                f", and the replica skipped for {RESTING_SECONDS} s" if lost else "")
