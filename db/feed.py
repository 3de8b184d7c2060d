"""The live feed: one per user, of what changed, written in the same transaction as the change (an outbox).

A feed event is (user, id, type, data): `id` counts up per user from 1, `data` is the resource as the REST API
returns it. db/booking.py calls `write` once at the end of its write phase with everything the batch booked, in one
statement whatever the batch size; the event door adds the user's own dead letters. The statement also NOTIFYs
CHANNEL with `user_id:last_id` for each user it wrote for: PostgreSQL delivers that at commit, and only if the
transaction commits, to every process that LISTENs (every API worker of every replica), which then reads the rows.

Ids are given under the lock of the user's `feed_heads` row, held until commit, so a user's ids become visible in
the order they were given: a reader that saw id N never later finds a smaller id committed (no gaps to miss).

Per batch, each order, hold and sub-account appears once, in the state the batch left it (`order.updated`,
`hold.changed`, `balance.changed`), after the transactions and trading logs that changed it.
"""

import datetime as dt
import functools
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from pydantic import BaseModel, RootModel
from sqlalchemy.dialects.postgresql import UUID

from db import bulk
from db import orders as order_rows
from db.schema import feed_events, feed_heads, orders, sub_accounts
from db.written import decimal_string, plain
from generated import models

CHANNEL = "tiris_feed"
_enabled = False  # FEED_ENABLED: set by each process that books (configure), off unless turned on
TYPES = ("transaction.booked", "order.updated", "hold.changed", "trading_log.created", "balance.changed",
         "dead_letter.created", "bot.heartbeat")
# A bot's heartbeat reaches the feed when its status changes, else at most this often.
HEARTBEAT_EVERY = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: str  # the resource, as JSON text


@functools.cache
def _fields(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    return tuple((name, field.is_required()) for name, field in model.model_fields.items())


def resource(model: type[BaseModel], row: dict) -> dict:
    """The row as the REST API returns it (handlers.as_model's rule, without validating again): the model's fields;
    a NULL is `null` where the field is required and absent where it is optional."""
    return {name: row.get(name) for name, required in _fields(model) if required or row.get(name) is not None}


@functools.cache
def _decimal_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in model.model_fields.items()
                     if isinstance(field.annotation, type) and issubclass(field.annotation, RootModel)
                     and field.annotation.model_fields["root"].annotation is Decimal)


def log_resource(row: dict) -> dict:
    """A trading log as the REST API returns it: its `trade` keeps what the request said, in the written forms."""
    data = resource(models.TradingLog, row)
    if data.get("trade"):
        decimals = _decimal_fields(models.Trade)
        data["trade"] = {key: decimal_string(Decimal(value)) if key in decimals and value is not None else value
                         for key, value in data["trade"].items()}
    return data


def hold_resource(hold, when: dt.datetime) -> dict:
    row = {"id": hold.id, "user_id": hold.user_id, "exchange_id": hold.exchange_id,
           "sub_account_id": hold.sub_account_id, "order_id": hold.order_id, "amount": hold.amount,
           "remaining": hold.remaining, "status": hold.status, "expires_at": hold.expires_at, "updated_at": when}
    return {key: value for key, value in row.items() if value is not None or key == "order_id"}


def dumps(value) -> str:
    return json.dumps(value, default=plain, separators=(",", ":"))


# --- resources rendered by the database, in the statement that writes the feed: what the batch left in the rows

_DECIMAL, _TIME = "decimal", "time"


def _json_object(columns: dict[str, tuple[sa.ColumnElement, str | None]]) -> sa.ColumnElement:
    pairs = []
    for name, (column, kind) in columns.items():
        if kind == _DECIMAL:
            column = sa.cast(sa.func.round(column, 18), sa.Text)  # round(x, 18): always 18 fractional digits
        elif kind == _TIME:
            column = sa.func.feed_time(column)
        pairs += [sa.literal_column(f"'{name}'"), column]
    return sa.func.jsonb_build_object(*pairs)


@functools.cache
def _rendered_sql() -> tuple[str, str]:
    """The SELECTs of (user_id, type, data, n) for the orders and the sub-accounts named by `:order_ids` and
    `:account_ids`, with the REST API's columns (db.orders.PUBLIC_COLUMNS, db.sub_accounts' public columns)."""
    public = {column.name: column for column in order_rows.PUBLIC_COLUMNS}
    decimals = {"amount", "average_price", "fees", "filled_amount", "held_amount", "price"}
    order_json = _json_object({name: (public[name], _DECIMAL if name in decimals else
                                      _TIME if name in ("created_at", "updated_at") else None)
                               for name, _ in _fields(models.Order)})
    c = sub_accounts.c
    account_columns = {"available": (c.balance - c.locked, _DECIMAL), "balance": (c.balance, _DECIMAL),
                       "locked": (c.locked, _DECIMAL), "created_at": (c.created_at, _TIME),
                       "updated_at": (c.updated_at, _TIME)}
    account_json = _json_object({name: account_columns[name] if name in account_columns else (c[name], None)
                                 for name, _ in _fields(models.SubAccount)})
    dialect = sa.dialects.postgresql.dialect()

    def compiled(query) -> str:
        return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    order_sql = compiled(sa.select(orders.c.user_id, sa.literal_column("'order.updated'"), order_json,
                                   sa.literal_column("1000000000 + row_number() OVER (ORDER BY orders.id)"))
                         .where(orders.c.id == sa.literal_column("ANY(CAST(:order_ids AS uuid[]))")))
    account_sql = compiled(sa.select(c.user_id, sa.literal_column("'balance.changed'"), account_json,
                                     sa.literal_column("2000000000 + row_number() OVER (ORDER BY sub_accounts.id)"))
                           .where(c.id == sa.literal_column("ANY(CAST(:account_ids AS uuid[]))")))
    return order_sql.replace("%%", "%"), account_sql.replace("%%", "%")


@functools.cache
def _write_statement() -> sa.TextClause:
    order_sql, account_sql = _rendered_sql()
    return sa.text(f"""
        WITH given AS (
            SELECT g.user_id, g.type, g.data::jsonb AS data, g.n
            FROM unnest(CAST(:user_ids AS uuid[]), CAST(:types AS text[]), CAST(:data AS text[])) WITH ORDINALITY
                 AS g(user_id, type, data, n)
        ), rendered AS (
            SELECT * FROM given UNION ALL ({order_sql}) UNION ALL ({account_sql})
        ), counts AS (
            SELECT user_id, count(*) AS c FROM rendered GROUP BY user_id
        ), heads AS (
            INSERT INTO {feed_heads.name} AS h (user_id, last_id) SELECT user_id, c FROM counts ORDER BY user_id
            ON CONFLICT (user_id) DO UPDATE SET last_id = h.last_id + EXCLUDED.last_id
            RETURNING h.user_id, h.last_id
        ), written AS (
            INSERT INTO {feed_events.name} (user_id, id, type, data)
            SELECT r.user_id, heads.last_id - counts.c + row_number() OVER (PARTITION BY r.user_id ORDER BY r.n),
                   r.type, r.data
            FROM rendered AS r JOIN heads USING (user_id) JOIN counts USING (user_id)
        )
        SELECT pg_notify('{CHANNEL}', user_id::text || ':' || last_id) FROM heads
    """).bindparams(sa.bindparam("user_ids", type_=bulk.Array(UUID(as_uuid=True))),
                    sa.bindparam("types", type_=bulk.Array(sa.Text())), sa.bindparam("data", type_=bulk.Array(sa.Text())),
                    sa.bindparam("order_ids", type_=bulk.Array(UUID(as_uuid=True))),
                    sa.bindparam("account_ids", type_=bulk.Array(UUID(as_uuid=True))))


def configure(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def write(conn: sa.Connection, events: list[tuple[uuid.UUID, str, dict]], *, order_ids=(), account_ids=()) -> None:
    """Appends `events` (user, type, resource) to their users' feeds in this order, then an `order.updated` per
    order and a `balance.changed` per sub-account named, rendered from their rows as they are now."""
    if not _enabled or (not events and not order_ids and not account_ids):
        return
    conn.execute(_write_statement(), {
        "user_ids": [user for user, _, _ in events], "types": [kind for _, kind, _ in events],
        "data": [dumps(data) for _, _, data in events], "order_ids": list(order_ids),
        "account_ids": list(account_ids)})


# --- reads and retention

def read(conn: sa.Connection, user_id, after: int, limit: int, up_to: int | None = None) -> list[Event]:
    """The user's events after id `after` (and up to `up_to`), oldest first, at most `limit`."""
    c = feed_events.c
    query = (sa.select(c.id, c.type, sa.cast(c.data, sa.Text)).where(c.user_id == user_id, c.id > after)
             .order_by(c.id).limit(limit))
    if up_to is not None:
        query = query.where(c.id <= up_to)
    return [Event(*row) for row in conn.execute(query)]


def head(conn: sa.Connection, user_id) -> int:
    """The user's last feed id (0: none yet)."""
    return conn.execute(sa.select(feed_heads.c.last_id).where(feed_heads.c.user_id == user_id)).scalar() or 0


def oldest(conn: sa.Connection, user_id) -> int | None:
    """The user's oldest id still kept (None: none kept)."""
    return conn.execute(sa.select(sa.func.min(feed_events.c.id)).where(feed_events.c.user_id == user_id)).scalar()


def trim(conn: sa.Connection, retention: dt.timedelta, limit: int = 50_000) -> int:
    """Deletes up to `limit` events older than `retention`; returns how many (a job calls it until 0)."""
    c = feed_events.c
    old = sa.select(c.user_id, c.id).where(c.created_at < sa.func.now() - retention).limit(limit).subquery()
    return conn.execute(sa.delete(feed_events).where(
        sa.tuple_(c.user_id, c.id).in_(sa.select(old.c.user_id, old.c.id)))).rowcount


def booked(conn: sa.Connection, transactions: list[dict], logs: list[dict], links, holds, beats: list[dict],
           when: dt.datetime, *, order_ids, account_ids) -> None:
    """The feed of one booking batch: each entry's transactions then its trading log (in booking order), the
    holds, the bots' heartbeats, then each changed order and sub-account as the batch left it."""
    if not _enabled:
        return
    reverses = {row["id"]: original for original, row in links}
    booked_rows = sorted([(row["timestamp"], 0, row) for row in transactions] +
                         [(row["timestamp"], 1, row) for row in logs], key=lambda item: item[:2])
    events = [(row["user_id"], "transaction.booked",
               resource(models.Transaction, {**row, "reverses_transaction_id": reverses.get(row["id"])}))
              if kind == 0 else (row["user_id"], "trading_log.created", log_resource(row))
              for _, kind, row in booked_rows]
    events += [(hold.user_id, "hold.changed", hold_resource(hold, when)) for hold in holds]
    events += [(beat["user_id"], "bot.heartbeat", resource(models.BotStatus, beat)) for beat in beats]
    write(conn, events, order_ids=order_ids, account_ids=account_ids)
