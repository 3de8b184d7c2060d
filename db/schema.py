"""Table definitions, the single source of the database schema (alembic migrates to it).

Money is NUMERIC(38,18) with CHECK constraints that keep the ledger's invariants even against a faulty caller.
The time-series tables (transactions, trading_logs) have keys that include their time column, as TimescaleDB
hypertables require.
"""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MONEY = sa.Numeric(38, 18)
NOW = sa.text("now()")
NEW_UUID = sa.text("gen_random_uuid()")


def _id():
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=NEW_UUID)


def _info():
    return sa.Column("info", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))


def _timestamps():
    return (
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def _gin_info(table: str) -> sa.Index:
    return sa.Index(f"ix_{table}_info", "info", postgresql_using="gin")


users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("email", sa.Text, unique=True),  # absent for users of a provider that gives none (WeChat)
    sa.Column("avatar", sa.Text),
    sa.Column("role", sa.Text, nullable=False, server_default="user"),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("settings", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    _info(),
    *_timestamps(),
    sa.CheckConstraint("role IN ('user', 'admin')", name="role"),
    sa.CheckConstraint("status IN ('active', 'disabled')", name="status"),
    _gin_info("users"),
)

exchanges = sa.Table(
    "exchanges",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    # AES-256-GCM ciphertexts; the key id says which key sealed them, so keys can rotate.
    sa.Column("api_key_ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("api_secret_ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    # Keyed hash of the api key: uniqueness without comparing ciphertexts (random nonces differ every time).
    sa.Column("api_key_hash", sa.LargeBinary, nullable=False),
    sa.Column("api_key_masked", sa.Text, nullable=False),
    _info(),
    *_timestamps(),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status IN ('active', 'inactive')", name="status"),
    sa.Index("uq_exchanges_user_id_name_live", "user_id", "name", unique=True,
             postgresql_where=sa.text("deleted_at IS NULL")),
    sa.Index("uq_exchanges_user_id_api_key_hash_live", "user_id", "api_key_hash", unique=True,
             postgresql_where=sa.text("deleted_at IS NULL")),
    sa.Index("ix_exchanges_user_id_created_at", "user_id", "created_at"),
    _gin_info("exchanges"),
)

sub_accounts = sa.Table(
    "sub_accounts",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), sa.ForeignKey("exchanges.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("balance", MONEY, nullable=False, server_default="0"),
    sa.Column("locked", MONEY, nullable=False, server_default="0"),
    _info(),
    *_timestamps(),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("balance >= 0", name="balance_not_negative"),
    sa.CheckConstraint("locked >= 0 AND locked <= balance", name="locked_within_balance"),
    sa.Index("uq_sub_accounts_exchange_id_name_live", "exchange_id", "name", unique=True,
             postgresql_where=sa.text("deleted_at IS NULL")),
    sa.Index("ix_sub_accounts_user_id_created_at", "user_id", "created_at"),
    _gin_info("sub_accounts"),
)

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("id", UUID(as_uuid=True), nullable=False, server_default=NEW_UUID),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), nullable=False),
    sa.Column("sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("amount", MONEY, nullable=False),
    sa.Column("closing_balance", MONEY, nullable=False),
    sa.Column("price", MONEY),
    sa.Column("quote_symbol", sa.Text),
    sa.Column("trading_log_id", UUID(as_uuid=True)),
    sa.Column("event_id", sa.Text),
    _info(),
    # On a trade's leg: the fee its sub-account paid with it, so fees can be summed per sub-account over time.
    sa.Column("fee", MONEY),
    sa.PrimaryKeyConstraint("id", "timestamp"),
    sa.CheckConstraint("direction IN ('credit', 'debit')", name="direction"),
    sa.CheckConstraint("fee >= 0", name="fee_not_negative"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("closing_balance >= 0", name="closing_balance_not_negative"),
    sa.Index("ix_transactions_user_id_timestamp", "user_id", "timestamp"),
    sa.Index("ix_transactions_sub_account_id_timestamp", "sub_account_id", "timestamp"),
    sa.Index("ix_transactions_timestamp_id", "timestamp", "id"),  # everyone's newest first: the admin's pages
    _gin_info("transactions"),
)

trading_logs = sa.Table(
    "trading_logs",
    metadata,
    sa.Column("id", UUID(as_uuid=True), nullable=False, server_default=NEW_UUID),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("event_time", sa.DateTime(timezone=True)),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), nullable=False),
    sa.Column("sub_account_id", UUID(as_uuid=True)),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("trade", JSONB),
    sa.Column("amount", MONEY),
    sa.Column("transaction_ids", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=sa.text("'{}'")),
    _info(),
    sa.PrimaryKeyConstraint("id", "timestamp"),
    sa.CheckConstraint("source IN ('manual', 'bot', 'api')", name="source"),
    sa.Index("ix_trading_logs_user_id_timestamp", "user_id", "timestamp"),
    sa.Index("ix_trading_logs_sub_account_id_timestamp", "sub_account_id", "timestamp"),
    sa.Index("ix_trading_logs_timestamp_id", "timestamp", "id"),
    _gin_info("trading_logs"),
)

# A replayed POST that moves money returns the first result; the key row is written in the same database
# transaction as the money, so a key exists exactly when its effect does.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("request_hash", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("response", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    sa.PrimaryKeyConstraint("user_id", "key"),
    _gin_info("idempotency_keys"),
)

# --- the event door -------------------------------------------------------------------------------------------

# The id of every event whose effects were committed, written in the same transaction as those effects: a redelivered
# or replayed event finds its id here and changes nothing. Not a hypertable: the key must be unique on its own.
processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("stream_seq", sa.BigInteger),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    # applied: its effects were made; refused: it was dead-lettered. Both are handled: neither is applied again.
    sa.Column("outcome", sa.Text, nullable=False, server_default="applied"),
    _info(),
    sa.CheckConstraint("outcome IN ('applied', 'refused')", name="outcome"),
    sa.Index("ix_processed_events_processed_at", "processed_at"),
    _gin_info("processed_events"),
)

# Events that cannot take effect (malformed, invalid, foreign, refused by a ledger rule, or out of retries), kept
# with the reason and the raw message so an admin can re-drive them once the cause is fixed.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    _id(),
    sa.Column("event_id", sa.Text),  # the payload's
    sa.Column("msg_id", sa.Text),  # the Nats-Msg-Id header, which may differ (and be why it is here)
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("stream_seq", sa.BigInteger),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("redriven_at", sa.DateTime(timezone=True)),
    _info(),
    sa.Index("ix_dead_letters_created_at", "created_at"),
    # The same message redelivered (after a crash between commit and ack) is one dead letter, not two.
    sa.Index("uq_dead_letters_stream_seq_payload", "stream_seq", sa.text("md5(payload)"), unique=True),
    _gin_info("dead_letters"),
)

# One row per bot, updated by its heartbeats (not one row per beat).
bot_status = sa.Table(
    "bot_status",
    metadata,
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("bot_id", sa.Text, nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("version", sa.Text),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_event_id", sa.Text, nullable=False),
    sa.Column("announced_at", sa.DateTime(timezone=True)),  # the beat last put in the live feed (throttled)
    _info(),
    sa.PrimaryKeyConstraint("user_id", "bot_id"),
    _gin_info("bot_status"),
)

# Counters of each consumer, updated once per batch in the batch's transaction, so they agree with the effects.
consumer_state = sa.Table(
    "consumer_state",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("processed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicates", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("balance_drifts", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_stream_seq", sa.BigInteger),
    sa.Column("last_processed_at", sa.DateTime(timezone=True)),
    sa.Column("seen_at", sa.DateTime(timezone=True)),  # the owning process's last sign of life, idle or not
    _info(),
    _gin_info("consumer_state"),
)


# --- orders, holds and corrections

# The bot's orders, built from its order events and fills; `order_id` is the bot's (the exchange's) id.
orders = sa.Table(
    "orders",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), sa.ForeignKey("exchanges.id"), nullable=False),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("base_sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("quote_sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("order_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("amount", MONEY),  # unknown until the order's own event says (a fill may come first)
    sa.Column("price", MONEY),  # a limit order's
    sa.Column("filled_amount", MONEY, nullable=False, server_default="0"),
    sa.Column("filled_quote", sa.Numeric(60, 18), nullable=False, server_default="0"),  # sum of price * volume
    sa.Column("fees", MONEY, nullable=False, server_default="0"),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("placed_at", sa.DateTime(timezone=True)),  # the bot's `orders.created` time; null until it arrives
    # Its fills, on the order's own row: the trades (a trade fills its order once) and the transactions they booked.
    sa.Column("trade_ids", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("transaction_ids", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=sa.text("'{}'")),
    _info(),
    *_timestamps(),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="side"),
    sa.CheckConstraint("status IN ('open', 'partially_filled', 'filled', 'cancelled', 'failed')", name="status"),
    sa.CheckConstraint("filled_amount >= 0 AND (amount IS NULL OR filled_amount <= amount)", name="filled_within_amount"),
    sa.UniqueConstraint("user_id", "exchange_id", "order_id"),
    sa.Index("ix_orders_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_orders_created_at_id", "created_at", "id"),
    _gin_info("orders"),
)

# Part of a sub-account's balance reserved for an order (or, without one, until `expires_at`): `locked` is the sum
# of the open holds' `remaining`. A hold resolves once: released, settled (consumed whole by fills) or expired.
holds = sa.Table(
    "holds",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), sa.ForeignKey("exchanges.id"), nullable=False),
    sa.Column("sub_account_id", UUID(as_uuid=True), sa.ForeignKey("sub_accounts.id"), nullable=False),
    sa.Column("order_id", sa.Text),  # the bot's order id; one hold per order and sub-account
    sa.Column("amount", MONEY, nullable=False),
    sa.Column("remaining", MONEY, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="open"),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    _info(),
    *_timestamps(),
    sa.CheckConstraint("status IN ('open', 'released', 'settled', 'expired')", name="status"),
    sa.CheckConstraint("amount > 0 AND remaining >= 0 AND remaining <= amount", name="remaining_within_amount"),
    sa.CheckConstraint("(status = 'open') = (resolved_at IS NULL)", name="resolved_once"),
    sa.Index("uq_holds_order", "user_id", "exchange_id", "order_id", "sub_account_id", unique=True,
             postgresql_where=sa.text("order_id IS NOT NULL")),
    sa.Index("ix_holds_sub_account_id_open", "sub_account_id", postgresql_where=sa.text("status = 'open'")),
    sa.Index("ix_holds_expires_at_open", "expires_at",
             postgresql_where=sa.text("status = 'open' AND expires_at IS NOT NULL")),
    _gin_info("holds"),
)

# A reversal links a booked transaction to the transaction that reverses it; each is reversed at most once (the
# primary key), and a reversal is never itself reversed by the same row twice (unique reversed_by).
reversals = sa.Table(
    "reversals",
    metadata,
    sa.Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("reversed_by", UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    _gin_info("reversals"),
)


# --- identity: provider logins, sessions with rotating refresh tokens, the security audit trail

# One row per (provider, subject) a user logged in with; the subject is Google's `sub`, WeChat's unionid (else openid).
oauth_identities = sa.Table(
    "oauth_identities",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("email", sa.Text),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    *_timestamps(),
    sa.UniqueConstraint("provider", "subject"),
    sa.CheckConstraint("provider IN ('google', 'wechat')", name="provider"),
    sa.Index("ix_oauth_identities_user_id", "user_id"),
    _gin_info("oauth_identities"),
)

# A login in progress: only the state's hash is kept, and a callback deletes the row it uses (single use).
oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state_hash", sa.LargeBinary, primary_key=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("nonce", sa.Text, nullable=False),
    sa.Column("code_verifier", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    sa.Index("ix_oauth_states_expires_at", "expires_at"),
    _gin_info("oauth_states"),
)

# A login's lifetime: every refresh token of one chain of rotations, and every access token minted from them,
# carries the session's id; revoking the session (logout, reuse of a spent refresh token) ends them all at once.
sessions = sa.Table(
    "sessions",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("provider", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_reason", sa.Text),
    _info(),
    sa.Index("ix_sessions_user_id", "user_id"),
    _gin_info("sessions"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    _id(),
    sa.Column("session_id", UUID(as_uuid=True), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),  # SHA-256 of the token, never the token
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    _info(),
    sa.Index("ix_refresh_tokens_session_id", "session_id"),
    _gin_info("refresh_tokens"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", UUID(as_uuid=True), nullable=False, server_default=NEW_UUID),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("user_id", UUID(as_uuid=True)),  # no foreign key: the trail outlives what it is about
    sa.Column("actor_id", UUID(as_uuid=True)),
    sa.Column("ip", sa.Text),
    sa.Column("trace_id", sa.Text),
    _info(),
    sa.PrimaryKeyConstraint("id", "timestamp"),
    sa.Index("ix_audit_events_user_id_timestamp", "user_id", "timestamp"),
    sa.Index("ix_audit_events_timestamp", "timestamp"),
    _gin_info("audit_events"),
)

# What the ledger held before `as_of`, per sub-account, recorded before any transactions older than that may be
# archived: balance = credits - debits as of then, so "balance = checkpoint + credits - debits since" stays checkable.
balance_checkpoints = sa.Table(
    "balance_checkpoints",
    metadata,
    sa.Column("sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("balance", MONEY, nullable=False),
    sa.Column("credits", MONEY, nullable=False),
    sa.Column("debits", MONEY, nullable=False),
    sa.Column("transaction_count", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    sa.PrimaryKeyConstraint("sub_account_id", "as_of"),
    _gin_info("balance_checkpoints"),
)

# Portfolio analytics (DESIGN §9, db/positions.py): written by the booking that changes them, in its transaction.
WIDE = sa.Numeric(60, 18)  # sums of money (cost, PnL, fees, volume), which may pass NUMERIC(38,18)'s 20 digits


def _figures(counts=sa.BigInteger) -> list[sa.Column]:
    """What trades add up to: realized PnL, fees and traded volume in quote; trades, wins and losses."""
    return [sa.Column("realized_pnl", WIDE, nullable=False), sa.Column("fees", WIDE, nullable=False),
            sa.Column("volume", WIDE, nullable=False), sa.Column("trades", counts, nullable=False),
            sa.Column("wins", counts, nullable=False), sa.Column("losses", counts, nullable=False)]


positions = sa.Table(
    "positions",
    metadata,
    sa.Column("sub_account_id", UUID(as_uuid=True), primary_key=True),  # the base sub-account
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("exchange_id", UUID(as_uuid=True), nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),  # the pair, "ETH/USDT"
    sa.Column("quote_symbol", sa.Text, nullable=False),
    sa.Column("quantity", MONEY, nullable=False),  # always the base sub-account's balance
    sa.Column("cost", WIDE, nullable=False),  # the quantity's cost basis in quote: average cost = cost / quantity
    *_figures(),
    sa.Column("last_price", MONEY),
    _info(),
    *_timestamps(),
    sa.Index("ix_positions_user_id_quote_symbol", "user_id", "quote_symbol"),
    _gin_info("positions"),
)
# What each booked leg on a position's sub-account did to it (signed changes): a reversal applies the opposite.
# Derived rows written with every fill, so no info column and no GIN index to maintain on the hot path.
position_effects = sa.Table(
    "position_effects",
    metadata,
    sa.Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("source", sa.Text),  # a trade's: the bot, or the trading log's source
    sa.Column("quantity", MONEY, nullable=False),  # signed
    sa.Column("cost", WIDE, nullable=False),
    *_figures(sa.SmallInteger),
)
# Per position and UTC day: what that day's bookings added, and the position as the day left it.
position_days = sa.Table(
    "position_days",
    metadata,
    sa.Column("sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("quote_symbol", sa.Text, nullable=False),
    *_figures(),
    sa.Column("quantity", MONEY, nullable=False),
    sa.Column("cost", WIDE, nullable=False),
    sa.Column("cumulative_realized_pnl", WIDE, nullable=False),
    sa.Column("last_price", MONEY),
    sa.PrimaryKeyConstraint("sub_account_id", "day"),
    sa.Index("ix_position_days_user_id_quote_symbol_day", "user_id", "quote_symbol", "day"),
)
# Per position and source (the bot, or manual/api): its trades' totals.
position_sources = sa.Table(
    "position_sources",
    metadata,
    sa.Column("sub_account_id", UUID(as_uuid=True), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("quote_symbol", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    *_figures(),
    sa.PrimaryKeyConstraint("sub_account_id", "source"),
    sa.Index("ix_position_sources_user_id_quote_symbol", "user_id", "quote_symbol"),
)


# --- the live feed: what changed, per user, written in the same transaction as the change (an outbox)

# The last feed id given to each user: the booking that writes a user's events takes this row's lock until it
# commits, so a user's ids become visible in the order they were given (a reader never skips a later commit's gap).
feed_heads = sa.Table(
    "feed_heads",
    metadata,
    sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    _info(),
    _gin_info("feed_heads"),
)

# One row per event: `data` is the resource as the REST API returns it. Rows older than FEED_RETENTION_HOURS are
# trimmed by a job. No `info` column or GIN index here: it is the hottest insert of a booking and rows are
# short-lived; what describes an event is its `data`.
feed_events = sa.Table(
    "feed_events",
    metadata,
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("id", sa.BigInteger, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("data", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.PrimaryKeyConstraint("user_id", "id"),
    sa.Index("ix_feed_events_created_at", "created_at", postgresql_using="brin"),
)

# A short-lived, single-use ticket that opens one stream for a browser's EventSource (which cannot send headers).
# Only its hash is kept; opening the stream spends it.
stream_tickets = sa.Table(
    "stream_tickets",
    metadata,
    sa.Column("ticket_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("session_id", UUID(as_uuid=True)),  # the token's login session: revoking it ends the stream too
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    sa.Index("ix_stream_tickets_expires_at", "expires_at"),
    _gin_info("stream_tickets"),
)

# Where the primary's write-ahead log stood right after each user's latest REST write (db/replica.py): that user's
# reads go to the primary until the replica has replayed past it. UNLOGGED: written after every write, it must not
# cost a WAL flush or travel to the replica; after a crash of the primary it is empty (see README, "Read replica").
write_positions = sa.Table(
    "write_positions",
    metadata,
    sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("lsn", sa.BigInteger, nullable=False),  # bytes of WAL since 0/0: pg_lsn has no SQLAlchemy type
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    prefixes=["UNLOGGED"],
)


# --- webhooks: the live feed delivered to the users' endpoints by `tiris deliver`

# A user's subscription of a URL to feed event types. `cursor` is the last feed id its deliveries were made for
# (fan-out takes the row's lock, so two deliverers never make them twice); the signing secret is sealed at rest.
webhooks = sa.Table(
    "webhooks",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
    sa.Column("description", sa.Text),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    _info(),
    *_timestamps(),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Index("ix_webhooks_user_id_created_at", "user_id", "created_at"),
    _gin_info("webhooks"),
)

# A balance monitor: fires once each time its sub-account's available balance crosses `threshold` in `direction`.
# `beyond` is where the last balance it saw stood; feed events up to `since_feed_id` (its creation) are not its.
balance_monitors = sa.Table(
    "balance_monitors",
    metadata,
    _id(),
    sa.Column("webhook_id", UUID(as_uuid=True), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("sub_account_id", UUID(as_uuid=True), sa.ForeignKey("sub_accounts.id"), nullable=False),
    sa.Column("threshold", MONEY, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("beyond", sa.Boolean, nullable=False),
    sa.Column("since_feed_id", sa.BigInteger, nullable=False),
    sa.Column("last_crossed_at", sa.DateTime(timezone=True)),
    sa.Column("position", sa.Integer, nullable=False),  # in the webhook's list, as the request gave it
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    _info(),
    sa.CheckConstraint("direction IN ('below', 'above')", name="direction"),
    sa.CheckConstraint("threshold >= 0", name="threshold_not_negative"),
    sa.Index("ix_balance_monitors_webhook_id", "webhook_id"),
    _gin_info("balance_monitors"),
)

# One event to send to one webhook, and how sending it went. `body` is the exact JSON every attempt sends. A claim
# counts the attempt and sets `leased_until` (past the attempt's time-out); the outcome is written only by the claim
# that made that attempt, while it is leased, and ends the lease. No `info` column: rows are many and short-lived.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _id(),
    sa.Column("webhook_id", UUID(as_uuid=True), sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("leased_until", sa.DateTime(timezone=True)),  # an attempt is in flight (claimed, not yet recorded)
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    *_timestamps(),
    sa.UniqueConstraint("webhook_id", "event_id"),
    sa.CheckConstraint("status IN ('pending', 'retrying', 'succeeded', 'failed')", name="status"),
    sa.CheckConstraint("(status IN ('pending', 'retrying')) = (next_attempt_at IS NOT NULL)", name="due_while_open"),
    sa.CheckConstraint("(status = 'succeeded') = (delivered_at IS NOT NULL)", name="delivered_once"),
    sa.Index("ix_webhook_deliveries_due", "next_attempt_at",
             postgresql_where=sa.text("status IN ('pending', 'retrying')")),
    sa.Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
    sa.Index("ix_webhook_deliveries_created_at", "created_at", postgresql_using="brin"),
)
