"""The money rules of DESIGN §4 as pure functions: what legs a command books and whether an account may take them.

No database here, so every rule has a table test that runs in milliseconds (tests/test_legs.py).
Amounts are exact: products are taken in an 80-digit context and rounded once, to the 18 places of NUMERIC(38,18),
in the direction that never creates money (debits up, credits down).
"""

import uuid
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from typing import Literal

from db.commands import Adjustment, Trade
from db.errors import InsufficientBalance, Refused
from generated.models import FeeAsset, TradeType

Direction = Literal["credit", "debit"]

# Enough digits for any product of two NUMERIC(38,18) values, so no intermediate result is rounded silently.
MONEY_CONTEXT = Context(prec=80)
QUANTUM = Decimal("1e-18")
LIMIT = Decimal("1e20")  # NUMERIC(38,18) holds 20 integer digits
BUYS = frozenset({TradeType.long})


def round_debit(value: Decimal) -> Decimal:
    """Debits round up: rounding never takes less from the user than the trade cost."""
    return value.quantize(QUANTUM, rounding=ROUND_CEILING, context=MONEY_CONTEXT)


def round_credit(value: Decimal) -> Decimal:
    """Credits round down: rounding never creates money."""
    return value.quantize(QUANTUM, rounding=ROUND_FLOOR, context=MONEY_CONTEXT)


@dataclass(frozen=True)
class Leg:
    sub_account_id: uuid.UUID
    direction: Direction
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
    """A sub-account as locked for a booking: what the rules need to know of it."""
    id: uuid.UUID
    user_id: uuid.UUID
    exchange_id: uuid.UUID
    symbol: str
    balance: Decimal
    locked: Decimal

    def with_balance(self, balance: Decimal) -> "Account":
        """The account after a leg (its constructor, not dataclasses.replace: this runs for every leg booked)."""
        return Account(self.id, self.user_id, self.exchange_id, self.symbol, balance, self.locked)


def trade_legs(trade: Trade, quote_symbol: str) -> list[Leg]:
    """long: base + volume, quote - (price*volume + fee); short/stop_loss: base - volume, quote + (price*volume - fee).

    With the fee in the base asset it comes off the base leg instead: long base + (volume - fee), short
    base - (volume + fee), and the quote leg is the bare notional.
    """
    if trade.fee < 0 or trade.volume <= 0 or trade.price <= 0:  # the contracts say so; the ledger insists
        raise Refused("Volume and price must be positive and the fee not negative.", code="INVALID_TRADE")
    buy = trade.kind in BUYS
    base_fee, quote_fee = (trade.fee, Decimal(0)) if trade.fee_asset == FeeAsset.base else (Decimal(0), trade.fee)
    with localcontext(MONEY_CONTEXT):
        notional = trade.price * trade.volume
        base_amount = trade.volume - base_fee if buy else trade.volume + base_fee
        quote_amount = round_debit(notional + quote_fee) if buy else round_credit(notional - quote_fee)
    if base_amount <= 0 or quote_amount < 0:
        raise Refused("The fee is larger than what the trade moves.", code="FEE_EXCEEDS_PROCEEDS")
    kind = trade.kind.value
    legs = [Leg(trade.base_sub_account_id, "credit" if buy else "debit", base_amount, kind, trade.price,
                quote_symbol, base_fee or None)]
    if quote_amount > 0:  # a fee that eats the whole proceeds leaves nothing to credit
        legs.append(Leg(trade.quote_sub_account_id, "debit" if buy else "credit", quote_amount, kind,
                        trade.price, quote_symbol, quote_fee or None))
    return legs


def adjustment_legs(adjustment: Adjustment, balance: Decimal) -> list[Leg]:
    """The exchange's reading is the truth: one leg moves our balance to it (none if they agree)."""
    with localcontext(MONEY_CONTEXT):
        delta = adjustment.new_balance - balance
    if delta == 0:
        return []
    return [Leg(adjustment.sub_account_id, "credit" if delta > 0 else "debit", abs(delta), "adjustment")]


def closing_balances(accounts: dict[uuid.UUID, Account], legs: list[Leg]) -> list[Decimal]:
    """Each leg's closing balance, in order; refuses a leg that is not positive, would take its account below what
    is locked, or past what NUMERIC(38,18) holds."""
    closing: dict[uuid.UUID, Decimal] = {}
    after_each = []
    for leg in legs:
        if leg.amount <= 0:
            raise Refused("Amounts must be greater than zero.", code="AMOUNT_NOT_POSITIVE")
        account = accounts[leg.sub_account_id]
        before = closing.get(account.id, account.balance)
        with localcontext(MONEY_CONTEXT):
            after, available = before + leg.delta, before - account.locked
        if after < account.locked:
            raise InsufficientBalance(details={"sub_account_id": str(account.id), "available": available,
                                               "required": leg.amount})
        if after >= LIMIT:
            raise Refused("The balance would exceed the largest amount the ledger holds (10^20).",
                          code="AMOUNT_OUT_OF_RANGE", details={"sub_account_id": str(account.id)})
        closing[account.id] = after
        after_each.append(after)
    return after_each
