"""The one booking entry point: `book` carries out one entry or a thousand, for one user or many.

Both doors come here: the HTTP door with a list of one (`book_one` raises its refusal), the event door with a batch.
In a fixed number of statements whatever the batch size, it serializes on the orders named, locks every sub-account
named (in id order), the orders and then the orders' and sub-accounts' holds, and reads the exchanges named and the
sub-accounts' positions (sent together: one round trip, db/engine.py: read_at_once), checks each entry against what
it names (the user's? on this exchange? these symbols? this order's state?), plans it on the rows as the earlier
entries left them, and writes what was planned: one balance update, then, sent as one pipeline (the server carries
out each statement while the next is built), one insert of transactions, one of trading logs, one of orders, one of
holds, one of reversal links, the portfolio's figures (db/positions.py) and the user's live feed (db/feed.py). A
refused entry changes nothing and is reported in its place, so the entries after it see the rows as if it had never
come; nothing else writes ledger rows.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

import sqlalchemy as sa

from db import bots, bulk, engine, feed, holds, ids, ledger, legs, orders, positions, reversals, trading_logs
from db.commands import Adjustment, BotSeen, Entry, HoldExpiry, LockChange, OrderChange, Reversal, Trade, Transfer
from db.errors import Conflict, DomainError, NotFound, Refused
from db.holds import Hold, OrderKey
from db.legs import Account, Leg
from db.orders import OrderRow
from db.schema import exchanges
from generated.models import OrderSide


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
class Book:
    """The rows a batch works on, locked, as the entries planned so far left them."""
    accounts: dict[uuid.UUID, Account]
    owners: dict[uuid.UUID, uuid.UUID]  # exchange id -> its user
    orders: dict[OrderKey, OrderRow] = field(default_factory=dict)
    holds: dict[uuid.UUID, Hold] = field(default_factory=dict)
    originals: dict[uuid.UUID, tuple[reversals.Original, ...]] = field(default_factory=dict)  # what reversals name

    def __post_init__(self):
        self._of_order: dict[OrderKey, list[uuid.UUID]] = {}  # an order's holds, one per sub-account
        for hold in self.holds.values():
            self._index(hold)

    def _index(self, hold: Hold) -> None:
        if hold.key is not None and hold.id not in self._of_order.setdefault(hold.key, []):
            self._of_order[hold.key].append(hold.id)

    def put(self, hold: Hold) -> None:
        self.holds[hold.id] = hold
        self._index(hold)

    def hold_of(self, key: OrderKey, account_id: uuid.UUID) -> Hold | None:
        return next((self.holds[i] for i in self._of_order.get(key, ()) if self.holds[i].sub_account_id == account_id),
                    None)

    def open_holds(self, key: OrderKey) -> list[Hold]:
        return [self.holds[i] for i in self._of_order.get(key, ()) if self.holds[i].is_open]


@dataclass
class Plan:
    """What one entry will write, worked out on the rows the entries before it left (pure: no database)."""
    legs: list[tuple[Leg, Decimal]] = field(default_factory=list)  # each leg with its closing balance
    holds: dict[uuid.UUID, Hold] = field(default_factory=dict)  # the holds it opens or changes
    orders: dict[OrderKey, OrderRow] = field(default_factory=dict)
    filled: OrderKey | None = None  # the order a fill moved on, which records the transactions it books
    info: dict = field(default_factory=dict)
    drift: Decimal = Decimal(0)
    bot: BotSeen | None = None
    reverses: list[uuid.UUID] = field(default_factory=list)  # a reversal's: the transaction each leg reverses


def book(conn: sa.Connection, entries: list[Entry]) -> list[Outcome]:
    """Books the entries in order; returns each one's outcome, in the same order."""
    keys = {key for entry in entries for key in _orders_named(entry)}
    originals = reversals.read(conn, entries)  # only a reversal's batch reads anything here
    named = {account_id for entry in entries for account_id in _accounts_named(entry)} | reversals.accounts(originals)
    _, accounts, found_orders, found_holds, owners, *positioned = engine.read_at_once(conn, [  # one round trip:
        orders.serializing(keys),  # the orders' advisory locks first, then the rows
        ledger.locking_accounts(named),
        orders.locking(keys),
        holds.locking(keys=keys, orderless_on=_orderless_releases(entries), ids={
            entry.command.hold_id for entry in entries if isinstance(entry.command, HoldExpiry)}),
        _owners_named(entries),
        positions.reading(named),  # after the sub-accounts' locks: only a booking that holds them writes these
        positions.reading_effects({leg.id for legs in originals.values() for leg in legs})])
    originals = reversals.linked(conn, originals)  # under the locks: reversals committed meanwhile are seen
    known_orders = set(found_orders)  # the plan adds the new ones to the book
    state = Book(dict(accounts), owners, found_orders, found_holds, originals)

    plans: list[Plan | DomainError] = []
    for entry in entries:
        try:
            plan = plan_entry(entry, state)
        except DomainError as error:
            plans.append(error)
            continue
        _apply(state, plan)
        plans.append(plan)
    when = ledger.write_balances(conn, accounts, state.accounts)

    outcomes: list[Outcome] = []
    transactions, logs, links, beats = [], [], [], []
    fill_transactions: dict[OrderKey, list[uuid.UUID]] = {}  # per order, what its fills in this batch booked
    changed_orders: dict[OrderKey, OrderRow] = {}
    changed_holds: dict[uuid.UUID, Hold] = {}
    for i, (entry, plan) in enumerate(zip(entries, plans)):
        if isinstance(plan, DomainError):
            outcomes.append(Rejected(plan))
            continue
        at = when + dt.timedelta(microseconds=i)  # each entry its own instant: listings keep the booking order
        log_id = ids.new_id() if entry.log else None
        moved = [ledger.transaction_row(state.accounts[leg.sub_account_id], leg, closing, at,
                                        trading_log_id=log_id, event_id=entry.event_id, info=plan.info)
                 for leg, closing in plan.legs]
        log = trading_logs.log_row(entry.user_id, entry.log, log_id, at, moved) if entry.log else None
        transactions += moved
        links += zip(plan.reverses, moved)
        logs += [log] if log else []
        if plan.filled:
            fill_transactions.setdefault(plan.filled, []).extend(t["id"] for t in moved)
        changed_orders.update({key: state.orders[key] for key in plan.orders})
        changed_holds.update({hold_id: state.holds[hold_id] for hold_id in plan.holds})
        if plan.bot and (beat := bots.seen(conn, entry.user_id, plan.bot, entry.event_id)):
            beats.append(beat)
        outcomes.append(Booked(moved, log, plan.drift))
    with engine.pipelined(conn):  # from here on only writes: the server carries out each while the next is built
        ledger.write_transactions(conn, transactions)
        trading_logs.insert(conn, logs)
        orders.write(conn, changed_orders, known_orders, fill_transactions, when)
        holds.write(conn, list(changed_holds.values()), when)
        reversals.write(conn, links)
        positions.apply(conn, entries, outcomes, state.accounts, positioned)  # the portfolio's figures
        feed.booked(conn, transactions, logs, links, changed_holds.values(), beats, when,  # the live feed (an outbox)
                    order_ids=[row.id for row in changed_orders.values()],
                    account_ids=[i for i, account in state.accounts.items() if account != accounts[i]])
    return outcomes


def book_one(conn: sa.Connection, entry: Entry) -> Booked:
    """Books one entry; raises its refusal."""
    [outcome] = book(conn, [entry])
    if isinstance(outcome, Rejected):
        raise outcome.error
    return outcome


def _apply(state: Book, plan: Plan) -> None:
    """The planned entry's rows become the state the next entries see."""
    for leg, closing in plan.legs:
        state.accounts[leg.sub_account_id] = state.accounts[leg.sub_account_id].with_balance(closing)
    for hold in plan.holds.values():
        state.accounts[hold.sub_account_id] = _holding(state.accounts[hold.sub_account_id], hold, state)
        state.put(hold)
    state.orders.update(plan.orders)


def _holding(account: Account, hold: Hold, state: Book) -> Account:
    """The account with `locked` moved by what the hold holds now instead of before (`locked` = its open holds)."""
    before = state.holds.get(hold.id)
    with localcontext(legs.MONEY_CONTEXT):
        return replace(account, locked=account.locked + hold.held - (before.held if before else 0))


def _owners_named(entries: list[Entry]) -> engine.Read:
    """Each exchange the entries name, with its user."""
    named = {exchange_id for entry in entries for exchange_id in (
        _exchange_of(entry.command), entry.log.exchange_id if entry.log else None) if exchange_id}
    if not named:
        return engine.nothing({})
    return engine.Read(_owners, {"ids": list(named)}, dict)


_owners = sa.select(exchanges.c.id, exchanges.c.user_id).where(bulk.among_bound(exchanges.c.id, "ids"),
                                                               exchanges.c.deleted_at.is_(None))


def _exchange_of(command) -> uuid.UUID | None:
    if isinstance(command, OrderChange):
        return command.order.exchange_id
    return getattr(command, "exchange_id", None)


def _accounts_named(entry: Entry) -> list[uuid.UUID]:
    command = entry.command
    named = [entry.log.sub_account_id] if entry.log and entry.log.sub_account_id else []
    if isinstance(command, OrderChange):
        command = command.order
    if hasattr(command, "base_sub_account_id"):
        named += [command.base_sub_account_id, command.quote_sub_account_id]
    elif hasattr(command, "sub_account_id"):
        named.append(command.sub_account_id)
    return named


def _orders_named(entry: Entry) -> list[OrderKey]:
    command = entry.command
    if isinstance(command, OrderChange):
        return [orders.key_of(entry.user_id, command.order)]
    if isinstance(command, Trade) and command.fill:
        return [orders.key_of(entry.user_id, command.fill.order)]
    if isinstance(command, LockChange) and command.order_id is not None:
        return [(entry.user_id, command.exchange_id, command.order_id)]
    return []


def _orderless_releases(entries: list[Entry]) -> set[uuid.UUID]:
    return {entry.command.sub_account_id for entry in entries if isinstance(entry.command, LockChange)
            and not entry.command.locking and entry.command.order_id is None}


def plan_entry(entry: Entry, state: Book) -> Plan:
    """What the entry books, checked against what it names; raises its refusal (nothing planned then)."""
    user, command, plan = entry.user_id, entry.command, Plan()
    accounts, owners = state.accounts, state.owners
    if entry.log:
        _check_exchange(owners, entry.log.exchange_id, user)
        if entry.log.sub_account_id:
            _owned(accounts, entry.log.sub_account_id, user)
    if isinstance(command, Transfer):
        account = _owned(accounts, command.sub_account_id, user)
        if command.exchange_id is not None:
            _check_on_exchange([account], command.exchange_id)
        plan_legs = [Leg(account.id, command.direction, command.amount, command.reason)]
        plan.info = command.info
    elif isinstance(command, Trade):
        base, quote = _pair(accounts, owners, user, command)
        plan_legs = legs.trade_legs(command, quote.symbol)
        if command.fill:
            _plan_fill(state, user, command, plan)
    elif isinstance(command, Adjustment):
        account = _owned_as_named(accounts, owners, user, command)
        plan_legs = legs.adjustment_legs(command, account.balance)
        with localcontext(legs.MONEY_CONTEXT):
            plan.drift = command.reported_previous_balance - account.balance
        plan.info = {"reported_previous_balance": str(command.reported_previous_balance), "drift": str(plan.drift)}
    elif isinstance(command, LockChange):
        _plan_lock_change(state, user, command, plan)
        plan_legs = []
    elif isinstance(command, OrderChange):
        _pair(accounts, owners, user, command.order)
        _plan_order_change(state, user, command, plan)
        plan_legs = []
    elif isinstance(command, HoldExpiry):
        hold = state.holds.get(command.hold_id)
        if hold is None or hold.user_id != user:
            raise NotFound("Hold not found.", code="HOLD_NOT_FOUND", details={"hold_id": str(command.hold_id)})
        plan.holds[hold.id] = holds.released(hold, status="expired")
        plan_legs = []
    elif isinstance(command, BotSeen):
        _check_exchange(owners, command.exchange_id, user)
        plan.bot = command
        plan_legs = []
    elif isinstance(command, Reversal):
        undone = reversals.to_reverse(command, state.originals, user)
        for leg in undone:
            _owned(accounts, leg.sub_account_id, user)
        plan_legs = reversals.opposite_legs(undone)
        plan.reverses = [leg.id for leg in undone]
        plan.info = reversals.leg_info(command)
    else:
        plan_legs = []
    plan.legs = list(zip(plan_legs, legs.closing_balances(_with_holds(accounts, state, plan), plan_legs)))
    return plan


def _with_holds(accounts: dict[uuid.UUID, Account], state: Book, plan: Plan) -> dict[uuid.UUID, Account]:
    """The accounts with `locked` as the plan's holds leave it: a hold never takes more than is available, and a
    fill's legs are checked against what its order no longer holds."""
    if not plan.holds:
        return accounts
    view = dict(accounts)
    for hold in plan.holds.values():
        view[hold.sub_account_id] = _holding(view[hold.sub_account_id], hold, state)
    for account_id in {hold.sub_account_id for hold in plan.holds.values()}:
        if view[account_id].locked > view[account_id].balance:
            account = accounts[account_id]
            raise Refused("The hold is larger than what is available.", code="LOCK_OUT_OF_RANGE",
                          details={"sub_account_id": str(account_id), "available": account.balance - account.locked})
    return view


def _plan_order_change(state: Book, user: uuid.UUID, change: OrderChange, plan: Plan) -> None:
    key = orders.key_of(user, change.order)
    row = state.orders.get(key)
    if change.change == "created":
        row = orders.placed(row, user, change)
        held_on = row.held_sub_account_id
        if state.hold_of(key, held_on) is None and (amount := orders.to_hold(row)) > 0:
            hold = holds.opened(user, row.exchange_id, held_on, amount, order_id=row.order_id)
            plan.holds[hold.id] = hold
    else:
        row = orders.ended(row, user, change)
    if row.status in orders.FINAL:
        plan.holds.update({h.id: holds.released(h) for h in state.open_holds(key) if h.id not in plan.holds})
    plan.orders[key] = row


def _plan_fill(state: Book, user: uuid.UUID, trade: Trade, plan: Plan) -> None:
    """The fill's order moves on; its hold gives the fill's held part (the fee comes from what is available)."""
    order = trade.fill.order
    key = orders.key_of(user, order)
    row = orders.filled(state.orders.get(key), user, order, trade.fill.trade_id, trade.volume, trade.price, trade.fee)
    hold = state.hold_of(key, row.held_sub_account_id)
    if hold is not None and hold.is_open:
        with localcontext(legs.MONEY_CONTEXT):
            part = legs.round_debit(trade.price * trade.volume) if order.side == OrderSide.buy else trade.volume
        plan.holds[hold.id] = holds.taken(hold, min(part, hold.remaining))
    if row.status in orders.FINAL:  # the last fill: what the order still holds is released
        for each in state.open_holds(key):
            current = plan.holds.get(each.id, each)
            if current.is_open:
                plan.holds[each.id] = holds.released(current)
    plan.orders[key] = row
    plan.filled = key


def _plan_lock_change(state: Book, user: uuid.UUID, change: LockChange, plan: Plan) -> None:
    account = _owned_as_named(state.accounts, state.owners, user, change)
    if change.order_id is None:
        if change.locking:
            hold = holds.opened(user, account.exchange_id, account.id, change.amount, expires_at=change.expires_at)
            plan.holds[hold.id] = hold
        else:
            orderless = [h for h in state.holds.values()
                         if h.order_id is None and h.is_open and h.sub_account_id == account.id]
            plan.holds.update({h.id: h for h in holds.release_oldest(orderless, change.amount)})
        return
    key = (user, change.exchange_id, change.order_id)
    hold = state.hold_of(key, account.id)
    if change.locking:
        row = state.orders.get(key)
        if row is not None and row.status in orders.FINAL:
            raise Conflict(f"Order {row.order_id} is {row.status.value}: nothing can be held for it.",
                           code="ORDER_ENDED", details={"order_id": row.order_id, "status": row.status.value})
        if hold is not None:  # the order's hold stands (opened by the first of orders.created or this)
            if not hold.is_open:
                raise Conflict(f"The hold of order {change.order_id} was {hold.status} already.",
                               code="HOLD_RESOLVED", details={"hold_id": str(hold.id), "status": hold.status})
            return
        hold = holds.opened(user, account.exchange_id, account.id, change.amount, order_id=change.order_id)
        plan.holds[hold.id] = hold
    else:
        if hold is None:
            raise holds.missing(key, account.id)
        plan.holds[hold.id] = holds.released(hold, change.amount)


def _check_exchange(owners: dict[uuid.UUID, uuid.UUID], exchange_id: uuid.UUID, user: uuid.UUID) -> None:
    if owners.get(exchange_id) != user:
        raise NotFound("Exchange not found.", details={"exchange_id": str(exchange_id)})


def _owned(accounts: dict[uuid.UUID, Account], account_id: uuid.UUID, user: uuid.UUID) -> Account:
    account = accounts.get(account_id)
    if account is None or account.user_id != user:  # missing, deleted and someone else's look the same
        raise NotFound("Sub-account not found.", details={"sub_account_id": str(account_id)})
    return account


def _check_on_exchange(accounts: list[Account], exchange_id: uuid.UUID) -> None:
    if any(account.exchange_id != exchange_id for account in accounts):
        raise NotFound("Sub-account not found on this exchange.", details={"exchange_id": str(exchange_id)})


def _pair(accounts, owners, user: uuid.UUID, named) -> tuple[Account, Account]:
    """The base and quote sub-accounts a trade or an order names, checked: the user's, two of them, on the
    exchange, with the pair's symbols."""
    _check_exchange(owners, named.exchange_id, user)
    if named.base_sub_account_id == named.quote_sub_account_id:
        raise Refused("A trade needs two different sub-accounts.", code="SAME_SUB_ACCOUNT")
    base = _owned(accounts, named.base_sub_account_id, user)
    quote = _owned(accounts, named.quote_sub_account_id, user)
    _check_on_exchange([base, quote], named.exchange_id)
    expected = f"{base.symbol}/{quote.symbol}"
    if named.symbol is not None and named.symbol != expected:
        raise Refused(f"The symbol {named.symbol} does not match the sub-accounts ({expected}).",
                      code="SYMBOL_MISMATCH")
    return base, quote


def _owned_as_named(accounts, owners, user: uuid.UUID, command: Adjustment | LockChange) -> Account:
    """The sub-account a balance event names, on the exchange and with the symbol it names."""
    _check_exchange(owners, command.exchange_id, user)
    account = _owned(accounts, command.sub_account_id, user)
    if account.exchange_id != command.exchange_id or account.symbol != command.symbol:
        raise NotFound("Sub-account not found with this exchange and symbol.",
                       details={"sub_account_id": str(account.id)})
    return account
