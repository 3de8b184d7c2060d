"""The one booking entry point: `book` carries out one entry or a thousand, for one user or many.

Both doors come here: the HTTP door with a list of one (`book_one` raises its refusal), the event door with a
batch. In a fixed number of statements whatever the batch size, it reads the exchanges named, locks every
sub-account named (in id order), checks each entry against what it names (the user's? on this exchange? these
symbols?), plans its legs on the balances the earlier entries left, and writes what was planned: one balance
update, one insert of transactions, one of trading logs. A refused entry changes nothing and is reported in its
place, so the entries after it see the balances as if it had never come; nothing else here writes ledger rows.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

import sqlalchemy as sa

from db import bots, ledger, legs, reversals, trading_logs
from db.commands import Adjustment, BotSeen, Entry, LockChange, OrderReference, Reversal, Trade, Transfer
from db.errors import DomainError, NotFound, Refused
from db.legs import Account, Leg
from db.schema import exchanges


@dataclass(frozen=True)
class Booked:
    transactions: list[dict]
    log: dict | None
    drift: Decimal = Decimal(0)  # an adjustment's: the exchange's previous balance minus ours


@dataclass(frozen=True)
class Rejected:
    error: DomainError


Outcome = Booked | Rejected


@dataclass
class Plan:
    """What one entry will write, worked out on the balances the entries before it left (pure: no database)."""
    legs: list[tuple[Leg, Decimal]] = field(default_factory=list)  # each leg with its closing balance
    locked: dict[uuid.UUID, Decimal] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    drift: Decimal = Decimal(0)
    bot: BotSeen | None = None
    reverses: list[uuid.UUID] = field(default_factory=list)  # a reversal's: the transaction each leg reverses


def book(conn: sa.Connection, entries: list[Entry]) -> list[Outcome]:
    """Books the entries in order; returns each one's outcome, in the same order."""
    owners = _exchange_owners(conn, entries)
    originals = reversals.read(conn, entries)
    before = ledger.lock_accounts(conn, {account_id for entry in entries for account_id in _accounts_named(entry)}
                                 | reversals.accounts(originals))
    originals = reversals.linked(conn, originals)  # under the locks: reversals committed meanwhile are seen
    state = dict(before)
    plans: list[Plan | DomainError] = []
    for entry in entries:
        try:
            plan = plan_entry(entry, state, owners, originals)
        except DomainError as error:
            plans.append(error)
            continue
        for leg, closing in plan.legs:
            state[leg.sub_account_id] = replace(state[leg.sub_account_id], balance=closing)
        for account_id, locked in plan.locked.items():
            state[account_id] = replace(state[account_id], locked=locked)
        plans.append(plan)
    when = ledger.write_balances(conn, before, state)

    outcomes: list[Outcome] = []
    transactions, logs, links = [], [], []
    for i, (entry, plan) in enumerate(zip(entries, plans)):
        if isinstance(plan, DomainError):
            outcomes.append(Rejected(plan))
            continue
        at = when + dt.timedelta(microseconds=i)  # each entry its own instant: listings keep the booking order
        log_id = uuid.uuid4() if entry.log else None
        moved = [ledger.transaction_row(state[leg.sub_account_id], leg, closing, at, trading_log_id=log_id,
                                        event_id=entry.event_id, info=plan.info) for leg, closing in plan.legs]
        log = trading_logs.log_row(entry.user_id, entry.log, log_id, at, moved) if entry.log else None
        transactions += moved
        links += zip(plan.reverses, moved)
        logs += [log] if log else []
        if plan.bot:
            bots.seen(conn, entry.user_id, plan.bot, entry.event_id)
        outcomes.append(Booked(moved, log, plan.drift))
    ledger.write_transactions(conn, transactions)
    trading_logs.insert(conn, logs)
    reversals.write(conn, links)
    return outcomes


def book_one(conn: sa.Connection, entry: Entry) -> Booked:
    """Books one entry; raises its refusal."""
    [outcome] = book(conn, [entry])
    if isinstance(outcome, Rejected):
        raise outcome.error
    return outcome


def _exchange_owners(conn: sa.Connection, entries: list[Entry]) -> dict[uuid.UUID, uuid.UUID]:
    named = {exchange_id for entry in entries for exchange_id in (
        getattr(entry.command, "exchange_id", None), entry.log.exchange_id if entry.log else None) if exchange_id}
    if not named:
        return {}
    return dict(conn.execute(sa.select(exchanges.c.id, exchanges.c.user_id).where(
        exchanges.c.id.in_(named), exchanges.c.deleted_at.is_(None))).all())


def _accounts_named(entry: Entry) -> list[uuid.UUID]:
    command = entry.command
    named = [entry.log.sub_account_id] if entry.log and entry.log.sub_account_id else []
    if isinstance(command, (Trade, OrderReference)):
        named += [command.base_sub_account_id, command.quote_sub_account_id]
    elif isinstance(command, (Transfer, Adjustment, LockChange)):
        named.append(command.sub_account_id)
    return named


def plan_entry(entry: Entry, state: dict[uuid.UUID, Account], owners: dict[uuid.UUID, uuid.UUID],
               originals: dict[uuid.UUID, tuple[reversals.Original, ...]] | None = None) -> Plan:
    """What the entry books, checked against what it names; raises its refusal (nothing planned then).
    `originals` are the booked legs that reversals name (reversals.read), with their links."""
    user, command, plan = entry.user_id, entry.command, Plan()
    if entry.log:
        _check_exchange(owners, entry.log.exchange_id, user)
        if entry.log.sub_account_id:
            _owned(state, entry.log.sub_account_id, user)
    if isinstance(command, Transfer):
        account = _owned(state, command.sub_account_id, user)
        if command.exchange_id is not None:
            _check_on_exchange([account], command.exchange_id)
        plan_legs = [Leg(account.id, command.direction, command.amount, command.reason)]
        plan.info = command.info
    elif isinstance(command, Trade):
        base, quote = _pair(state, owners, user, command)
        plan_legs = legs.trade_legs(command, quote.symbol)
    elif isinstance(command, Adjustment):
        account = _owned_as_named(state, owners, user, command)
        plan_legs = legs.adjustment_legs(command, account.balance)
        with localcontext(legs.MONEY_CONTEXT):
            plan.drift = command.reported_previous_balance - account.balance
        plan.info = {"reported_previous_balance": str(command.reported_previous_balance), "drift": str(plan.drift)}
    elif isinstance(command, LockChange):
        account = _owned_as_named(state, owners, user, command)
        plan.locked[account.id] = legs.locked_after(command, account)
        plan_legs = []
    elif isinstance(command, OrderReference):
        _pair(state, owners, user, command)
        plan_legs = []
    elif isinstance(command, BotSeen):
        _check_exchange(owners, command.exchange_id, user)
        plan.bot = command
        plan_legs = []
    elif isinstance(command, Reversal):
        undone = reversals.to_reverse(command, originals or {}, user)
        for leg in undone:
            _owned(state, leg.sub_account_id, user)
        plan_legs = reversals.opposite_legs(undone)
        plan.reverses = [leg.id for leg in undone]
        plan.info = reversals.leg_info(command)
    else:
        plan_legs = []
    plan.legs = list(zip(plan_legs, legs.closing_balances(state, plan_legs)))
    return plan


def _check_exchange(owners: dict[uuid.UUID, uuid.UUID], exchange_id: uuid.UUID, user: uuid.UUID) -> None:
    if owners.get(exchange_id) != user:
        raise NotFound("Exchange not found.", details={"exchange_id": str(exchange_id)})


def _owned(state: dict[uuid.UUID, Account], account_id: uuid.UUID, user: uuid.UUID) -> Account:
    account = state.get(account_id)
    if account is None or account.user_id != user:  # missing, deleted and someone else's look the same
        raise NotFound("Sub-account not found.", details={"sub_account_id": str(account_id)})
    return account


def _check_on_exchange(accounts: list[Account], exchange_id: uuid.UUID) -> None:
    if any(account.exchange_id != exchange_id for account in accounts):
        raise NotFound("Sub-account not found on this exchange.", details={"exchange_id": str(exchange_id)})


def _pair(state, owners, user: uuid.UUID, command: Trade | OrderReference) -> tuple[Account, Account]:
    """The base and quote sub-accounts a trade or an order names, checked: the user's, two of them, on the
    exchange, with the pair's symbols."""
    _check_exchange(owners, command.exchange_id, user)
    if command.base_sub_account_id == command.quote_sub_account_id:
        raise Refused("A trade needs two different sub-accounts.", code="SAME_SUB_ACCOUNT")
    base = _owned(state, command.base_sub_account_id, user)
    quote = _owned(state, command.quote_sub_account_id, user)
    _check_on_exchange([base, quote], command.exchange_id)
    expected = f"{base.symbol}/{quote.symbol}"
    if command.symbol is not None and command.symbol != expected:
        raise Refused(f"The symbol {command.symbol} does not match the sub-accounts ({expected}).",
                      code="SYMBOL_MISMATCH")
    return base, quote


def _owned_as_named(state, owners, user: uuid.UUID, command: Adjustment | LockChange) -> Account:
    """The sub-account a balance event names, on the exchange and with the symbol it names."""
    _check_exchange(owners, command.exchange_id, user)
    account = _owned(state, command.sub_account_id, user)
    if account.exchange_id != command.exchange_id or account.symbol != command.symbol:
        raise NotFound("Sub-account not found with this exchange and symbol.",
                       details={"sub_account_id": str(account.id)})
    return account
