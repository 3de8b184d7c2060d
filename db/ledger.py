"""The ledger's rows: sub-accounts locked for a booking, their new balances and locks, and the transactions that
explain every balance change. Only db/booking.py calls the writers here.

Invariants, kept by db/legs.py and by the tables' CHECK constraints: balance = credits - debits; balance >= 0;
0 <= locked <= balance. Rows are locked with SELECT ... FOR UPDATE in id order, so two bookings touching the same
sub-accounts queue instead of deadlocking; balances move relative to the locked row, in SQL.
"""

import datetime as dt
import uuid
from decimal import Decimal, localcontext

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine, ids
from db.legs import MONEY_CONTEXT, Account, Leg
from db.schema import sub_accounts, transactions


def locking_accounts(ids) -> engine.Read:
    """Locks the live sub-accounts with these ids (anyone's: the caller checks ownership), in id order."""
    if not ids:
        return engine.nothing({})
    return engine.Read(_lock_accounts, {"ids": list(set(ids))}, lambda rows: {row.id: Account(*row) for row in rows})


_lock_accounts = (
    sa.select(sub_accounts.c.id, sub_accounts.c.user_id, sub_accounts.c.exchange_id, sub_accounts.c.symbol,
              sub_accounts.c.balance, sub_accounts.c.locked)
    .where(bulk.among_bound(sub_accounts.c.id, "ids"), sub_accounts.c.deleted_at.is_(None))
    .order_by(sub_accounts.c.id).with_for_update())


_write_balances = sa.text(
    "UPDATE sub_accounts AS s SET balance = s.balance + d.delta, locked = s.locked + d.locked_delta, "
    "updated_at = clock_timestamp() "
    "FROM unnest(:ids, :deltas, :locked_deltas) AS d(id, delta, locked_delta) WHERE s.id = d.id "
    "RETURNING s.id, s.balance, s.locked, clock_timestamp() AS at"
).bindparams(sa.bindparam("ids", type_=bulk.Array(UUID(as_uuid=True))), sa.bindparam("deltas", type_=bulk.Array(sa.Numeric())),
             sa.bindparam("locked_deltas", type_=bulk.Array(sa.Numeric())))


def write_balances(conn: sa.Connection, before: dict[uuid.UUID, Account], after: dict[uuid.UUID, Account]) -> dt.datetime:
    """Brings the locked rows from `before` to `after` in one statement; returns the instant of the change.

    The database adds the differences to the rows it holds locked, and must arrive where the plan did.
    """
    changed = [account_id for account_id, account in after.items()
               if (account.balance, account.locked) != (before[account_id].balance, before[account_id].locked)]
    if not changed:
        return conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
    with localcontext(MONEY_CONTEXT):
        deltas = [after[i].balance - before[i].balance for i in changed]
        locked_deltas = [after[i].locked - before[i].locked for i in changed]
    rows = conn.execute(_write_balances, {"ids": changed, "deltas": deltas, "locked_deltas": locked_deltas}).all()
    for row in rows:
        if (row.balance, row.locked) != (after[row.id].balance, after[row.id].locked):
            raise RuntimeError(f"ledger drift on sub-account {row.id}")
    return rows[0].at


def write_transactions(conn: sa.Connection, rows: list[dict]) -> None:
    bulk.insert(conn, transactions, rows)


def transaction_row(account: Account, leg: Leg, closing_balance: Decimal, when: dt.datetime, *,
                    trading_log_id: uuid.UUID | None, event_id: str | None, info: dict) -> dict:
    return {"id": ids.new_id(), "timestamp": when, "user_id": account.user_id, "exchange_id": account.exchange_id,
            "sub_account_id": leg.sub_account_id, "direction": leg.direction, "reason": leg.reason,
            "amount": leg.amount, "closing_balance": closing_balance, "price": leg.price,
            "quote_symbol": leg.quote_symbol, "fee": leg.fee, "trading_log_id": trading_log_id, "event_id": event_id,
            "info": info}
