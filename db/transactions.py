"""Reads of the ledger. Nothing here writes: transactions are created only by db.ledger.

A transaction's reversal links live in the `reversals` table (transactions are never updated): every read joins
them in, as `reverses_transaction_id` and `reversed_by_transaction_id`.
"""

import sqlalchemy as sa

from db import pagination
from db.access import Caller, readable_by
from db.schema import reversals, transactions
from db.errors import NotFound

_reversed, _reversing = reversals.alias("reversed"), reversals.alias("reversing")
WITH_LINKS = sa.select(transactions, _reversing.c.transaction_id.label("reverses_transaction_id"),
                       _reversed.c.reversed_by.label("reversed_by_transaction_id")).select_from(
    transactions.outerjoin(_reversed, _reversed.c.transaction_id == transactions.c.id)
    .outerjoin(_reversing, _reversing.c.reversed_by == transactions.c.id))


def get(conn: sa.Connection, caller: Caller, transaction_id: str) -> dict:
    row = conn.execute(WITH_LINKS.where(
        transactions.c.id == transaction_id, readable_by(transactions, caller))).mappings().first()
    if row is None:
        raise NotFound("Transaction not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None, user_id=None,
              sub_account_id=None, exchange_id=None, direction=None, reason=None, start_time=None,
              end_time=None) -> tuple[list[dict], str | None]:
    c = transactions.c
    query = WITH_LINKS.where(readable_by(transactions, caller, user_id))
    for column, value in ((c.sub_account_id, sub_account_id), (c.exchange_id, exchange_id),
                          (c.direction, direction), (c.reason, reason)):
        if value is not None:
            query = query.where(column == value)
    query = pagination.in_range(query, c.timestamp, start_time, end_time)
    return pagination.page(conn, query, c.timestamp, c.id, limit, cursor)
