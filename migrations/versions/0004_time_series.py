"""time series: balance checkpoints everywhere; hypertables, compression, retention and aggregates with TimescaleDB

Revision ID: 0004
Revises: 0003

The TimescaleDB path is taken when the server offers the extension (pg_available_extensions) and TIMESCALEDB is not
`off`. Its settings come from `alembic -x name=value` or the environment (the -x form wins):

| -x name                    | environment                             | default   |
|----------------------------|-----------------------------------------|-----------|
| timescaledb                | TIMESCALEDB (auto, off)                 | auto      |
| chunk_interval             | TIMESCALEDB_CHUNK_INTERVAL              | 7 days    |
| compress_after             | TIMESCALEDB_COMPRESS_AFTER              | 30 days   |
| trading_log_retention      | TIMESCALEDB_TRADING_LOG_RETENTION       | 365 days  |
| transaction_archive_after  | TIMESCALEDB_TRANSACTION_ARCHIVE_AFTER   | (none)    |

Transactions are never dropped by default: the ledger is kept whole. Only when transaction_archive_after is set is
an archive job registered, and it records balance checkpoints before it drops any chunk of transactions.
"""

import os

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

SETTINGS = {
    "timescaledb": ("TIMESCALEDB", "auto"),
    "chunk_interval": ("TIMESCALEDB_CHUNK_INTERVAL", "7 days"),
    "compress_after": ("TIMESCALEDB_COMPRESS_AFTER", "30 days"),
    "trading_log_retention": ("TIMESCALEDB_TRADING_LOG_RETENTION", "365 days"),
    "transaction_archive_after": ("TIMESCALEDB_TRANSACTION_ARCHIVE_AFTER", ""),
}

TRADE_REASONS = "('long', 'short', 'stop_loss', 'fill')"

# Checkpoints chain: each one adds what happened since the previous one, so they stay right after old rows are gone.
RECORD_CHECKPOINTS = """
CREATE FUNCTION record_balance_checkpoints(cutoff timestamptz) RETURNS integer LANGUAGE sql AS $$
WITH previous AS (
    SELECT DISTINCT ON (sub_account_id) sub_account_id, as_of, credits, debits, transaction_count
    FROM balance_checkpoints WHERE as_of <= cutoff ORDER BY sub_account_id, as_of DESC
), flows AS (
    SELECT t.sub_account_id,
           coalesce(sum(t.amount) FILTER (WHERE t.direction = 'credit'), 0) AS credits,
           coalesce(sum(t.amount) FILTER (WHERE t.direction = 'debit'), 0) AS debits,
           count(*) AS transaction_count
    FROM transactions t LEFT JOIN previous p ON p.sub_account_id = t.sub_account_id
    WHERE t."timestamp" < cutoff AND (p.as_of IS NULL OR t."timestamp" >= p.as_of)
    GROUP BY t.sub_account_id
), recorded AS (
    INSERT INTO balance_checkpoints (sub_account_id, as_of, balance, credits, debits, transaction_count)
    SELECT sub_account_id, cutoff,
           coalesce(p.credits, 0) + coalesce(f.credits, 0) - coalesce(p.debits, 0) - coalesce(f.debits, 0),
           coalesce(p.credits, 0) + coalesce(f.credits, 0), coalesce(p.debits, 0) + coalesce(f.debits, 0),
           coalesce(p.transaction_count, 0) + coalesce(f.transaction_count, 0)
    FROM flows f FULL JOIN previous p USING (sub_account_id)
    ON CONFLICT (sub_account_id, as_of) DO NOTHING
    RETURNING 1
)
SELECT count(*)::integer FROM recorded
$$
"""

# The archive job of the TimescaleDB path: checkpoints first, in the same transaction as the drop.
ARCHIVE_LEDGER = """
CREATE PROCEDURE archive_ledger(job_id integer, config jsonb) LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - (config ->> 'drop_after')::interval;
BEGIN
    PERFORM record_balance_checkpoints(cutoff);
    PERFORM drop_chunks('transactions', older_than => cutoff);
END
$$
"""


def _setting(name: str) -> str:
    env_name, default = SETTINGS[name]
    return context.get_x_argument(as_dictionary=True).get(name) or os.environ.get(env_name) or default


def use_timescaledb() -> bool:
    if _setting("timescaledb") == "off":
        return False
    return op.get_bind().execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')")).scalar()


def _has_timescaledb() -> bool:
    return op.get_bind().execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")).scalar()


def _aggregate(name: str, width: str) -> str:
    """Per sub-account and bucket: net flow, traded volume, trade and transaction counts, closing balance."""
    return f"""
CREATE MATERIALIZED VIEW {name} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '{width}', "timestamp") AS bucket, sub_account_id, user_id,
       sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS net_flow,
       sum(CASE WHEN reason IN {TRADE_REASONS} THEN amount ELSE 0 END) AS volume,
       coalesce(sum(fee), 0) AS fees,
       sum(CASE WHEN reason IN {TRADE_REASONS} THEN 1 ELSE 0 END) AS trade_count,
       count(*) AS transaction_count,
       last(closing_balance, "timestamp") AS closing_balance
FROM transactions
GROUP BY bucket, sub_account_id, user_id
WITH NO DATA
"""


AGGREGATES = {"sub_account_flows_hourly": ("1 hour", "2 days"), "sub_account_flows_daily": ("1 day", "7 days")}


def _upgrade_timescaledb() -> None:
    bind = op.get_bind()
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    interval = sa.bindparam("interval", _setting("chunk_interval"))
    for table in ("transactions", "trading_logs"):
        bind.execute(sa.text(
            f"SELECT create_hypertable('{table}', by_range('timestamp', CAST(:interval AS interval)), "
            "create_default_indexes => false, migrate_data => true, if_not_exists => true)").bindparams(interval))
        op.execute(f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = "
                   "'sub_account_id', timescaledb.compress_orderby = '\"timestamp\" DESC')")
        bind.execute(sa.text(f"SELECT add_compression_policy('{table}', compress_after => CAST(:age AS interval))"),
                     {"age": _setting("compress_after")})
    bind.execute(sa.text("SELECT add_retention_policy('trading_logs', drop_after => CAST(:age AS interval))"),
                 {"age": _setting("trading_log_retention")})
    op.execute(ARCHIVE_LEDGER)
    if archive_after := _setting("transaction_archive_after"):
        bind.execute(sa.text("SELECT add_job('archive_ledger', INTERVAL '1 day', "
                             "config => jsonb_build_object('drop_after', CAST(:age AS interval)::text))"),
                     {"age": archive_after})
    for name, (width, _) in AGGREGATES.items():
        op.execute(_aggregate(name, width))
    # Refreshing may not run inside a transaction block; real-time aggregation covers what is not refreshed yet.
    with op.get_context().autocommit_block():
        for name, (width, window) in AGGREGATES.items():
            op.execute(f"CALL refresh_continuous_aggregate('{name}', NULL, NULL)")
            op.execute(f"SELECT add_continuous_aggregate_policy('{name}', start_offset => INTERVAL '{window}', "
                       f"end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour')")


def _downgrade_timescaledb() -> None:
    """Policies, jobs and aggregates go; the tables stay hypertables (same columns), decompressed."""
    for name in AGGREGATES:
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {name}")
    op.execute("SELECT delete_job(job_id) FROM timescaledb_information.jobs WHERE proc_name = 'archive_ledger'")
    op.execute("SELECT remove_retention_policy('trading_logs', if_exists => true)")
    for table in ("transactions", "trading_logs"):
        op.execute(f"SELECT remove_compression_policy('{table}', if_exists => true)")
        op.execute(f"SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('{table}') c")
        op.execute(f"ALTER TABLE {table} SET (timescaledb.compress = false)")
    op.execute("DROP PROCEDURE IF EXISTS archive_ledger(integer, jsonb)")


def upgrade() -> None:
    op.create_table('balance_checkpoints',
    sa.Column('sub_account_id', sa.UUID(), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.Column('balance', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('credits', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('debits', sa.Numeric(precision=38, scale=18), nullable=False),
    sa.Column('transaction_count', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('info', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('sub_account_id', 'as_of', name=op.f('pk_balance_checkpoints'))
    )
    op.create_index('ix_balance_checkpoints_info', 'balance_checkpoints', ['info'], unique=False,
                    postgresql_using='gin')
    op.execute(RECORD_CHECKPOINTS)
    # The fee a trade's leg paid, so the aggregates can sum fees per sub-account (before the table is converted).
    op.add_column('transactions', sa.Column('fee', sa.Numeric(precision=38, scale=18), nullable=True))
    op.create_check_constraint(op.f('ck_transactions_fee_not_negative'), 'transactions', 'fee >= 0')
    # Pages of everyone's rows (admins) walk these instead of sorting the whole table.
    op.create_index('ix_transactions_timestamp_id', 'transactions', ['timestamp', 'id'], unique=False)
    op.create_index('ix_trading_logs_timestamp_id', 'trading_logs', ['timestamp', 'id'], unique=False)
    if use_timescaledb():
        _upgrade_timescaledb()


def downgrade() -> None:
    if _has_timescaledb():
        _downgrade_timescaledb()
    op.drop_index('ix_trading_logs_timestamp_id', table_name='trading_logs')
    op.drop_index('ix_transactions_timestamp_id', table_name='transactions')
    op.execute("DROP FUNCTION IF EXISTS record_balance_checkpoints(timestamptz)")
    op.drop_index('ix_balance_checkpoints_info', table_name='balance_checkpoints', postgresql_using='gin')
    op.drop_table('balance_checkpoints')
    op.drop_constraint(op.f('ck_transactions_fee_not_negative'), 'transactions', type_='check')
    op.drop_column('transactions', 'fee')
