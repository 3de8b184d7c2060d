"""Trades and transfers as ledger legs: the one place the money rules of DESIGN §4 are written down.

Used by `POST /v1/trading-logs` and, later, by the bot's fill events, so a trade books the same way whichever
door it came through.
"""

import uuid
from dataclasses import dataclass
from decimal import Decimal, localcontext

import sqlalchemy as sa

from db import ledger
from db.ledger import Account, Leg
from tiris.errors import NotFound, Unprocessable

BUYS = {"long"}
SELLS = {"short", "stop_loss"}
TRANSFERS = {"deposit": "credit", "withdraw": "debit"}


@dataclass(frozen=True)
class Trade:
    kind: str  # long | short | stop_loss
    base_sub_account_id: uuid.UUID
    quote_sub_account_id: uuid.UUID
    volume: Decimal
    price: Decimal
    fee: Decimal
    symbol: str | None = None  # "BASE/QUOTE", checked against the sub-accounts when given
    fee_asset: str = "quote"  # the bot's fills may pay the fee in the base asset


def _check_pair(trade: Trade, base: Account, quote: Account, exchange_id: uuid.UUID) -> None:
    if base.exchange_id != exchange_id or quote.exchange_id != exchange_id:
        raise NotFound("Sub-account not found on this exchange.", details={"exchange_id": str(exchange_id)})
    expected = f"{base.symbol}/{quote.symbol}"
    if trade.symbol is not None and trade.symbol != expected:
        raise Unprocessable(f"The trade's symbol {trade.symbol} does not match the sub-accounts ({expected}).",
                            code="SYMBOL_MISMATCH")


def trade_legs(trade: Trade, quote_symbol: str) -> list[Leg]:
    """long: base + volume, quote - (price*volume + fee); short/stop_loss: base - volume, quote + (price*volume - fee).

    With the fee in the base asset it comes off the base leg instead: long base + (volume - fee), short
    base - (volume + fee), and the quote leg is the bare notional.
    """
    if trade.fee < 0 or trade.volume <= 0 or trade.price <= 0:  # the contracts say so; the ledger insists
        raise Unprocessable("Volume and price must be positive and the fee not negative.", code="INVALID_TRADE")
    buy = trade.kind in BUYS
    base_fee, quote_fee = (trade.fee, Decimal(0)) if trade.fee_asset == "base" else (Decimal(0), trade.fee)
    with localcontext(ledger.MONEY_CONTEXT):
        notional = trade.price * trade.volume
        base_amount = trade.volume - base_fee if buy else trade.volume + base_fee
        quote_amount = ledger.round_debit(notional + quote_fee) if buy else ledger.round_credit(notional - quote_fee)
    if base_amount <= 0 or quote_amount < 0:
        raise Unprocessable("The fee is larger than what the trade moves.", code="FEE_EXCEEDS_PROCEEDS")
    legs = [Leg(trade.base_sub_account_id, "credit" if buy else "debit", base_amount, trade.kind, trade.price,
                quote_symbol, base_fee or None)]
    if quote_amount > 0:  # a fee that eats the whole proceeds leaves nothing to credit
        legs.append(Leg(trade.quote_sub_account_id, "debit" if buy else "credit", quote_amount, trade.kind,
                        trade.price, quote_symbol, quote_fee or None))
    return legs


def apply_trade(conn: sa.Connection, user_id: uuid.UUID, exchange_id: uuid.UUID, trade: Trade, *,
                trading_log_id: uuid.UUID | None = None, event_id: str | None = None) -> list[dict]:
    """Locks both sub-accounts, checks them against the trade, and books its legs; returns the transactions."""
    check_distinct(trade)
    accounts = ledger.lock(conn, user_id, [trade.base_sub_account_id, trade.quote_sub_account_id])
    return ledger.apply(conn, accounts, checked_legs(trade, accounts, exchange_id),
                        trading_log_id=trading_log_id, event_id=event_id)


def check_distinct(trade: Trade) -> None:
    if trade.base_sub_account_id == trade.quote_sub_account_id:
        raise Unprocessable("A trade needs two different sub-accounts.", code="SAME_SUB_ACCOUNT")


def checked_legs(trade: Trade, accounts: dict[uuid.UUID, Account], exchange_id: uuid.UUID) -> list[Leg]:
    """The trade's legs once its (locked, owned) sub-accounts are checked against it."""
    base, quote = accounts[trade.base_sub_account_id], accounts[trade.quote_sub_account_id]
    _check_pair(trade, base, quote, exchange_id)
    return trade_legs(trade, quote.symbol)


def apply_transfer(conn: sa.Connection, user_id: uuid.UUID, sub_account_id: uuid.UUID, kind: str, amount: Decimal,
                   *, reason: str | None = None, exchange_id: uuid.UUID | None = None,
                   trading_log_id: uuid.UUID | None = None, event_id: str | None = None,
                   info: dict | None = None) -> dict:
    """A deposit (credit) or withdraw (debit) of one sub-account; returns its transaction."""
    accounts = ledger.lock(conn, user_id, [sub_account_id])
    if exchange_id is not None and accounts[sub_account_id].exchange_id != exchange_id:
        raise NotFound("Sub-account not found on this exchange.", details={"exchange_id": str(exchange_id)})
    leg = Leg(sub_account_id, TRANSFERS[kind], amount, reason or kind)
    return ledger.apply(conn, accounts, [leg], trading_log_id=trading_log_id, event_id=event_id, info=info)[0]
