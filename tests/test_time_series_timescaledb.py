"""The TimescaleDB path of migration 0004 and of the balance history, on TimescaleDB compiled to WASM (a PGlite
fork, tools/timescale/) served over TCP. Marker `timescaledb`; skipped, with the reason, when Node or the package
is missing (`make install` installs it).

What this does not prove: the server is PostgreSQL 17.5 in 32-bit WASM, not the production server; TimescaleDB is
an unreleased 2.23.0-dev build; no background scheduler runs, so policies are run by hand (CALL run_job) and their
timing is untested; it is one PostgreSQL session, so nothing about concurrency, and COPY FROM STDIN crashes it.
"""

import datetime as dt
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import balance_history, checkpoints, migrate
from db.access import Caller
from tests.conftest import free_port

pytestmark = pytest.mark.timescaledb

SERVER_DIR = Path(__file__).resolve().parent.parent / "tools" / "timescale"
EXPECTED_VERSION = "2.23.0-dev"  # the pinned build; a change of package must be noticed
ADMIN = Caller(uuid.uuid4(), "admin")
NOW = dt.datetime.now(dt.timezone.utc).replace(minute=30, second=0, microsecond=0)
MIDNIGHT = NOW.replace(hour=0, minute=0)


@pytest.fixture
def timescale_url(tmp_path):
    """A fresh TimescaleDB server for one test; its URL."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed, so the TimescaleDB (PGlite) server cannot run")
    if not (SERVER_DIR / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        pytest.skip("tools/timescale/node_modules is missing: run `make install` (npm ci in tools/timescale)")
    port = free_port()
    process = subprocess.Popen([node, "server.mjs", str(port)], cwd=SERVER_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == "READY", f"the TimescaleDB server did not start: {line}{process.stdout.read()}"
        yield f"postgresql+psycopg://postgres:x@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _engine(url: str) -> sa.Engine:
    # One connection at a time: the server multiplexes every client onto one session.
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"prepare_threshold": None})


def _upgrade(url: str, monkeypatch, **settings) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(f"TIMESCALEDB_{name.upper()}", value)
    migrate.upgrade(url)


def _scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _jobs(engine: sa.Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        return {(row.proc_name, row.hypertable_name): row.job_id for row in conn.execute(sa.text(
            "SELECT job_id, proc_name, hypertable_name FROM timescaledb_information.jobs WHERE job_id >= 1000"))}


def _account_with_ledger(conn: sa.Connection, moves: list[tuple[dt.datetime, str, str, str]]) -> uuid.UUID:
    """A user, exchange and sub-account whose transactions are `moves` (when, direction, reason, amount)."""
    user_id, exchange_id, account_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn.execute(sa.text("INSERT INTO users (id, username, email) VALUES (:id, :name, :name || '@example.com')"),
                 {"id": user_id, "name": user_id.hex[:12]})
    conn.execute(sa.text("INSERT INTO exchanges (id, user_id, name, type, api_key_ciphertext, api_secret_ciphertext,"
                         " key_id, api_key_hash, api_key_masked) VALUES (:id, :user, 'x', 'simulator', '\\x00',"
                         " '\\x00', 'k', '\\x00', 'x')"), {"id": exchange_id, "user": user_id})
    balance, rows = Decimal(0), []
    for when, direction, reason, amount in moves:
        balance += Decimal(amount) if direction == "credit" else -Decimal(amount)
        rows.append({"id": uuid.uuid4(), "ts": when, "user": user_id, "ex": exchange_id, "sa": account_id,
                     "dir": direction, "reason": reason, "amount": Decimal(amount), "closing": balance})
    conn.execute(sa.text("INSERT INTO sub_accounts (id, user_id, exchange_id, name, symbol, balance) "
                         "VALUES (:id, :user, :ex, 'USDT wallet', 'USDT', :balance)"),
                 {"id": account_id, "user": user_id, "ex": exchange_id, "balance": balance})
    conn.execute(sa.text(
        'INSERT INTO transactions (id, "timestamp", user_id, exchange_id, sub_account_id, direction, reason, amount, '
        "closing_balance) VALUES (:id, :ts, :user, :ex, :sa, :dir, :reason, :amount, :closing)"), rows)
    return account_id


def test_upgrade_makes_hypertables_with_policies_and_aggregates_and_downgrade_removes_them(timescale_url, monkeypatch):
    _upgrade(timescale_url, monkeypatch, chunk_interval="1 day", compress_after="10 days",
             trading_log_retention="90 days")
    engine = _engine(timescale_url)
    assert _scalar(engine, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") == EXPECTED_VERSION
    with engine.connect() as conn:
        dimensions = dict(conn.execute(sa.text(
            "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions")).all())
        segment_by = set(conn.execute(sa.text(
            "SELECT hypertable_name FROM timescaledb_information.compression_settings "
            "WHERE attname = 'sub_account_id' AND segmentby_column_index = 1")).scalars())
        aggregates = set(conn.execute(sa.text(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates "
            "WHERE NOT materialized_only")).scalars())
        policies = {(row.proc_name, row.hypertable_name, row.config.get("compress_after") or
                     row.config.get("drop_after")) for row in conn.execute(sa.text(
                         "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs "
                         "WHERE proc_name IN ('policy_compression', 'policy_retention')"))}
    assert dimensions["transactions"] == dimensions["trading_logs"] == dt.timedelta(days=1)
    assert segment_by == {"transactions", "trading_logs"}
    assert aggregates == {"sub_account_flows_hourly", "sub_account_flows_daily"}
    assert policies == {("policy_compression", "transactions", "10 days"),
                        ("policy_compression", "trading_logs", "10 days"),
                        ("policy_retention", "trading_logs", "90 days")}
    jobs = _jobs(engine)
    assert sum(proc == "policy_refresh_continuous_aggregate" for proc, _ in jobs) == 2
    assert not any(proc == "archive_ledger" for proc, _ in jobs)  # the ledger is kept whole unless asked

    migrate.downgrade(timescale_url, "0002")
    assert _jobs(engine) == {}
    assert _scalar(engine, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == 0
    assert _scalar(engine, "SELECT to_regclass('balance_checkpoints')") is None
    migrate.upgrade(timescale_url)
    assert len(_jobs(engine)) == 5


def test_aggregates_refreshed_and_in_real_time_agree_with_date_bin_and_count_for_stats(timescale_url, monkeypatch):
    _upgrade(timescale_url, monkeypatch)
    engine = _engine(timescale_url)
    day, noon = dt.timedelta(days=1), MIDNIGHT + dt.timedelta(hours=12)
    with engine.begin() as conn:
        account = _account_with_ledger(conn, [
            (noon - 5 * day, "credit", "opening_balance", "1000"), (noon - 3 * day, "debit", "long", "250.5"),
            (noon - 3 * day + dt.timedelta(hours=1), "credit", "short", "10.25"),
            (noon - day, "debit", "withdraw", "9")])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("CALL refresh_continuous_aggregate('sub_account_flows_daily', NULL, NULL)"))
    with engine.begin() as conn:  # after the refresh: only real-time aggregation can see this one
        conn.execute(sa.text(
            'INSERT INTO transactions (id, "timestamp", user_id, exchange_id, sub_account_id, direction, reason, '
            "amount, closing_balance) SELECT gen_random_uuid(), now(), user_id, exchange_id, id, 'credit', 'deposit',"
            " 1, balance + 1 FROM sub_accounts WHERE id = :id"), {"id": account})
        conn.execute(sa.text("UPDATE sub_accounts SET balance = balance + 1 WHERE id = :id"), {"id": account})
    with engine.connect() as conn:
        assert balance_history.uses_aggregates(conn)
        user_id = conn.execute(sa.text("SELECT user_id FROM sub_accounts WHERE id = :id"), {"id": account}).scalar()
        assert balance_history.transaction_count(conn, user_id) == 5  # what GET /v1/users/me/stats reports
        body = balance_history.history(conn, ADMIN, account, "1d", None, None)
        start, end = body["start_time"], body["end_time"]
        from_aggregate = balance_history.flows(conn, account, "1d", start, end)
        balance_history._has_aggregates[conn.engine.url.render_as_string(hide_password=True)] = False
        from_rows = balance_history.flows(conn, account, "1d", start, end)
    assert from_aggregate == from_rows
    points = [(p["net_flow"], p["trade_count"], p["closing_balance"]) for p in body["items"] if p["transaction_count"]]
    assert points == [(Decimal(1000), 0, Decimal(1000)),
                      (Decimal("-240.25"), 2, Decimal("759.75")), (Decimal(-9), 0, Decimal("750.75")),
                      (Decimal(1), 0, Decimal("751.75"))]
    assert body["items"][-1]["closing_balance"] == Decimal("751.75")


def test_archive_job_records_checkpoints_before_dropping_old_chunks(timescale_url, monkeypatch):
    _upgrade(timescale_url, monkeypatch, chunk_interval="1 day", compress_after="2 days",
             transaction_archive_after="30 days", trading_log_retention="30 days")
    engine = _engine(timescale_url)
    day = dt.timedelta(days=1)
    with engine.begin() as conn:
        account = _account_with_ledger(conn, [
            (NOW - 60 * day, "credit", "opening_balance", "100"), (NOW - 45 * day, "debit", "long", "30"),
            (NOW - 40 * day, "credit", "deposit", "5"), (NOW - 10 * day, "debit", "withdraw", "25"),
            (NOW - 1 * day, "credit", "short", "7.5")])
        conn.execute(sa.text("INSERT INTO trading_logs (\"timestamp\", user_id, exchange_id, type, source, message) "
                             "SELECT now() - make_interval(days => d), user_id, exchange_id, 'note', 'manual', 'x' "
                             "FROM sub_accounts, (VALUES (50), (1)) AS v(d) WHERE id = :id"), {"id": account})
    jobs = _jobs(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"CALL run_job({jobs[('policy_compression', 'transactions')]})"))
        assert conn.execute(sa.text(
            "SELECT count(*) FROM chunk_compression_stats('transactions') WHERE compression_status = 'Compressed'"
        )).scalar() == 4
        assert checkpoints.drifts(conn) == []  # compressed rows still count
        conn.execute(sa.text(f"CALL run_job({jobs[('archive_ledger', None)]})"))
        conn.execute(sa.text(f"CALL run_job({jobs[('policy_retention', 'trading_logs')]})"))
        remaining = conn.execute(sa.text('SELECT count(*) FROM transactions')).scalar()
        checkpoint = conn.execute(sa.text("SELECT balance, credits, debits, transaction_count "
                                          "FROM balance_checkpoints WHERE sub_account_id = :id"), {"id": account}).one()
        assert remaining == 2
        assert tuple(checkpoint) == (Decimal(75), Decimal(105), Decimal(30), 3)
        assert checkpoints.drifts(conn) == []  # balance = checkpoint + credits - debits since
        assert conn.execute(sa.text("SELECT count(*) FROM trading_logs")).scalar() == 1
        body = balance_history.history(conn, ADMIN, account, "1d", (NOW - 20 * day).isoformat(), None)
    assert body["opening_balance"] == Decimal(75) and body["items"][-1]["closing_balance"] == Decimal("57.5")


def test_timescaledb_off_keeps_the_plain_postgresql_path_where_the_extension_exists(timescale_url, monkeypatch):
    monkeypatch.setenv("TIMESCALEDB", "off")
    migrate.upgrade(timescale_url)
    engine = _engine(timescale_url)
    assert _scalar(engine, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    assert _scalar(engine, "SELECT to_regclass('sub_account_flows_daily')") is None
    with engine.connect() as conn:
        assert balance_history.uses_aggregates(conn) is False

