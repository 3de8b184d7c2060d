"""The ledger: every balance change is a transaction row written in the same database transaction.

Invariants, kept here and by the table's CHECK constraints: balance = credits - debits; balance >= 0;
0 <= locked <= balance. Rows are locked with SELECT ... FOR UPDATE in id order, so two operations touching the same
sub-accounts queue instead of deadlocking; balances are updated relative to the locked row in SQL.
"""

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from db.schema import sub_accounts
from tiris.errors import ApiError, InsufficientBalance, NotFound, Unprocessable

# Enough digits for any product of two NUMERIC(38,18) values, so no intermediate result is rounded silently.
MONEY_CONTEXT = Context(prec=80)
QUANTUM = Decimal("1e-18")
LIMIT = Decimal("1e20")  # NUMERIC(38,18) holds 20 integer digits


def round_debit(value: Decimal) -> Decimal:
    """Debits round up: rounding never takes less from the user than the trade cost."""
    return value.quantize(QUANTUM, rounding=ROUND_CEILING, context=MONEY_CONTEXT)


def round_credit(value: Decimal) -> Decimal:
    """Credits round down: rounding never creates money."""
    return value.quantize(QUANTUM, rounding=ROUND_FLOOR, context=MONEY_CONTEXT)


@dataclass(frozen=True)
class Leg:
    sub_account_id: uuid.UUID
    direction: str  # "credit" | "debit"
    amount: Decimal
    reason: str
    price: Decimal | None = None
    quote_symbol: str | None = None
    fee: Decimal | None = None  # on a trade's leg: the fee this sub-account paid with it

    @property
    def delta(self) -> Decimal:
        return self.amount if self.direction == "credit" else self.amount.copy_negate()  # exact, no context


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    user_id: uuid.UUID
    exchange_id: uuid.UUID
    symbol: str
    balance: Decimal
    locked: Decimal


def lock(conn: sa.Connection, user_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, Account]:
    """Locks the user's live sub-accounts with these ids, in id order; a missing or foreign one is a 404."""
    accounts = lock_any(conn, ids, user_id)
    return owned(accounts, user_id, ids)


def lock_any(conn: sa.Connection, ids, user_id: uuid.UUID | None = None) -> dict[uuid.UUID, Account]:
    """Locks the live sub-accounts with these ids (of one user, if given) in one statement, in id order."""
    query = (sa.select(sub_accounts.c.id, sub_accounts.c.user_id, sub_accounts.c.exchange_id, sub_accounts.c.symbol,
                       sub_accounts.c.balance, sub_accounts.c.locked)
             .where(sub_accounts.c.id.in_(sorted(set(ids))), sub_accounts.c.deleted_at.is_(None))
             .order_by(sub_accounts.c.id).with_for_update())
    if user_id is not None:
        query = query.where(sub_accounts.c.user_id == user_id)
    return {row.id: Account(*row) for row in conn.execute(query)}


def owned(accounts: dict[uuid.UUID, Account], user_id: uuid.UUID, ids) -> dict[uuid.UUID, Account]:
    """The user's accounts among the locked ones; a missing or foreign one is a 404."""
    for account_id in sorted(set(ids)):
        if account_id not in accounts or accounts[account_id].user_id != user_id:
            raise NotFound("Sub-account not found.", details={"sub_account_id": str(account_id)})
    return {account_id: accounts[account_id] for account_id in ids}


_apply_deltas = sa.text(
    "UPDATE sub_accounts AS s SET balance = s.balance + d.delta, updated_at = clock_timestamp() "
    "FROM unnest(:ids, :deltas) AS d(id, delta) WHERE s.id = d.id "
    "RETURNING s.id, s.balance, clock_timestamp() AS at"
).bindparams(sa.bindparam("ids", type_=ARRAY(UUID(as_uuid=True))), sa.bindparam("deltas", type_=ARRAY(sa.Numeric)))


@dataclass(frozen=True)
class Booking:
    """One operation's legs and what its transactions point to."""
    legs: list[Leg]
    trading_log_id: uuid.UUID | None = None
    event_id: str | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Refused(Exception):
    """Booking number `index` of apply_many breaks a rule; nothing was written."""
    index: int
    error: ApiError


def apply_many(conn: sa.Connection, accounts: dict[uuid.UUID, Account], bookings: list[Booking]) -> list[list[dict]]:
    """Books several operations in order, with the rules and rows of one ledger.apply per booking, in two statements.

    Each booking sees the balances the earlier ones left. Its transactions get their own instant, one microsecond
    after the previous booking's, so listings ordered by time keep the order they were booked in. Raises Refused.
    """
    running = dict(accounts)
    closings = []
    with localcontext(MONEY_CONTEXT):
        for i, booking in enumerate(bookings):
            try:
                closing, per_leg_closing = _plan(running, booking.legs)
            except ApiError as error:
                raise Refused(i, error) from None
            running.update({account_id: replace(running[account_id], balance=balance)
                            for account_id, balance in closing.items()})
            closings.append(per_leg_closing)
        touched = {leg.sub_account_id for booking in bookings for leg in booking.legs}
        totals = {account_id: running[account_id].balance - accounts[account_id].balance for account_id in touched}
    if not touched:
        return [[] for _ in bookings]
    updated = conn.execute(_apply_deltas, {"ids": list(totals), "deltas": list(totals.values())}).all()
    for row in updated:
        if row.balance != running[row.id].balance:
            raise RuntimeError(f"ledger drift on sub-account {row.id}")
    when = updated[0].at
    booked = [[{
        "id": uuid.uuid4(), "timestamp": when + dt.timedelta(microseconds=i),
        "user_id": accounts[leg.sub_account_id].user_id, "exchange_id": accounts[leg.sub_account_id].exchange_id,
        "sub_account_id": leg.sub_account_id, "direction": leg.direction, "reason": leg.reason, "amount": leg.amount,
        "closing_balance": balance, "price": leg.price, "quote_symbol": leg.quote_symbol, "fee": leg.fee,
        "trading_log_id": booking.trading_log_id, "event_id": booking.event_id, "info": booking.info or {},
    } for leg, balance in zip(booking.legs, per_leg_closing)] for i, (booking, per_leg_closing) in
        enumerate(zip(bookings, closings))]
    rows = [row for rows in booked for row in rows]
    values = {column: [row[column] for row in rows] for column in _INSERT_COLUMNS}
    values["info"] = [json.dumps(info) for info in values["info"]]
    conn.execute(_insert_many, values)
    return booked


def apply(conn: sa.Connection, accounts: dict[uuid.UUID, Account], legs: list[Leg], *,
          trading_log_id: uuid.UUID | None = None, event_id: str | None = None, info: dict | None = None) -> list[dict]:
    """Checks, then books `legs` on the locked `accounts`; returns the transaction rows, in leg order.

    Raises InsufficientBalance (nothing written) when a debit would take an account below its locked amount.
    """
    try:
        [rows] = apply_many(conn, accounts, [Booking(legs, trading_log_id, event_id, info or {})])
    except Refused as refused:
        raise refused.error from None
    return rows


# One statement of arrays for any number of transactions: no per-row binds to compile, send and plan.
_INSERT_TYPES = {"id": UUID(as_uuid=True), "timestamp": sa.DateTime(timezone=True), "user_id": UUID(as_uuid=True),
                 "exchange_id": UUID(as_uuid=True), "sub_account_id": UUID(as_uuid=True), "direction": sa.Text,
                 "reason": sa.Text, "amount": sa.Numeric, "closing_balance": sa.Numeric, "price": sa.Numeric,
                 "quote_symbol": sa.Text, "fee": sa.Numeric, "trading_log_id": UUID(as_uuid=True),
                 "event_id": sa.Text, "info": sa.Text}  # info: JSON text, cast to jsonb in SQL
_INSERT_COLUMNS = list(_INSERT_TYPES)
_COLUMN_LIST = ", ".join(f'"{column}"' for column in _INSERT_COLUMNS)
_INFO = '"info"'
_insert_many = sa.text(
    f"INSERT INTO transactions ({_COLUMN_LIST}) "
    f"SELECT {_COLUMN_LIST.replace(_INFO, _INFO + '::jsonb')} "
    f"FROM unnest({', '.join(':' + c for c in _INSERT_COLUMNS)}) AS u({_COLUMN_LIST})"
).bindparams(*(sa.bindparam(column, type_=ARRAY(kind)) for column, kind in _INSERT_TYPES.items()))


def _plan(accounts: dict[uuid.UUID, Account], legs: list[Leg]):
    """The closing balance of each account and after each leg; refuses what breaks a rule."""
    closing: dict[uuid.UUID, Decimal] = {}
    per_leg_closing = []
    for leg in legs:
        if leg.amount <= 0:
            raise Unprocessable("Amounts must be greater than zero.", code="AMOUNT_NOT_POSITIVE")
        account = accounts[leg.sub_account_id]
        before = closing.get(account.id, account.balance)
        after = before + leg.delta
        if after < account.locked:
            raise InsufficientBalance(details={"sub_account_id": str(account.id), "available": before - account.locked,
                                               "required": leg.amount})
        if after >= LIMIT:
            raise Unprocessable("The balance would exceed the largest amount the ledger holds (10^20).",
                                code="AMOUNT_OUT_OF_RANGE", details={"sub_account_id": str(account.id)})
        closing[account.id] = after
        per_leg_closing.append(after)
    return closing, per_leg_closing
