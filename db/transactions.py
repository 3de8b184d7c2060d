"""Reads of the ledger. Nothing here writes: transactions are created only by db.ledger."""

import sqlalchemy as sa

from db import pagination
from db.access import Caller, readable_by
from db.schema import transactions
from db.errors import NotFound


def get(conn: sa.Connection, caller: Caller, transaction_id: str) -> dict:
    row = conn.execute(sa.select(transactions).where(
        transactions.c.id == transaction_id, readable_by(transactions, caller))).mappings().first()
    if row is None:
        raise NotFound("Transaction not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None, user_id=None,
              sub_account_id=None, exchange_id=None, direction=None, reason=None, start_time=None,
              end_time=None) -> tuple[list[dict], str | None]:
    c = transactions.c
    query = sa.select(transactions).where(readable_by(transactions, caller, user_id))
    for column, value in ((c.sub_account_id, sub_account_id), (c.exchange_id, exchange_id),
                          (c.direction, direction), (c.reason, reason)):
        if value is not None:
            query = query.where(column == value)
    query = pagination.in_range(query, c.timestamp, start_time, end_time)
    return pagination.page(conn, query, c.timestamp, c.id, limit, cursor)
