"""What the core can be asked to book, as typed values. Both doors parse what arrives into these (the HTTP door from
a validated body, the event door from a validated event); db/booking.py is the one place that carries them out.

Money is Decimal, ids are UUIDs, kinds are the contracts' generated enums: nothing here is a REST body or an event.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from generated.models import BotState, FeeAsset, OrderSide, OrderType, TradeType, TradingLogSource, TradingLogType


@dataclass(frozen=True)
class Transfer:
    """Money in or out of one sub-account: a deposit, a withdrawal, an opening balance."""
    sub_account_id: uuid.UUID
    direction: Literal["credit", "debit"]
    amount: Decimal
    reason: str
    exchange_id: uuid.UUID | None = None  # when the caller named the exchange, the sub-account must be on it
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """What an event says of the bot's order: its id on the exchange, its pair, and what is known of its size."""
    exchange_id: uuid.UUID
    order_id: str
    base_sub_account_id: uuid.UUID
    quote_sub_account_id: uuid.UUID
    symbol: str
    side: OrderSide
    order_type: OrderType
    source: str
    amount: Decimal | None = None  # the order's size in the base asset (a fill's event does not say it)
    price: Decimal | None = None  # a limit order's


@dataclass(frozen=True)
class Fill:
    """A trade against an order: which order, and the exchange's id of the trade (an order fills once per trade)."""
    order: Order
    trade_id: str


@dataclass(frozen=True)
class Trade:
    """A trade between a base and a quote sub-account of one exchange (a trading log's, or a bot's fill)."""
    kind: TradeType
    exchange_id: uuid.UUID
    base_sub_account_id: uuid.UUID
    quote_sub_account_id: uuid.UUID
    volume: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: FeeAsset = FeeAsset.quote
    symbol: str | None = None  # "BASE/QUOTE": checked against the sub-accounts when given
    fill: Fill | None = None  # a bot's fill: the order it fills, whose hold it consumes


@dataclass(frozen=True)
class Adjustment:
    """The exchange reports a sub-account's balance: ours is moved to it; where it started differently is drift."""
    exchange_id: uuid.UUID
    sub_account_id: uuid.UUID
    symbol: str
    new_balance: Decimal
    reported_previous_balance: Decimal


@dataclass(frozen=True)
class LockChange:
    """The bot holds part of a sub-account's balance (locking) or releases it: the hold of `order_id` on this
    sub-account, or without an order, holds that may expire (released oldest first)."""
    exchange_id: uuid.UUID
    sub_account_id: uuid.UUID
    symbol: str
    amount: Decimal
    locking: bool
    order_id: str | None = None
    expires_at: dt.datetime | None = None  # a hold without an order may say when it lapses


@dataclass(frozen=True)
class OrderChange:
    """The bot placed an order (it is held for), or it ended unfilled: cancelled or failed (its hold is released)."""
    order: Order
    change: Literal["created", "cancelled", "failed"]
    at: dt.datetime  # when, at the bot


@dataclass(frozen=True)
class HoldExpiry:
    """A hold without an order whose time has passed is released (by the expiry job, not by a request)."""
    hold_id: uuid.UUID
    sub_account_id: uuid.UUID


@dataclass(frozen=True)
class BotSeen:
    """A bot's heartbeat: its one status row is brought up to date (an older beat never overwrites a newer one)."""
    exchange_id: uuid.UUID
    bot_id: str
    status: BotState
    seen_at: dt.datetime
    version: str | None = None
    info: dict = field(default_factory=dict)


Command = Transfer | Trade | Adjustment | LockChange | OrderChange | HoldExpiry | BotSeen


@dataclass(frozen=True)
class Log:
    """The trading log written with a command (or alone, as a note); its exchange must be the user's."""
    type: TradingLogType
    source: TradingLogSource
    exchange_id: uuid.UUID
    message: str
    event_time: dt.datetime | None = None
    sub_account_id: uuid.UUID | None = None  # a transfer's, or the one a note is about
    amount: Decimal | None = None  # a transfer's
    trade: dict | None = None  # the trade as its log shows it
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One thing to book for one user: a command, the log that records it, and the event it came from."""
    user_id: uuid.UUID
    command: Command | None
    log: Log | None = None
    event_id: str | None = None
