"""Writes sent in a pipeline (db.engine.pipelined: one after another, without waiting for each result), and reads
sent together (db.engine.read_at_once), take effect in order, and a failure among them comes out as any statement's
does: SQLAlchemy's error, classified the same way (a data error is not retried, a time-out is), with nothing of its
transaction kept."""

import contextlib

import pytest
import sqlalchemy as sa

from db import engine


def _table() -> None:
    with engine.transaction() as conn:
        conn.execute(sa.text("CREATE TABLE piped (k int PRIMARY KEY, v text NOT NULL)"))
        conn.execute(sa.text("INSERT INTO piped VALUES (1, 'a')"))


def _rows() -> list[tuple]:
    with engine.reading() as conn:
        return [tuple(row) for row in conn.execute(sa.text("SELECT k, v FROM piped ORDER BY k"))]


def _insert(conn: sa.Connection, k: int) -> None:
    conn.execute(sa.text("INSERT INTO piped VALUES (:k, 'new')"), {"k": k})


@contextlib.contextmanager
def _held(database_url: str, locking: sa.TextClause, values: dict | None = None):
    """Another connection holds what `locking` locks while the block runs."""
    blocker = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with blocker.connect() as holding:
            holding.execute(locking, values or {})
            try:
                yield
            finally:
                holding.rollback()
    finally:
        blocker.dispose()


def test_pipelined_writes_take_effect_in_the_order_they_were_sent(settings):
    _table()
    with engine.transaction() as conn, engine.pipelined(conn):
        _insert(conn, 2)
        conn.execute(sa.text("UPDATE piped SET v = v || '+updated' WHERE k = 2"))
        conn.execute(sa.text("DELETE FROM piped WHERE k = 1"))
        _insert(conn, 1)
    assert _rows() == [(1, "new"), (2, "new+updated")]


# The failing statement last: its error is seen only when the pipeline ends; in the middle: while a later one is sent.
@pytest.mark.parametrize("failing_at", [0, 1, 2])
def test_a_data_error_in_a_pipeline_is_sqlalchemys_not_retried_and_rolls_the_whole_transaction_back(settings,
                                                                                                   failing_at):
    _table()
    with pytest.raises(sa.exc.IntegrityError) as raised:
        with engine.transaction() as conn:
            _insert(conn, 10)  # before the pipeline, in the same transaction
            with engine.pipelined(conn):
                for n, k in enumerate((20, 21, 22)):
                    _insert(conn, 1 if n == failing_at else k)
    assert "piped_pkey" in str(raised.value.orig)
    assert not engine.transient(raised.value)
    assert _rows() == [(1, "a")]


def test_a_time_out_in_a_pipeline_is_transient_and_nothing_of_the_transaction_stays(settings, database_url):
    _table()
    with _held(database_url, sa.text("LOCK TABLE piped IN ACCESS EXCLUSIVE MODE")):
        with pytest.raises(sa.exc.DBAPIError) as raised, engine.transaction() as conn:
            conn.execute(sa.text("SET LOCAL statement_timeout = '200ms'"))
            with engine.pipelined(conn):
                _insert(conn, 2)
    assert raised.value.orig.sqlstate == "57014"  # cancelled by the statement time-out
    assert engine.transient(raised.value)
    assert _rows() == [(1, "a")]


# --- reads sent together (db.engine.read_at_once)

_SET = sa.text("SELECT set_config('tiris.step', :value, true) AS step")
_GET = sa.text("SELECT current_setting('tiris.step') AS step")
_LOCK_ROW = sa.text("SELECT k, v FROM piped WHERE k = :k FOR UPDATE")


def test_reads_sent_together_run_in_the_order_listed_and_each_becomes_its_own_result(settings):
    _table()
    with engine.transaction() as conn:
        results = engine.read_at_once(conn, [
            engine.Read(_SET, {"value": "first"}, lambda rows: [row.step for row in rows]),
            engine.nothing({}),  # asks nothing
            engine.Read(_GET, {}, lambda rows: rows[0].step),
            engine.Read(_SET, {"value": "second"}, len),
            engine.Read(_LOCK_ROW, {"k": 1}, lambda rows: [tuple(row) for row in rows])])
        assert results == [["first"], {}, "first", 1, [(1, "a")]]
        assert conn.execute(_GET).scalar() == "second"  # the same transaction, after them


def test_a_failing_read_among_reads_sent_together_is_sqlalchemys_and_its_transaction_rolls_back(settings):
    _table()
    with pytest.raises(sa.exc.DataError) as raised:
        with engine.transaction() as conn:
            _insert(conn, 2)
            engine.read_at_once(conn, [engine.Read(_LOCK_ROW, {"k": 1}, list),
                                      engine.Read(sa.text("SELECT 1 / 0"), {}, list),
                                      engine.Read(_LOCK_ROW, {"k": 2}, list)])
    assert raised.value.orig.sqlstate == "22012"
    assert not engine.transient(raised.value)
    assert _rows() == [(1, "a")]


def test_a_lock_wait_time_out_among_reads_sent_together_is_transient(settings, database_url):
    _table()
    with _held(database_url, _LOCK_ROW, {"k": 1}):
        with pytest.raises(sa.exc.DBAPIError) as raised, engine.transaction() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            engine.read_at_once(conn, [engine.Read(_LOCK_ROW, {"k": 1}, list)])
    assert raised.value.orig.sqlstate == "55P03"
    assert engine.transient(raised.value)
