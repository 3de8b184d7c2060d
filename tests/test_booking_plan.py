"""Table tests for `db.booking.plan_entry`, the pure half of booking: no database, no network, milliseconds.

Each entry is checked against what it names before anything is planned: the exchange must be the user's, every
sub-account the user's (someone else's looks exactly like a missing one), on the exchange named and with the symbols
named. Covers transfers, trades and order references (the pair checks), bot heartbeats, adjustments (legs, drift and
info) and lock changes (the sub-account as named), and the trading log written with a command or alone as a note.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest

from db.booking import Book, Plan, plan_entry
from db.commands import Adjustment, BotSeen, Entry, LockChange, Log, Order, OrderChange, Trade, Transfer
from db.errors import InsufficientBalance, NotFound, Refused
from db.legs import Account
from generated.models import BotState, FeeAsset, OrderSide, OrderType, TradeType, TradingLogSource, TradingLogType

D = Decimal
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------------- the world

@dataclass
class World:
    """A user with ETH and USDT on one exchange and BTC on a second; another user with USDT on a third."""
    user: uuid.UUID = field(default_factory=uuid.uuid4)
    stranger: uuid.UUID = field(default_factory=uuid.uuid4)
    exchange: uuid.UUID = field(default_factory=uuid.uuid4)
    second_exchange: uuid.UUID = field(default_factory=uuid.uuid4)  # the user's too
    foreign_exchange: uuid.UUID = field(default_factory=uuid.uuid4)  # the stranger's
    state: dict[uuid.UUID, Account] = field(default_factory=dict)

    def __post_init__(self):
        self.eth = self.add(self.user, self.exchange, "ETH", "5", "1")
        self.usdt = self.add(self.user, self.exchange, "USDT", "10000", "0")
        self.btc = self.add(self.user, self.second_exchange, "BTC", "1", "0")
        self.second_usdt = self.add(self.user, self.second_exchange, "USDT", "500", "0")
        self.foreign_eth = self.add(self.stranger, self.foreign_exchange, "ETH", "5", "0")
        self.foreign_usdt = self.add(self.stranger, self.foreign_exchange, "USDT", "10000", "0")

    def add(self, user, exchange, symbol, balance, locked) -> uuid.UUID:
        account = Account(uuid.uuid4(), user, exchange, symbol, D(balance), D(locked))
        self.state[account.id] = account
        return account.id

    @property
    def owners(self) -> dict[uuid.UUID, uuid.UUID]:
        return {self.exchange: self.user, self.second_exchange: self.user, self.foreign_exchange: self.stranger}

    def plan(self, command, log: Log | None = None) -> Plan:
        before = dict(self.state)
        try:
            return plan_entry(Entry(self.user, command, log), Book(self.state, self.owners))
        finally:
            assert self.state == before  # planning is pure: the state it was given is left as it was

    def refusal(self, command, log: Log | None = None) -> tuple[type, str]:
        with pytest.raises((NotFound, Refused)) as error:
            self.plan(command, log)
        return type(error.value), error.value.code


@pytest.fixture
def w() -> World:
    return World()


def transfer(account_id, direction="credit", amount="100", exchange_id=None, info=None) -> Transfer:
    return Transfer(account_id, direction, D(amount), "deposit" if direction == "credit" else "withdraw",
                    exchange_id=exchange_id, info=info or {})


def long_trade(exchange, base, quote, symbol="ETH/USDT", volume="2", price="3000", fee="12") -> Trade:
    return Trade(TradeType.long, exchange, base, quote, D(volume), D(price), D(fee), FeeAsset.quote, symbol)


def order_reference(exchange, base, quote, symbol="ETH/USDT") -> OrderChange:
    """An order's note (here: it failed), which names its pair like a trade does."""
    order = Order(exchange, "o-1", base, quote, symbol or "ETH/USDT", OrderSide.buy, OrderType.market, "bot-1")
    return OrderChange(order, "failed", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


def note(exchange, sub_account_id=None, type=TradingLogType.note) -> Log:
    return Log(type, TradingLogSource.bot, exchange, "a note", NOW, sub_account_id=sub_account_id)


def uuid_of(w: World, name: str) -> uuid.UUID:
    return uuid.uuid4() if name == "missing" else getattr(w, name)


NOT_FOUND = (NotFound, "NOT_FOUND")


# ---------------------------------------------------------------------------------------------------- transfers

@pytest.mark.parametrize("direction, amount, exchange, closing", [
    pytest.param("credit", "250.5", None, "10250.5", id="deposit"),
    pytest.param("debit", "10000", None, "0", id="withdraw-all"),
    pytest.param("credit", "1", "exchange", "10001", id="deposit-naming-its-exchange"),
])
def test_transfer_on_the_users_own_sub_account_books_one_leg(w, direction, amount, exchange, closing):
    exchange_id = getattr(w, exchange) if exchange else None
    plan = w.plan(transfer(w.usdt, direction, amount, exchange_id, info={"memo": "x"}))
    [(leg, closing_balance)] = plan.legs
    assert (leg.sub_account_id, leg.direction, leg.amount, leg.reason) == (
        w.usdt, direction, D(amount), "deposit" if direction == "credit" else "withdraw")
    assert closing_balance == D(closing)
    assert plan.info == {"memo": "x"}
    assert (plan.holds, plan.drift, plan.bot) == ({}, D(0), None)


@pytest.mark.parametrize("account, exchange", [
    pytest.param("missing", None, id="missing-sub-account"),
    pytest.param("foreign_usdt", None, id="another-users-sub-account"),
    pytest.param("foreign_usdt", "foreign_exchange", id="another-users-sub-account-and-exchange"),
    pytest.param("usdt", "second_exchange", id="exchange-is-another-of-the-users"),
    pytest.param("usdt", "foreign_exchange", id="exchange-is-another-users"),
    pytest.param("usdt", "missing", id="exchange-is-missing"),
])
def test_transfer_on_a_sub_account_not_the_users_or_not_on_the_named_exchange_is_not_found(w, account, exchange):
    command = transfer(uuid_of(w, account), exchange_id=uuid_of(w, exchange) if exchange else None)
    assert w.refusal(command) == NOT_FOUND


def test_transfer_on_another_users_sub_account_gets_the_same_answer_as_a_missing_one(w):
    missing = uuid.uuid4()
    for account_id in (w.foreign_usdt, missing):
        with pytest.raises(NotFound) as error:
            w.plan(transfer(account_id))
        assert (error.value.code, error.value.message, error.value.details) == (
            "NOT_FOUND", "Sub-account not found.", {"sub_account_id": str(account_id)})


def test_transfer_debit_below_locked_is_insufficient_balance(w):
    with pytest.raises(InsufficientBalance) as error:
        w.plan(transfer(w.eth, "debit", "4.000000000000000001"))
    assert error.value.details["available"] == D("4")


# ---------------------------------------------------------------------------------------------------- trades

def test_trade_on_the_users_pair_books_both_legs_with_closing_balances(w):
    plan = w.plan(long_trade(w.exchange, w.eth, w.usdt))
    assert [(leg.sub_account_id, leg.direction, leg.amount, leg.quote_symbol, closing)
            for leg, closing in plan.legs] == [
        (w.eth, "credit", D("2"), "USDT", D("7")), (w.usdt, "debit", D("6012"), "USDT", D("3988"))]


def test_trade_without_a_symbol_is_checked_on_its_sub_accounts_only(w):
    plan = w.plan(long_trade(w.second_exchange, w.btc, w.second_usdt, symbol=None, volume="0.01", price="40000",
                             fee="0"))
    assert [closing for _, closing in plan.legs] == [D("1.01"), D("100")]


def test_trade_costing_more_than_the_quote_holds_is_insufficient_balance(w):
    with pytest.raises(InsufficientBalance):
        w.plan(long_trade(w.exchange, w.eth, w.usdt, volume="3.333", price="3000", fee="12"))


# A pair that a trade or an order reference may not name: (exchange, base, quote, symbol) -> refusal.
PAIR_FAULTS = [
    pytest.param("foreign_exchange", "eth", "usdt", "ETH/USDT", NOT_FOUND, id="exchange-is-another-users"),
    pytest.param("missing", "eth", "usdt", "ETH/USDT", NOT_FOUND, id="exchange-is-missing"),
    pytest.param("foreign_exchange", "foreign_eth", "foreign_usdt", "ETH/USDT", NOT_FOUND,
                 id="another-users-pair-on-their-exchange"),
    pytest.param("exchange", "foreign_eth", "usdt", "ETH/USDT", NOT_FOUND, id="base-is-another-users"),
    pytest.param("exchange", "eth", "foreign_usdt", "ETH/USDT", NOT_FOUND, id="quote-is-another-users"),
    pytest.param("exchange", "eth", "missing", "ETH/USDT", NOT_FOUND, id="quote-is-missing"),
    pytest.param("second_exchange", "eth", "usdt", "ETH/USDT", NOT_FOUND, id="pair-on-another-of-the-users-exchanges"),
    pytest.param("exchange", "eth", "second_usdt", "ETH/USDT", NOT_FOUND, id="quote-on-another-exchange"),
    pytest.param("exchange", "usdt", "usdt", "USDT/USDT", (Refused, "SAME_SUB_ACCOUNT"), id="same-base-and-quote"),
    pytest.param("exchange", "eth", "usdt", "BTC/USDT", (Refused, "SYMBOL_MISMATCH"), id="symbol-other-base"),
    pytest.param("exchange", "eth", "usdt", "USDT/ETH", (Refused, "SYMBOL_MISMATCH"), id="symbol-reversed"),
    pytest.param("exchange", "eth", "usdt", "ETHUSDT", (Refused, "SYMBOL_MISMATCH"), id="symbol-without-slash"),
    pytest.param("exchange", "usdt", "eth", "ETH/USDT", (Refused, "SYMBOL_MISMATCH"), id="base-and-quote-swapped"),
]


@pytest.mark.parametrize("make", [long_trade, order_reference], ids=["trade", "order-reference"])
@pytest.mark.parametrize("exchange, base, quote, symbol, expected", PAIR_FAULTS)
def test_trade_and_order_reference_naming_a_foreign_or_mismatching_pair_are_refused_alike(
        w, make, exchange, base, quote, symbol, expected):
    command = make(uuid_of(w, exchange), uuid_of(w, base), uuid_of(w, quote), symbol)
    assert w.refusal(command) == expected


@pytest.mark.parametrize("exchange, base, quote, symbol", [
    pytest.param("exchange", "eth", "usdt", "ETH/USDT", id="eth-usdt"),
    pytest.param("second_exchange", "btc", "second_usdt", "BTC/USDT", id="btc-usdt-on-second-exchange"),
])
def test_order_reference_to_the_users_pair_books_no_legs(w, exchange, base, quote, symbol):
    plan = w.plan(order_reference(getattr(w, exchange), getattr(w, base), getattr(w, quote), symbol))
    assert (plan.legs, plan.holds, plan.info, plan.drift, plan.bot) == ([], {}, {}, D(0), None)
    assert plan.orders[(w.user, getattr(w, exchange), "o-1")].status == "failed"


# ---------------------------------------------------------------------------------------------------- bot heartbeats

def test_bot_seen_on_the_users_exchange_plans_the_heartbeat_and_no_legs(w):
    seen = BotSeen(w.exchange, "bot-1", BotState.running, NOW, version="1.2.3")
    plan = w.plan(seen)
    assert (plan.bot, plan.legs, plan.holds) == (seen, [], {})


@pytest.mark.parametrize("exchange", ["foreign_exchange", "missing"])
def test_bot_seen_on_an_exchange_not_the_users_is_not_found(w, exchange):
    assert w.refusal(BotSeen(uuid_of(w, exchange), "bot-1", BotState.paused, NOW)) == NOT_FOUND


# ---------------------------------------------------------------------------------------------------- balance events

def adjustment(exchange, account, symbol, new="5", previous="5") -> Adjustment:
    return Adjustment(exchange, account, symbol, D(new), D(previous))


def lock(exchange, account, symbol, amount="1", locking=True) -> LockChange:
    return LockChange(exchange, account, symbol, D(amount), locking)


@pytest.mark.parametrize("make", [adjustment, lock], ids=["adjustment", "lock-change"])
@pytest.mark.parametrize("exchange, account, symbol", [
    pytest.param("exchange", "eth", "USDT", id="wrong-symbol"),
    pytest.param("second_exchange", "eth", "ETH", id="another-of-the-users-exchanges"),
    pytest.param("foreign_exchange", "eth", "ETH", id="another-users-exchange"),
    pytest.param("missing", "eth", "ETH", id="missing-exchange"),
    pytest.param("exchange", "foreign_eth", "ETH", id="another-users-sub-account"),
    pytest.param("foreign_exchange", "foreign_eth", "ETH", id="another-users-sub-account-and-exchange"),
    pytest.param("exchange", "missing", "ETH", id="missing-sub-account"),
])
def test_balance_event_naming_the_wrong_exchange_symbol_or_sub_account_is_not_found(w, make, exchange, account,
                                                                                     symbol):
    assert w.refusal(make(uuid_of(w, exchange), uuid_of(w, account), symbol)) == NOT_FOUND


@pytest.mark.parametrize("new, previous, legs, drift", [
    pytest.param("10100", "10000", [("credit", "100", "10100")], "0", id="no-drift-credit"),
    pytest.param("9000", "9990", [("debit", "1000", "9000")], "-10", id="exchange-started-lower"),
    pytest.param("10000", "10000.5", [], "0.5", id="agree-now-drifted-before"),
    pytest.param("10000", "10000", [], "0", id="all-agree"),
    pytest.param("0", "12345678901234567890.123456789012345678", [("debit", "10000", "0")],
                 "12345678901234557890.123456789012345678", id="drift-38-digits-exact"),
])
def test_adjustment_books_the_difference_and_records_drift_as_reported_previous_minus_ours(w, new, previous,
                                                                                          legs, drift):
    plan = w.plan(adjustment(w.exchange, w.usdt, "USDT", new, previous))
    assert [(leg.direction, leg.amount, leg.reason, closing) for leg, closing in plan.legs] == [
        (direction, D(amount), "adjustment", D(closing)) for direction, amount, closing in legs]
    assert plan.drift == D(drift)
    assert plan.info == {"reported_previous_balance": previous, "drift": drift}


def test_adjustment_cutting_the_balance_below_locked_is_insufficient_balance(w):
    with pytest.raises(InsufficientBalance):
        w.plan(adjustment(w.exchange, w.eth, "ETH", new="0.5", previous="5"))


def test_lock_without_an_order_opens_a_hold_up_to_what_is_available_and_books_no_legs(w):
    plan = w.plan(lock(w.exchange, w.eth, "ETH", "4"))
    [hold] = plan.holds.values()
    assert (hold.sub_account_id, hold.amount, hold.remaining, hold.status, hold.order_id, plan.legs) == (
        w.eth, D(4), D(4), "open", None, [])


def test_lock_change_beyond_the_balance_is_refused(w):
    assert w.refusal(lock(w.exchange, w.eth, "ETH", "4.000000000000000001")) == (Refused, "LOCK_OUT_OF_RANGE")


# ---------------------------------------------------------------------------------------------------- trading logs

@pytest.mark.parametrize("command", [
    pytest.param(lambda w: None, id="note-alone"),
    pytest.param(lambda w: transfer(w.usdt), id="with-a-transfer"),
    pytest.param(lambda w: long_trade(w.exchange, w.eth, w.usdt), id="with-a-trade"),
    pytest.param(lambda w: BotSeen(w.exchange, "bot-1", BotState.running, NOW), id="with-a-heartbeat"),
])
@pytest.mark.parametrize("exchange", ["foreign_exchange", "missing"])
def test_log_whose_exchange_is_not_the_users_is_not_found(w, command, exchange):
    assert w.refusal(command(w), note(uuid_of(w, exchange))) == NOT_FOUND


@pytest.mark.parametrize("account", ["foreign_usdt", "missing"])
def test_note_naming_a_sub_account_not_the_users_is_not_found(w, account):
    assert w.refusal(None, note(w.exchange, uuid_of(w, account))) == NOT_FOUND


@pytest.mark.parametrize("account", [None, "usdt"], ids=["no-sub-account", "own-sub-account"])
def test_note_on_the_users_exchange_plans_nothing(w, account):
    plan = w.plan(None, note(w.exchange, getattr(w, account) if account else None))
    assert (plan.legs, plan.holds, plan.info, plan.drift, plan.bot) == ([], {}, {}, D(0), None)


def test_transfer_with_its_log_books_the_leg(w):
    log = replace(note(w.exchange, w.usdt, TradingLogType.deposit), amount=D("100"))
    [(leg, closing)] = w.plan(transfer(w.usdt), log).legs
    assert (leg.sub_account_id, closing) == (w.usdt, D("10100"))
