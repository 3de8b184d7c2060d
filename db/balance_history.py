"""A sub-account's balance per hour or day, from the continuous aggregates (TimescaleDB) or `date_bin` (plain
PostgreSQL); both give the same numbers, so the API does not change with the database.

Buckets are aligned to whole UTC hours and days (time_bucket's and date_bin's shared origin, 2000-01-01). A bucket
without transactions carries the previous closing balance forward, so every bucket of the range is present. The
balance before the range is the balance just before its start (db/balances.py: the last transaction's closing
balance, or a balance checkpoint when the transactions of that time were archived).
"""

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from db import balances, pagination, sub_accounts
from db.access import Caller
from db.errors import Invalid, field_error
from generated.models import TradeType

BUCKETS = {"1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1)}
AGGREGATES = {"1h": "sub_account_flows_hourly", "1d": "sub_account_flows_daily"}
ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
MAX_BUCKETS = 1000
DEFAULT_BUCKETS = 30
TRADE_REASONS = tuple(kind.value for kind in TradeType)  # a trade leg's reason is its kind

_has_aggregates: dict[str, bool] = {}  # per database URL: migrations decide once, the answer does not change


def uses_aggregates(conn: sa.Connection) -> bool:
    url = conn.engine.url.render_as_string(hide_password=True)
    if url not in _has_aggregates:
        _has_aggregates[url] = conn.execute(sa.text(
            f"SELECT to_regclass('{AGGREGATES['1d']}') IS NOT NULL")).scalar()
    return _has_aggregates[url]


def _floor(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    return moment - (moment - ORIGIN) % width


def window(bucket: str, start_time: str | None, end_time: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) widened to whole buckets; refuses an empty range or one of more than MAX_BUCKETS buckets."""
    width = BUCKETS[bucket]
    try:
        end = pagination.query_time("end_time", end_time) or now
        end = _floor(end, width) + (width if _floor(end, width) != end else dt.timedelta(0))
        start = pagination.query_time("start_time", start_time)
        start = _floor(start, width) if start is not None else end - DEFAULT_BUCKETS * width
    except OverflowError:  # a range that reaches past year 9999 once widened to whole buckets
        raise Invalid("The range reaches beyond the dates this service handles.",
                         details=[field_error("query/end_time", "out of range")]) from None
    if start >= end:
        raise Invalid("start_time must be before end_time.",
                         details=[field_error("query/start_time", "not before end_time")])
    if (end - start) / width > MAX_BUCKETS:
        raise Invalid(f"At most {MAX_BUCKETS} buckets per request.",
                         details=[field_error("query/start_time", f"more than {MAX_BUCKETS} {bucket} buckets")])
    return start, end


def _flows_from_aggregate(bucket: str) -> sa.TextClause:
    return sa.text(
        "SELECT bucket, net_flow, volume, fees, trade_count, transaction_count, closing_balance "
        f"FROM {AGGREGATES[bucket]} WHERE sub_account_id = :id AND bucket >= :start AND bucket < :end ORDER BY bucket")


# The same columns as the aggregates, from the rows: the time range is on "timestamp" itself, so the
# (sub_account_id, timestamp) index bounds the scan to the requested range.
_FLOWS_FROM_ROWS = sa.text(
    "SELECT date_bin(:width, \"timestamp\", :origin) AS bucket, "
    "sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END) AS net_flow, "
    "sum(CASE WHEN reason = ANY(:trades) THEN amount ELSE 0 END) AS volume, "
    "coalesce(sum(fee), 0) AS fees, "
    "sum(CASE WHEN reason = ANY(:trades) THEN 1 ELSE 0 END) AS trade_count, "
    "count(*) AS transaction_count, "
    "(array_agg(closing_balance ORDER BY \"timestamp\" DESC))[1] AS closing_balance "
    "FROM transactions WHERE sub_account_id = :id AND \"timestamp\" >= :start AND \"timestamp\" < :end "
    "GROUP BY 1 ORDER BY 1")

def flows(conn: sa.Connection, sub_account_id, bucket: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The buckets of [start, end) that have transactions, oldest first."""
    params = {"id": sub_account_id, "start": start, "end": end}
    if uses_aggregates(conn):
        return [dict(r) for r in conn.execute(_flows_from_aggregate(bucket), params).mappings()]
    return [dict(r) for r in conn.execute(_FLOWS_FROM_ROWS, {
        **params, "width": BUCKETS[bucket], "origin": ORIGIN, "trades": list(TRADE_REASONS)}).mappings()]


def history(conn: sa.Connection, caller: Caller, sub_account_id, bucket: str, start_time: str | None,
            end_time: str | None) -> dict:
    account = sub_accounts.get(conn, caller, sub_account_id)
    start, end = window(bucket, start_time, end_time, conn.execute(sa.select(sa.func.now())).scalar())
    opening = conn.execute(sa.select(balances.known_balance(account["id"], start, inclusive=False))).scalar() \
        or Decimal(0)
    found = {row["bucket"]: row for row in flows(conn, sub_account_id, bucket, start, end)}
    items, balance, at, width = [], opening, start, BUCKETS[bucket]
    while at < end:
        row = found.get(at)
        if row is not None:
            balance = row["closing_balance"]
            items.append({**{k: v for k, v in row.items() if k != "bucket"}, "bucket_start": at})
        else:
            items.append({"bucket_start": at, "net_flow": Decimal(0), "volume": Decimal(0), "fees": Decimal(0),
                          "trade_count": 0,
                          "transaction_count": 0, "closing_balance": balance})
        at += width
    return {"sub_account_id": account["id"], "symbol": account["symbol"], "bucket": bucket, "start_time": start,
            "end_time": end, "opening_balance": opening, "items": items}


def transaction_count(conn: sa.Connection, user_id) -> int:
    """All of a user's transactions: summed from the daily aggregate when there is one, else counted."""
    if uses_aggregates(conn):
        query = f"SELECT coalesce(sum(transaction_count), 0) FROM {AGGREGATES['1d']} WHERE user_id = :user_id"
    else:
        query = "SELECT count(*) FROM transactions WHERE user_id = :user_id"
    return conn.execute(sa.text(query), {"user_id": user_id}).scalar()
