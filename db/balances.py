"""Balances at an instant, from the ledger's closing-balance chain: every transaction carries its sub-account's
balance after it, so the balance at any instant is the last one before it, one step of the (sub_account_id,
timestamp) index. Where old transactions were archived (TimescaleDB, db/checkpoints.py), the balance checkpoint
recorded before they went stands in for them: a checkpoint at `as_of` holds the balance of every transaction
before `as_of`, so the later of the two is the balance; on a tie the transaction, which the checkpoint does not
include, is the later.
"""

import datetime as dt

import sqlalchemy as sa

from db import pagination, sub_accounts
from db.access import Caller, readable_by
from db.schema import MONEY, balance_checkpoints, sub_accounts as accounts, transactions

ZERO = sa.cast(0, MONEY)  # written like every other balance: 0.000000000000000000


def known_balance(sub_account_id, at, *, inclusive: bool) -> sa.ScalarSelect:
    """The balance of the sub-account at `at` (a column or a value): after the transactions at or before it
    (`inclusive`) or strictly before it; NULL before the first one."""
    t, c = transactions.c, balance_checkpoints.c
    last_row = (sa.select(t.timestamp.label("at"), sa.literal(0).label("rank"), t.closing_balance.label("balance"))
                .where(t.sub_account_id == sub_account_id, t.timestamp <= at if inclusive else t.timestamp < at)
                .order_by(t.timestamp.desc()).limit(1).correlate(accounts))
    checkpoint = (sa.select(c.as_of, sa.literal(1), c.balance)
                  .where(c.sub_account_id == sub_account_id, c.as_of <= at)
                  .order_by(c.as_of.desc()).limit(1).correlate(accounts))
    known = sa.union_all(last_row.subquery().select(), checkpoint.subquery().select()).subquery("known")
    return sa.select(known.c.balance).order_by(known.c.at.desc(), known.c.rank).limit(1).scalar_subquery()


def _instant(at: str | None):
    return pagination.query_time("at", at) or sa.func.now()


def _balances(at) -> list:
    moment = sa.cast(at, sa.DateTime(timezone=True)) if isinstance(at, dt.datetime) else at
    return [accounts.c.id, accounts.c.id.label("sub_account_id"), accounts.c.exchange_id, accounts.c.symbol,
            moment.label("at"),
            sa.func.coalesce(known_balance(accounts.c.id, moment, inclusive=True), ZERO).label("balance")]


def get(conn: sa.Connection, caller: Caller, sub_account_id, at: str | None) -> dict:
    """The sub-account's balance at `at` (RFC 3339; now when None)."""
    account = sub_accounts.get(conn, caller, sub_account_id)  # 404 unless live and readable
    return _public(conn.execute(sa.select(*_balances(_instant(at))).where(accounts.c.id == account["id"]))
                   .mappings().one())


def list_page(conn: sa.Connection, caller: Caller, *, at: str | None, limit: int, cursor: str | None, user_id=None,
              exchange_id=None, symbol=None) -> tuple[list[dict], str | None]:
    """The balance at `at` of each live sub-account the caller may read, in the order of the sub-accounts' list."""
    query = sa.select(*_balances(_instant(at)), accounts.c.created_at).where(
        sub_accounts.LIVE, readable_by(accounts, caller, user_id))
    for column, value in ((accounts.c.exchange_id, exchange_id), (accounts.c.symbol, symbol)):
        if value is not None:
            query = query.where(column == value)
    rows, next_cursor = pagination.page(conn, query, accounts.c.created_at, accounts.c.id, limit, cursor)
    return [_public(row) for row in rows], next_cursor


def _public(row) -> dict:
    return {key: value for key, value in row.items() if key not in ("id", "created_at")}
