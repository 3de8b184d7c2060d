"""Writes sent in a pipeline (db.engine.pipelined: one after another, without waiting for each result) take effect
in order, and a failure among them comes out as any statement's does: SQLAlchemy's error, classified the same way
(a data error is not retried, a time-out is), with nothing of its transaction kept."""

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
    blocker = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with blocker.connect() as holding:
        holding.execute(sa.text("LOCK TABLE piped IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(sa.exc.DBAPIError) as raised:
            with engine.transaction() as conn:
                conn.execute(sa.text("SET LOCAL statement_timeout = '200ms'"))
                with engine.pipelined(conn):
                    _insert(conn, 2)
        holding.rollback()
    blocker.dispose()
    assert raised.value.orig.sqlstate == "57014"  # cancelled by the statement time-out
    assert engine.transient(raised.value)
    assert _rows() == [(1, "a")]
