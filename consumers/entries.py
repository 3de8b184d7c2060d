"""What each of the bot's events books: the event door's parse of a validated event into the core's commands.

A fill books like a `long` (buy) or `short` (sell) trading log and moves its order on (taking from its hold); order
events place or end the order (holding for it, releasing what it holds) with a note; error and signal events are
notes; balance events adjust, hold or release; a heartbeat updates the bot's status. The checks that what an event
names is the user's happen once, in db/booking.py.
"""

from enum import Enum

from pydantic import BaseModel, RootModel

from db.commands import Adjustment, BotSeen, Entry, Fill, LockChange, Log, Order, OrderChange, Trade
from generated.models import (BalanceLockEvent, BalanceUpdatedEvent, ErrorEvent, EventType, HeartbeatEvent,
                              OrderEvent, OrderFilledEvent, OrderSide, SignalEvent, TradeType, TradingLogSource,
                              TradingLogType)

ORDER_NOTES = {EventType.orders_created: TradingLogType.order_created,
               EventType.orders_cancelled: TradingLogType.order_cancelled,
               EventType.orders_failed: TradingLogType.order_failed}
ORDER_FIELDS = {"order_id", "symbol", "side", "order_type", "base_sub_account_id", "quote_sub_account_id", "amount",
                "price", "reason", "trade_id", "fee", "fee_asset"}
FILL_FIELDS = {"order_id", "trade_id", "fee_asset"}
NOTE_FIELDS = {"code", "severity", "symbol", "signal", "strength"}


def entry_for(event: BaseModel) -> Entry:
    user_id, event_id = event.user_id, event.event_id
    if isinstance(event, OrderFilledEvent):
        kind = TradeType.long if event.side == OrderSide.buy else TradeType.short
        return Entry(user_id, _trade(event), _log(event, kind, "filled", FILL_FIELDS, trade=_trade_shown(event)),
                     event_id)
    if isinstance(event, OrderEvent):
        change = event.event_type.value.removeprefix("orders.")
        return Entry(user_id, OrderChange(_order(event, event.amount, event.price), change, event.timestamp),
                     _log(event, ORDER_NOTES[event.event_type], event.event_type.value.removeprefix("orders."),
                          ORDER_FIELDS),
                     event_id)
    if isinstance(event, (ErrorEvent, SignalEvent)):
        kind = TradingLogType.error if isinstance(event, ErrorEvent) else TradingLogType.signal
        return Entry(user_id, None, _log(event, kind, None, NOTE_FIELDS), event_id)
    if isinstance(event, BalanceUpdatedEvent):
        return Entry(user_id, Adjustment(event.exchange_id, event.sub_account_id, event.symbol.root,
                                         event.new_balance.root, event.previous_balance.root), None, event_id)
    if isinstance(event, BalanceLockEvent):
        return Entry(user_id, LockChange(event.exchange_id, event.sub_account_id, event.symbol.root,
                                         event.amount.root, event.event_type == EventType.balance_locked,
                                         event.order_id, event.expires_at), None, event_id)
    if isinstance(event, HeartbeatEvent):
        info = {"uptime_seconds": event.uptime_seconds, **(event.info.model_dump() if event.info else {})}
        return Entry(user_id, BotSeen(event.exchange_id, event.bot_id, event.status, event.timestamp, event.version,
                                      info), None, event_id)
    raise TypeError(f"no entry for {type(event).__name__}")


def _order(event: OrderEvent | OrderFilledEvent, amount=None, price=None) -> Order:
    """What the event says of its order (a fill's `amount` and `price` are the trade's, not the order's)."""
    return Order(event.exchange_id, event.order_id, event.base_sub_account_id, event.quote_sub_account_id,
                 event.symbol, event.side, event.order_type, event.source, amount.root if amount else None,
                 price.root if price else None)


def _trade(fill: OrderFilledEvent) -> Trade:
    return Trade(TradeType.long if fill.side == OrderSide.buy else TradeType.short, fill.exchange_id,
                 fill.base_sub_account_id, fill.quote_sub_account_id, fill.amount.root, fill.price.root,
                 fill.fee.root, fill.fee_asset, fill.symbol, Fill(_order(fill), fill.trade_id))


def _trade_shown(fill: OrderFilledEvent) -> dict:
    """The fill as its trading log's `trade` shows it (the shape of a trade log's)."""
    return {"base_sub_account_id": str(fill.base_sub_account_id), "quote_sub_account_id": str(fill.quote_sub_account_id),
            "symbol": fill.symbol, "volume": str(fill.amount.root), "price": str(fill.price.root),
            "fee": str(fill.fee.root)}


def _log(event: BaseModel, kind: TradeType | TradingLogType, verb: str | None, fields: set[str], *,
         trade: dict | None = None) -> Log:
    """The event's trading log: `fields` of the event are kept in its info, with the event's own info and the bot."""
    if verb:  # an order's event: the message says what happened to which order
        amount = event.amount.root if event.amount is not None else None
        words = [event.side.value, str(amount) if amount is not None else None, event.symbol, "order", event.order_id,
                 verb]
        message = " ".join(word for word in words if word)
    else:
        message = event.message
    info = {key: _written(value) for key in sorted(fields) if (value := getattr(event, key, None)) is not None}
    extra = event.info.model_dump() if event.info is not None and not trade else {}  # a fill's log: the trade's ids
    return Log(TradingLogType(kind.value), TradingLogSource.bot, event.exchange_id, message, event.timestamp,
               trade=trade, info={**info, **extra, "bot": event.source})


def _written(value):
    """A field of the event as its JSON says it (an enum's value, a decimal's or an id's string)."""
    if isinstance(value, RootModel):
        value = value.root
    if isinstance(value, Enum):
        return value.value
    return value if isinstance(value, (str, int, float, bool)) else str(value)
