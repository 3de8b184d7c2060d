"""Table tests for the pure money rules of DESIGN §4 (db/legs.py): no database, no network, milliseconds.

Covers:
- `round_debit` / `round_credit`: one rounding to 18 places, debits up (ceiling), credits down (floor);
- `trade_legs`: long, short and stop_loss with the fee in the quote or the base asset, DESIGN's worked example,
  rounding of the notional, 38-digit products kept exact, fees that eat or exceed the proceeds, invalid trades,
  and what each leg records (reason, price, quote symbol, the fee it paid);
- `closing_balances`: running balances, `balance >= locked`, the 10^20 ceiling, non-positive legs, exact 38 digits;
- `adjustment_legs`: the one leg that moves our balance to the exchange's reading (or none);
"""

import uuid
from decimal import Decimal

import pytest

from db.commands import Adjustment, Trade
from db.errors import InsufficientBalance, Refused
from db.legs import (
    LIMIT,
    Account,
    Leg,
    adjustment_legs,
    closing_balances,
    round_credit,
    round_debit,
    trade_legs,
)
from generated.models import FeeAsset, TradeType

D = Decimal
TINY = D("0.000000000000000001")  # one unit in the 18th place


# ---------------------------------------------------------------------------------------------------- helpers

def account(balance="0", locked="0", symbol="USDT") -> Account:
    return Account(id=uuid.uuid4(), user_id=uuid.uuid4(), exchange_id=uuid.uuid4(), symbol=symbol,
                   balance=D(balance), locked=D(locked))


def trade(kind=TradeType.long, volume="2", price="3000", fee="0", fee_asset=FeeAsset.quote) -> Trade:
    return Trade(kind=kind, exchange_id=uuid.uuid4(), base_sub_account_id=uuid.uuid4(),
                 quote_sub_account_id=uuid.uuid4(), volume=D(volume), price=D(price), fee=D(fee),
                 fee_asset=fee_asset)


def legs_of(t: Trade, quote_symbol="USDT") -> list[tuple[str, str, Decimal, Decimal | None]]:
    """The trade's legs as (which side, direction, amount, fee), for comparing with a table row."""
    side = {t.base_sub_account_id: "base", t.quote_sub_account_id: "quote"}
    return [(side[leg.sub_account_id], leg.direction, leg.amount, leg.fee) for leg in trade_legs(t, quote_symbol)]


def leg(acc: Account, direction: str, amount: str) -> Leg:
    return Leg(acc.id, direction, D(amount), "test")


def refusal(error) -> tuple[type, str]:
    return type(error.value), error.value.code


# ---------------------------------------------------------------------------------------------------- rounding

@pytest.mark.parametrize("value, debit, credit", [
    pytest.param("3000", "3000", "3000", id="integer-unchanged"),
    pytest.param("0.999999999999999999", "0.999999999999999999", "0.999999999999999999", id="18-places-unchanged"),
    pytest.param("0.1666666666666666665", "0.166666666666666667", "0.166666666666666666", id="19th-place-5"),
    pytest.param("0.4999999999999999995", "0.500000000000000000", "0.499999999999999999", id="carry-into-units"),
    pytest.param("0.0000000000000000001", "0.000000000000000001", "0", id="below-one-unit"),
    pytest.param("0.1000000000000000000001", "0.100000000000000001", "0.1", id="22nd-place-1"),
    pytest.param("12345678901234567890.1234567890123456785", "12345678901234567890.123456789012345679",
                 "12345678901234567890.123456789012345678", id="39-digits-exact"),
    pytest.param("-0.1666666666666666665", "-0.166666666666666666", "-0.166666666666666667", id="negative"),
])
def test_debits_round_up_and_credits_round_down_at_the_18th_place(value, debit, credit):
    assert round_debit(D(value)) == D(debit)
    assert round_credit(D(value)) == D(credit)
    assert round_debit(D(value)).as_tuple().exponent == -18


# ---------------------------------------------------------------------------------------------------- trade_legs

LONG, SHORT, STOP = TradeType.long, TradeType.short, TradeType.stop_loss
BASE, QUOTE = FeeAsset.base, FeeAsset.quote


@pytest.mark.parametrize("kind, volume, price, fee, fee_asset, expected", [
    pytest.param(LONG, "2", "3000", "12", QUOTE,
                 [("base", "credit", "2", None), ("quote", "debit", "6012", "12")], id="long-fee-in-quote"),
    pytest.param(LONG, "2", "3000", "0.002", BASE,
                 [("base", "credit", "1.998", "0.002"), ("quote", "debit", "6000", None)], id="long-fee-in-base"),
    pytest.param(LONG, "2", "3000", "0", QUOTE,
                 [("base", "credit", "2", None), ("quote", "debit", "6000", None)], id="long-no-fee"),
    pytest.param(SHORT, "2", "3000", "12", QUOTE,
                 [("base", "debit", "2", None), ("quote", "credit", "5988", "12")], id="short-fee-in-quote"),
    pytest.param(SHORT, "2", "3000", "0.002", BASE,
                 [("base", "debit", "2.002", "0.002"), ("quote", "credit", "6000", None)], id="short-fee-in-base"),
    pytest.param(STOP, "0.5", "2800", "1.4", QUOTE,
                 [("base", "debit", "0.5", None), ("quote", "credit", "1398.6", "1.4")], id="stop-loss-fee-in-quote"),
    pytest.param(STOP, "0.5", "2800", "0.0005", BASE,
                 [("base", "debit", "0.5005", "0.0005"), ("quote", "credit", "1400", None)],
                 id="stop-loss-fee-in-base"),
    pytest.param(LONG, "3", "0.333333333333333333", "0", QUOTE,
                 [("base", "credit", "3", None), ("quote", "debit", "0.999999999999999999", None)],
                 id="long-exact-18-places"),
    pytest.param(LONG, "0.5", "0.333333333333333333", "0", QUOTE,
                 [("base", "credit", "0.5", None), ("quote", "debit", "0.166666666666666667", None)],
                 id="long-debit-rounds-up"),
    pytest.param(SHORT, "0.5", "0.333333333333333333", "0", QUOTE,
                 [("base", "debit", "0.5", None), ("quote", "credit", "0.166666666666666666", None)],
                 id="short-credit-rounds-down"),
    pytest.param(LONG, "1.5", "0.333333333333333333", "0.000000000000000001", QUOTE,
                 [("base", "credit", "1.5", None), ("quote", "debit", "0.500000000000000001", "0.000000000000000001")],
                 id="long-debit-with-fee-rounds-up-once"),
    pytest.param(STOP, "1.5", "0.333333333333333333", "0.000000000000000001", QUOTE,
                 [("base", "debit", "1.5", None), ("quote", "credit", "0.499999999999999998", "0.000000000000000001")],
                 id="stop-loss-credit-with-fee-rounds-down-once"),
    pytest.param(LONG, "0.5", "0.000000000000000001", "0", QUOTE,
                 [("base", "credit", "0.5", None), ("quote", "debit", "0.000000000000000001", None)],
                 id="long-sub-unit-cost-debits-one-unit"),
    pytest.param(SHORT, "0.5", "0.000000000000000001", "0", QUOTE,
                 [("base", "debit", "0.5", None)], id="short-sub-unit-proceeds-credit-nothing"),
    pytest.param(LONG, "3", "12345678901234567.890123456789012345", "0", QUOTE,
                 [("base", "credit", "3", None), ("quote", "debit", "37037036703703703.670370370367037035", None)],
                 id="long-35-digit-product-exact"),
    pytest.param(LONG, "99999999.999999999999999999", "99999999.999999999999999999", "0", QUOTE,
                 [("base", "credit", "99999999.999999999999999999", None),
                  ("quote", "debit", "9999999999999999.999999999800000001", None)], id="long-56-digit-product-ceiling"),
    pytest.param(SHORT, "99999999.999999999999999999", "99999999.999999999999999999", "0", QUOTE,
                 [("base", "debit", "99999999.999999999999999999", None),
                  ("quote", "credit", "9999999999999999.9999999998", None)], id="short-56-digit-product-floor"),
    pytest.param(SHORT, "1", "12345678901234567890.123456789012345678", "0.000000000000000001", QUOTE,
                 [("base", "debit", "1", None),
                  ("quote", "credit", "12345678901234567890.123456789012345677", "0.000000000000000001")],
                 id="short-38-digit-proceeds-minus-fee-exact"),
    pytest.param(SHORT, "2", "3000", "6000", QUOTE,
                 [("base", "debit", "2", None)], id="short-fee-eats-all-proceeds-no-quote-leg"),
    pytest.param(STOP, "2", "3000", "6000", QUOTE,
                 [("base", "debit", "2", None)], id="stop-loss-fee-eats-all-proceeds-no-quote-leg"),
])
def test_trade_moves_base_and_quote_by_volume_notional_and_fee(kind, volume, price, fee, fee_asset, expected):
    t = trade(kind, volume, price, fee, fee_asset)
    assert legs_of(t) == [(side, direction, D(amount), None if paid is None else D(paid))
                          for side, direction, amount, paid in expected]


def test_worked_example_deposit_10000_then_long_2_eth_at_3000_fee_12_leaves_eth_2_usdt_3988():
    eth, usdt = account("0", symbol="ETH"), account("0", symbol="USDT")
    accounts = {eth.id: eth, usdt.id: usdt}
    [usdt_after_deposit] = closing_balances(accounts, [Leg(usdt.id, "credit", D("10000"), "deposit")])
    accounts[usdt.id] = Account(usdt.id, usdt.user_id, usdt.exchange_id, "USDT", usdt_after_deposit, D(0))
    t = Trade(kind=LONG, exchange_id=eth.exchange_id, base_sub_account_id=eth.id, quote_sub_account_id=usdt.id,
              volume=D("2"), price=D("3000"), fee=D("12"))
    legs = trade_legs(t, "USDT")
    assert [(x.sub_account_id, x.direction, x.amount) for x in legs] == [
        (eth.id, "credit", D("2")), (usdt.id, "debit", D("6012"))]
    assert closing_balances(accounts, legs) == [D("2"), D("3988")]


@pytest.mark.parametrize("kind, volume, price, fee, fee_asset", [
    pytest.param(SHORT, "2", "3000", "6000.000000000000000001", QUOTE, id="short-fee-one-unit-over-proceeds"),
    pytest.param(SHORT, "2", "3000", "7000", QUOTE, id="short-fee-over-proceeds"),
    pytest.param(STOP, "2", "3000", "6001", QUOTE, id="stop-loss-fee-over-proceeds"),
    pytest.param(LONG, "2", "3000", "2", BASE, id="long-base-fee-equals-volume"),
    pytest.param(LONG, "2", "3000", "2.000000000000000001", BASE, id="long-base-fee-over-volume"),
])
def test_fee_larger_than_what_the_trade_moves_is_refused(kind, volume, price, fee, fee_asset):
    with pytest.raises(Refused) as error:
        trade_legs(trade(kind, volume, price, fee, fee_asset), "USDT")
    assert refusal(error) == (Refused, "FEE_EXCEEDS_PROCEEDS")


@pytest.mark.parametrize("kind", [LONG, SHORT, STOP], ids=lambda k: k.value)
@pytest.mark.parametrize("volume, price, fee", [
    pytest.param("0", "3000", "0", id="zero-volume"),
    pytest.param("-1", "3000", "0", id="negative-volume"),
    pytest.param("1", "0", "0", id="zero-price"),
    pytest.param("1", "-3000", "0", id="negative-price"),
    pytest.param("1", "3000", "-0.000000000000000001", id="negative-fee"),
])
def test_non_positive_volume_or_price_or_negative_fee_is_an_invalid_trade(kind, volume, price, fee):
    for fee_asset in (QUOTE, BASE):
        with pytest.raises(Refused) as error:
            trade_legs(trade(kind, volume, price, fee, fee_asset), "USDT")
        assert refusal(error) == (Refused, "INVALID_TRADE")


@pytest.mark.parametrize("kind", [LONG, SHORT, STOP], ids=lambda k: k.value)
@pytest.mark.parametrize("fee_asset", [QUOTE, BASE], ids=lambda a: f"fee-in-{a.value}")
def test_trade_legs_record_kind_as_reason_price_quote_symbol_and_fee_on_the_leg_that_paid_it(kind, fee_asset):
    t = trade(kind, "2", "3000", "0.5", fee_asset)
    base, quote = trade_legs(t, "USDC")
    assert (base.sub_account_id, quote.sub_account_id) == (t.base_sub_account_id, t.quote_sub_account_id)
    for x in (base, quote):
        assert (x.reason, x.price, x.quote_symbol) == (kind.value, D("3000"), "USDC")
    assert (base.fee, quote.fee) == ((D("0.5"), None) if fee_asset == BASE else (None, D("0.5")))


@pytest.mark.parametrize("direction, amount, delta", [
    pytest.param("credit", "5", "5", id="credit-adds"),
    pytest.param("debit", "5", "-5", id="debit-subtracts"),
    pytest.param("debit", "12345678901234567890.123456789012345678", "-12345678901234567890.123456789012345678",
                 id="debit-38-digits-exact"),
])
def test_leg_delta_is_signed_by_direction_and_exact(direction, amount, delta):
    assert Leg(uuid.uuid4(), direction, D(amount), "r").delta == D(delta)


# ---------------------------------------------------------------------------------------------------- closing_balances

def test_closing_balances_run_on_across_several_legs_of_the_same_account():
    a, b = account("100"), account("7", symbol="ETH")
    accounts = {a.id: a, b.id: b}
    legs = [leg(a, "credit", "10"), leg(b, "debit", "2"), leg(a, "debit", "30"), leg(a, "credit", "0.5"),
            leg(b, "credit", "0.000000000000000001")]
    assert closing_balances(accounts, legs) == [D("110"), D("5"), D("80"), D("80.5"), D("5.000000000000000001")]
    assert (a.balance, b.balance) == (D("100"), D("7"))  # the accounts themselves are left alone


@pytest.mark.parametrize("balance, locked, legs, expected", [
    pytest.param("100", "40", [("debit", "60")], ["40"], id="down-to-locked"),
    pytest.param("100", "0", [("debit", "100")], ["0"], id="down-to-zero"),
    pytest.param("100", "40", [("debit", "30"), ("debit", "30")], ["70", "40"], id="two-debits-down-to-locked"),
    pytest.param("99999999999999999999.999999999999999998", "0", [("credit", "0.000000000000000001")],
                 ["99999999999999999999.999999999999999999"], id="up-to-largest-amount"),
    pytest.param("12345678901234567890.123456789012345678", "0", [("credit", "0.000000000000000001")],
                 ["12345678901234567890.123456789012345679"], id="credit-38-digits-exact"),
    pytest.param("12345678901234567890.123456789012345678", "0.000000000000000001",
                 [("debit", "12345678901234567890.123456789012345677")], ["0.000000000000000001"],
                 id="debit-38-digits-exact-to-locked"),
])
def test_closing_balance_may_fall_exactly_to_locked_and_is_exact_to_38_digits(balance, locked, legs, expected):
    a = account(balance, locked)
    legs = [leg(a, direction, amount) for direction, amount in legs]
    assert closing_balances({a.id: a}, legs) == [D(x) for x in expected]


@pytest.mark.parametrize("balance, locked, legs, available, required", [
    pytest.param("100", "40", [("debit", "60.000000000000000001")], "60", "60.000000000000000001",
                 id="one-unit-below-locked"),
    pytest.param("100", "0", [("debit", "100.5")], "100", "100.5", id="below-zero"),
    pytest.param("0", "0", [("debit", "0.000000000000000001")], "0", "0.000000000000000001", id="empty-account"),
    pytest.param("100", "40", [("debit", "50"), ("debit", "20")], "10", "20", id="second-debit-sees-the-first"),
    pytest.param("100", "40", [("credit", "5"), ("debit", "66")], "65", "66", id="debit-sees-earlier-credit"),
    pytest.param("100", "40", [("debit", "70"), ("credit", "10")], "60", "70",
                 id="later-credit-does-not-save-a-debit"),
    pytest.param("12345678901234567890.123456789012345678", "0.000000000000000001",
                 [("debit", "12345678901234567890.123456789012345678")],
                 "12345678901234567890.123456789012345677", "12345678901234567890.123456789012345678",
                 id="38-digit-available-exact"),
])
def test_debit_below_locked_is_insufficient_balance_with_available_and_required(balance, locked, legs,
                                                                                 available, required):
    a = account(balance, locked)
    with pytest.raises(InsufficientBalance) as error:
        closing_balances({a.id: a}, [leg(a, direction, amount) for direction, amount in legs])
    assert refusal(error) == (InsufficientBalance, "INSUFFICIENT_BALANCE")
    assert error.value.details == {"sub_account_id": str(a.id), "available": D(available), "required": D(required)}


@pytest.mark.parametrize("balance, amount", [
    pytest.param("99999999999999999999.999999999999999999", "0.000000000000000001", id="one-unit-to-10^20"),
    pytest.param("0", "100000000000000000000", id="credit-of-10^20"),
    pytest.param("50000000000000000000", "60000000000000000000", id="past-10^20"),
])
def test_balance_reaching_10_to_the_20_is_refused_as_out_of_range(balance, amount):
    a = account(balance)
    with pytest.raises(Refused) as error:
        closing_balances({a.id: a}, [leg(a, "credit", amount)])
    assert refusal(error) == (Refused, "AMOUNT_OUT_OF_RANGE")
    assert error.value.details == {"sub_account_id": str(a.id)}
    assert LIMIT == D(10) ** 20


@pytest.mark.parametrize("direction", ["credit", "debit"])
@pytest.mark.parametrize("amount", ["0", "-0", "-1", "-0.000000000000000001"])
def test_leg_that_is_not_positive_is_refused(direction, amount):
    a = account("100")
    with pytest.raises(Refused) as error:
        closing_balances({a.id: a}, [leg(a, "credit", "1"), leg(a, direction, amount)])
    assert refusal(error) == (Refused, "AMOUNT_NOT_POSITIVE")


def test_no_legs_have_no_closing_balances():
    assert closing_balances({}, []) == []


# ---------------------------------------------------------------------------------------------------- adjustment_legs

@pytest.mark.parametrize("balance, new_balance, expected", [
    pytest.param("100", "105.5", [("credit", "5.5")], id="exchange-higher-credits"),
    pytest.param("100", "95", [("debit", "5")], id="exchange-lower-debits"),
    pytest.param("100", "0", [("debit", "100")], id="exchange-zero-debits-all"),
    pytest.param("100", "100.000", [], id="equal-books-nothing"),
    pytest.param("0", "0", [], id="both-zero-books-nothing"),
    pytest.param("12345678901234567890.123456789012345678", "12345678901234567890.123456789012345679",
                 [("credit", "0.000000000000000001")], id="38-digits-exact"),
])
def test_adjustment_moves_our_balance_to_the_exchanges_reading(balance, new_balance, expected):
    a = account(balance)
    adjustment = Adjustment(exchange_id=a.exchange_id, sub_account_id=a.id, symbol=a.symbol,
                            new_balance=D(new_balance), reported_previous_balance=D(balance))
    legs = adjustment_legs(adjustment, a.balance)
    assert [(x.sub_account_id, x.direction, x.amount, x.reason) for x in legs] == [
        (a.id, direction, D(amount), "adjustment") for direction, amount in expected]
    if legs:
        assert closing_balances({a.id: a}, legs) == [D(new_balance)]
