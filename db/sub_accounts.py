"""Sub-accounts: per-asset balances within an exchange. Balances change only through db/booking.py."""

import uuid
from decimal import Decimal

import sqlalchemy as sa

from db import booking, pagination
from db.access import Caller, readable_by
from db.commands import Entry, Transfer
from db.errors import Conflict, NotFound
from db.schema import exchanges, sub_accounts

PUBLIC_COLUMNS = [*(sub_accounts.c[name] for name in (
    "id", "user_id", "exchange_id", "name", "symbol", "balance", "locked", "info", "created_at", "updated_at")),
    (sub_accounts.c.balance - sub_accounts.c.locked).label("available")]
LIVE = sub_accounts.c.deleted_at.is_(None)


def _check_name_free(conn: sa.Connection, exchange_id, name: str, exclude=None) -> None:
    query = sa.select(sub_accounts.c.id).where(sub_accounts.c.exchange_id == exchange_id,
                                               sub_accounts.c.name == name, LIVE)
    if exclude is not None:
        query = query.where(sub_accounts.c.id != exclude)
    if conn.execute(query).first():
        raise Conflict("This exchange already has a sub-account with this name.", code="DUPLICATE_NAME")


def create(conn: sa.Connection, caller: Caller, *, exchange_id: uuid.UUID, name: str, symbol: str,
           opening_balance: Decimal, info: dict) -> dict:
    exchange = conn.execute(sa.select(exchanges.c.id).where(
        exchanges.c.id == exchange_id, exchanges.c.user_id == caller.id,
        exchanges.c.deleted_at.is_(None)).with_for_update()).first()  # a concurrent delete of the exchange waits
    if exchange is None:
        raise NotFound("Exchange not found.")
    _check_name_free(conn, exchange.id, name)
    new_id = conn.execute(sa.insert(sub_accounts).values(
        user_id=caller.id, exchange_id=exchange.id, name=name, symbol=symbol, info=info)
        .returning(sub_accounts.c.id)).scalar_one()
    if opening_balance > 0:  # nothing sets a balance without a transaction: the initial balance is an opening credit
        booking.book_one(conn, Entry(caller.id, Transfer(new_id, "credit", opening_balance, "opening_balance")))
    return get(conn, caller, new_id)


def get(conn: sa.Connection, caller: Caller, sub_account_id) -> dict:
    row = conn.execute(sa.select(*PUBLIC_COLUMNS).where(
        sub_accounts.c.id == sub_account_id, LIVE, readable_by(sub_accounts, caller))).mappings().first()
    if row is None:
        raise NotFound("Sub-account not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None, user_id: str | None = None,
              exchange_id: str | None = None, symbol: str | None = None) -> tuple[list[dict], str | None]:
    query = sa.select(*PUBLIC_COLUMNS).where(LIVE, readable_by(sub_accounts, caller, user_id))
    if exchange_id:
        query = query.where(sub_accounts.c.exchange_id == exchange_id)
    if symbol:
        query = query.where(sub_accounts.c.symbol == symbol)
    return pagination.page(conn, query, sub_accounts.c.created_at, sub_accounts.c.id, limit, cursor)


def update(conn: sa.Connection, caller: Caller, sub_account_id, *, name: str | None = None,
           info: dict | None = None) -> dict:
    """Changes what is given (None: unchanged)."""
    owned = sa.and_(sub_accounts.c.id == sub_account_id, sub_accounts.c.user_id == caller.id, LIVE)
    row = conn.execute(sa.select(sub_accounts.c.exchange_id).where(owned).with_for_update()).first()
    if row is None:
        raise NotFound("Sub-account not found.")
    if name is not None:
        _check_name_free(conn, row.exchange_id, name, exclude=uuid.UUID(str(sub_account_id)))
    values = {k: v for k, v in (("name", name), ("info", info)) if v is not None}
    return dict(conn.execute(sa.update(sub_accounts).where(owned).values(**values, updated_at=sa.func.now())
                             .returning(*PUBLIC_COLUMNS)).mappings().one())


def delete(conn: sa.Connection, caller: Caller, sub_account_id) -> None:
    owned = sa.and_(sub_accounts.c.id == sub_account_id, sub_accounts.c.user_id == caller.id, LIVE)
    row = conn.execute(sa.select(sub_accounts.c.balance).where(owned).with_for_update()).first()
    if row is None:
        raise NotFound("Sub-account not found.")
    if row.balance != 0:
        raise Conflict("A sub-account can be deleted only when its balance is 0.", code="SUB_ACCOUNT_HAS_BALANCE",
                       details={"balance": row.balance})
    conn.execute(sa.update(sub_accounts).where(owned).values(deleted_at=sa.func.now(), updated_at=sa.func.now()))
