"""Trading logs: the rows db/booking.py writes with what they record, reads, and the delete of a log that moved
no money."""

import datetime as dt
import uuid

import sqlalchemy as sa

from db import bulk, pagination
from db.access import Caller, readable_by
from db.commands import Log
from db.errors import Conflict, NotFound
from db.schema import trading_logs


def log_row(user_id: uuid.UUID, log: Log, log_id: uuid.UUID, timestamp: dt.datetime, moved: list[dict]) -> dict:
    """The trading log as it is stored and served; a log that moved money names its transactions."""
    return {"id": log_id, "timestamp": timestamp, "event_time": log.event_time, "user_id": user_id,
            "exchange_id": log.exchange_id, "sub_account_id": log.sub_account_id, "type": log.type.value,
            "source": log.source.value, "message": log.message, "trade": log.trade, "amount": log.amount,
            "transaction_ids": [transaction["id"] for transaction in moved], "info": log.info}


def insert(conn: sa.Connection, rows: list[dict]) -> None:
    bulk.insert(conn, trading_logs, rows)


def get(conn: sa.Connection, caller: Caller, trading_log_id: str) -> dict:
    row = conn.execute(sa.select(trading_logs).where(
        trading_logs.c.id == trading_log_id, readable_by(trading_logs, caller))).mappings().first()
    if row is None:
        raise NotFound("Trading log not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None, user_id=None,
              sub_account_id=None, exchange_id=None, type=None, source=None, start_time=None,
              end_time=None) -> tuple[list[dict], str | None]:
    c = trading_logs.c
    query = sa.select(trading_logs).where(readable_by(trading_logs, caller, user_id))
    for column, value in ((c.exchange_id, exchange_id), (c.type, type), (c.source, source)):
        if value is not None:
            query = query.where(column == value)
    if sub_account_id is not None:  # a trade's log names its sub-accounts in `trade`, a transfer's in the column
        query = query.where(sa.or_(
            c.sub_account_id == sub_account_id,
            c.trade["base_sub_account_id"].astext == str(sub_account_id),
            c.trade["quote_sub_account_id"].astext == str(sub_account_id)))
    query = pagination.in_range(query, c.timestamp, start_time, end_time)
    return pagination.page(conn, query, c.timestamp, c.id, limit, cursor)


def delete(conn: sa.Connection, caller: Caller, trading_log_id: str) -> None:
    owned = sa.and_(trading_logs.c.id == trading_log_id, trading_logs.c.user_id == caller.id)
    row = conn.execute(sa.select(trading_logs.c.transaction_ids).where(owned).with_for_update()).first()
    if row is None:
        raise NotFound("Trading log not found.")
    if row.transaction_ids:
        raise Conflict("This log moved money and is part of the ledger; book an opposite entry instead.",
                       code="LEDGER_ENTRY", details={"transaction_ids": [str(t) for t in row.transaction_ids]})
    conn.execute(sa.delete(trading_logs).where(owned))
