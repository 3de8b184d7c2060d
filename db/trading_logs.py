"""Trading logs. The business types move money through db.trades in the same transaction as the log row."""

import datetime as dt
import json
import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from db import ledger, pagination, trades
from db.access import Caller, readable_by
from db.schema import exchanges, sub_accounts, trading_logs
from tiris.errors import ApiError, Conflict, NotFound


def create(conn: sa.Connection, caller: Caller, body: dict, *, event_id: str | None = None,
           fee_asset: str = "quote") -> dict:
    """`body` has the shape the contract gives for its type (TradeLogCreate, TransferLogCreate, NoteLogCreate)."""
    kind = body["type"]
    exchange_id = uuid.UUID(body["exchange_id"])
    if conn.execute(sa.select(exchanges.c.id).where(exchanges.c.id == exchange_id, exchanges.c.user_id == caller.id,
                                                    exchanges.c.deleted_at.is_(None))).first() is None:
        raise NotFound("Exchange not found.")

    log_id = uuid.uuid4()
    sub_account_id = uuid.UUID(body["sub_account_id"]) if "sub_account_id" in body else None
    moved: list[dict] = []
    if "trade" in body:
        moved = trades.apply_trade(conn, caller.id, exchange_id, _trade(body, fee_asset),
                                   trading_log_id=log_id, event_id=event_id)
    elif kind in trades.TRANSFERS:
        moved = [trades.apply_transfer(conn, caller.id, sub_account_id, kind, Decimal(body["amount"]),
                                       exchange_id=exchange_id, trading_log_id=log_id, event_id=event_id)]
    elif sub_account_id is not None and conn.execute(sa.select(sub_accounts.c.id).where(
            sub_accounts.c.id == sub_account_id, sub_accounts.c.user_id == caller.id)).first() is None:
        raise NotFound("Sub-account not found.")

    values = _values(caller, body, log_id, sub_account_id, moved)
    return dict(conn.execute(sa.insert(trading_logs).values(**values).returning(trading_logs)).mappings().one())


def create_trades(conn: sa.Connection, entries: list[tuple[Caller, dict, str | None, str]]) -> None:
    """Trade logs (TradeLogCreate bodies) in bulk, each with the checks, legs and rows `create` would give it.

    entries: (caller, body, event_id, fee_asset). One statement per kind of work for all of them: the exchanges
    read, the sub-accounts locked, the balances updated, the transactions and the logs inserted. Raises
    ledger.Refused naming the first entry found that `create` would refuse; nothing is written then.
    """
    owners = dict(conn.execute(sa.select(exchanges.c.id, exchanges.c.user_id).where(
        exchanges.c.id.in_({uuid.UUID(body["exchange_id"]) for _, body, _, _ in entries}),
        exchanges.c.deleted_at.is_(None))).all())
    planned = []
    for i, (caller, body, event_id, fee_asset) in enumerate(entries):
        exchange_id, trade = uuid.UUID(body["exchange_id"]), _trade(body, fee_asset)
        try:
            if owners.get(exchange_id) != caller.id:
                raise NotFound("Exchange not found.")
            trades.check_distinct(trade)
        except ApiError as error:
            raise ledger.Refused(i, error) from None
        planned.append((exchange_id, trade))
    accounts = ledger.lock_any(conn, [account_id for _, trade in planned
                                      for account_id in (trade.base_sub_account_id, trade.quote_sub_account_id)])
    bookings = []
    for i, ((caller, _, event_id, _), (exchange_id, trade)) in enumerate(zip(entries, planned)):
        try:
            mine = ledger.owned(accounts, caller.id, [trade.base_sub_account_id, trade.quote_sub_account_id])
            legs = trades.checked_legs(trade, mine, exchange_id)
        except ApiError as error:
            raise ledger.Refused(i, error) from None
        bookings.append(ledger.Booking(legs, trading_log_id=uuid.uuid4(), event_id=event_id))
    booked = ledger.apply_many(conn, accounts, bookings)
    rows = [_values(caller, body, booking.trading_log_id, None, moved)
            for (caller, body, _, _), booking, moved in zip(entries, bookings, booked)]
    arrays = {column: [row.get(column) for row in rows] for column in _MANY_TYPES}
    arrays["trade"] = [None if trade is None else json.dumps(trade) for trade in arrays["trade"]]
    arrays["info"] = [json.dumps(info) for info in arrays["info"]]
    arrays["transaction_ids"] = ["{" + ",".join(map(str, ids)) + "}" for ids in arrays["transaction_ids"]]
    conn.execute(_insert_many, arrays)


# One statement of arrays for any number of logs (JSON and id lists travel as text and are cast in SQL).
_MANY_TYPES = {"id": UUID(as_uuid=True), "timestamp": sa.DateTime(timezone=True), "user_id": UUID(as_uuid=True),
               "exchange_id": UUID(as_uuid=True), "sub_account_id": UUID(as_uuid=True), "type": sa.Text,
               "source": sa.Text, "message": sa.Text, "trade": sa.Text, "amount": sa.Numeric,
               "event_time": sa.DateTime(timezone=True), "transaction_ids": sa.Text, "info": sa.Text}
_CASTS = {"trade": "::jsonb", "info": "::jsonb", "transaction_ids": "::uuid[]"}
_QUOTED = [f'"{column}"' for column in _MANY_TYPES]
_insert_many = sa.text(
    f"INSERT INTO trading_logs ({', '.join(_QUOTED)}) "
    f"SELECT {', '.join(quoted + _CASTS.get(column, '') for quoted, column in zip(_QUOTED, _MANY_TYPES))} "
    f"FROM unnest({', '.join(':' + column for column in _MANY_TYPES)}) AS u({', '.join(_QUOTED)})"
).bindparams(*(sa.bindparam(column, type_=ARRAY(kind)) for column, kind in _MANY_TYPES.items()))


def _trade(body: dict, fee_asset: str) -> trades.Trade:
    t = body["trade"]
    return trades.Trade(kind=body["type"], base_sub_account_id=uuid.UUID(t["base_sub_account_id"]),
                        quote_sub_account_id=uuid.UUID(t["quote_sub_account_id"]), volume=Decimal(t["volume"]),
                        price=Decimal(t["price"]), fee=Decimal(t["fee"]), symbol=t.get("symbol"), fee_asset=fee_asset)


def _values(caller: Caller, body: dict, log_id: uuid.UUID, sub_account_id, moved: list[dict]) -> dict:
    values = {
        "id": log_id, "user_id": caller.id, "exchange_id": uuid.UUID(body["exchange_id"]),
        "sub_account_id": sub_account_id, "type": body["type"], "source": body["source"], "message": body["message"],
        "trade": body.get("trade"), "amount": Decimal(body["amount"]) if "amount" in body else None,
        "event_time": dt.datetime.fromisoformat(body["event_time"]) if "event_time" in body else None,
        "transaction_ids": [row["id"] for row in moved], "info": body.get("info", {}),
    }
    if moved:  # the log and its transactions share one timestamp
        values["timestamp"] = moved[0]["timestamp"]
    return values


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
