"""The process's connection pool, and the two ways to use it: a transaction or a read."""

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy import exc

from db.errors import Unavailable

_engine: sa.Engine | None = None


class PoolSettings(Protocol):
    """What the pool is built from; the service's settings (tiris.config.Settings) have these fields."""
    database_url: str
    db_pool_size: int
    db_max_overflow: int
    db_pool_timeout: float
    db_pool_recycle: int
    db_statement_timeout_ms: int


def configure(settings: PoolSettings, *, custom_plans: bool = False) -> sa.Engine:
    global _engine
    if _engine is not None:
        _engine.dispose()
    _engine = create(settings.database_url, settings, custom_plans=custom_plans)
    return _engine


def create(url: str, settings: PoolSettings, *, connect_timeout: int = 10, custom_plans: bool = False) -> sa.Engine:
    """A pool to the server at `url` (the primary, or a replica) with the service's pool settings.

    `custom_plans` (the event door's): every statement is planned for the values it runs with, never with a generic
    plan cached by the server. A batch's statements take arrays of 1 to CONSUMER_BATCH keys and join them to tables
    that may grow from empty to millions of rows; psycopg prepares a statement on its fifth run, and PostgreSQL then
    keeps the generic plan it chose at the size the tables had, until the table is analyzed or the connection
    recycled. On a new database (or one a replay fills) that plan was a hash join over the whole `orders` table: each
    batch read every order booked so far, 10 ms a batch at 40,000 orders. The statements are still prepared (parsed
    once); planning them costs the server about 0.5 ms a batch.
    """
    plans = " -c plan_cache_mode=force_custom_plan" if custom_plans else ""
    return sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        # No ping per checkout: it costs a round trip on every request. A connection the server dropped fails
        # once (503) and SQLAlchemy then discards the whole pool, so the next request reconnects.
        connect_args={
            "connect_timeout": connect_timeout,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC{plans}",
            "application_name": "tiris-backend",
        },
    )


def engine() -> sa.Engine:
    if _engine is None:
        raise RuntimeError("db.engine.configure() was not called")
    return _engine


def is_outage(error: exc.DBAPIError | exc.TimeoutError) -> bool:
    """A lost or refused connection (class 08, 57P) or an exhausted pool, as opposed to a bad statement."""
    if isinstance(error, exc.TimeoutError):
        return True
    state = getattr(error.orig, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


@contextlib.contextmanager
def _unavailable_when_down():
    try:
        yield
    except (exc.OperationalError, exc.TimeoutError) as error:
        if not is_outage(error):
            raise
        raise Unavailable() from error


@contextlib.contextmanager
def transaction():
    """One database transaction: committed when the block ends, rolled back when it raises."""
    with _unavailable_when_down(), engine().begin() as conn:
        yield conn


@contextlib.contextmanager
def reading():
    """A connection for reads in autocommit: no BEGIN/ROLLBACK round trips around a single SELECT."""
    with _unavailable_when_down(), engine().connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@dataclass(frozen=True)
class Read:
    """One statement of a group read at once: its values, and what its rows (named tuples) become. A Read
    without a statement asks nothing: its rows are none."""
    statement: sa.Executable | None
    values: dict
    into: Callable[[list], Any]


def nothing(empty) -> Read:
    return Read(None, {}, lambda rows: empty)


def read_at_once(conn: sa.Connection, reads: list[Read]) -> list:
    """Runs the statements in order in the connection's transaction, sent together (psycopg's pipeline): one
    round trip for the group instead of one each. They run on the server one after the other, in this order, so
    locks are taken in the order listed. Returns what each one's rows became. A failure comes out as SQLAlchemy's,
    as from `conn.execute`."""
    driver = conn.connection.driver_connection
    cursors = []
    try:
        with driver.pipeline():
            for read in reads:
                cursor = None
                if read.statement is not None:
                    compiled, conversions = _compiled(read.statement, conn.dialect)
                    params = compiled.construct_params(read.values)
                    params.update((name, convert(params[name])) for name, convert in conversions.items())
                    cursor = driver.cursor(row_factory=namedtuple_row)
                    cursor.execute(compiled.string, params)
                cursors.append(cursor)
        results = []
        for read, cursor in zip(reads, cursors):
            results.append(read.into(cursor.fetchall() if cursor else []))
            if cursor:
                cursor.close()
        return results
    except psycopg.Error as error:
        raise exc.DBAPIError.instance(None, None, error, psycopg.Error,
                                      connection_invalidated=driver.closed) from error


@functools.cache
def _compiled(statement: sa.Executable, dialect) -> tuple[sa.engine.Compiled, dict[str, Callable]]:
    """The statement compiled for the driver, and the binds that need converting (an array to its literal), once."""
    compiled = statement.compile(dialect=dialect)
    conversions = {name: bind.type.bind_processor(dialect) for bind, name in compiled.bind_names.items()}
    return compiled, {name: convert for name, convert in conversions.items() if convert is not None}


@contextlib.contextmanager
def pipelined(conn: sa.Connection):
    """The block's statements go out one after another without waiting for each one's result (psycopg's pipeline
    mode), so the server carries out one while Python builds the next. Only for writes whose results nobody reads:
    a statement's rows are not there inside the block. A statement that fails aborts the rest of the block, and its
    error comes out as SQLAlchemy's, as from any other statement (the caller's transaction then rolls back)."""
    driver = conn.connection.driver_connection
    try:
        with driver.pipeline():
            yield
    except psycopg.Error as error:  # reported when the block ends, outside SQLAlchemy's execute: wrapped as it would
        raise exc.DBAPIError.instance(None, None, error, psycopg.Error,
                                      connection_invalidated=driver.closed) from error


# SQLSTATE classes of failures the same work may survive later: a lost connection (08), a serialization failure or
# deadlock (40), resources (53), a cancel, time-out or shutdown (57), the server's I/O (58), a lock time-out (55P03).
_TRANSIENT_STATES = ("08", "40", "53", "57", "58", "55P03")


def transient(error: BaseException) -> bool:
    """Whether `error` is a failure of the infrastructure (retry later) rather than of the work itself (a data error
    or a bug, which no retry cures)."""
    if isinstance(error, (Unavailable, exc.TimeoutError, OSError)):
        return True
    if isinstance(error, exc.DBAPIError):
        state = getattr(error.orig, "sqlstate", None)
        return error.connection_invalidated or state is None or state.startswith(_TRANSIENT_STATES)
    return False
