"""The bot's orders: built from its order events and fills, each transition made at most once.

    open --fill--> partially_filled --fill of the rest--> filled
      |                  |
      +--cancel/fail-----+--> cancelled | failed

`filled`, `cancelled` and `failed` are final: an event that would move an order out of one (placed again,
filled, ended again) is refused. The rules are pure; db/booking.py locks the rows (an advisory lock per order key
first, since an order may not exist yet), plans with these rules and writes the result (`write`).
"""

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext

import sqlalchemy as sa

from db import bulk, engine, ids, pagination
from db.access import Caller, readable_by
from db.commands import Order, OrderChange
from db.errors import Conflict, NotFound, Refused
from db.holds import ORDER_KEYS, OrderKey, order_keys
from db.legs import MONEY_CONTEXT, round_debit
from db.schema import holds, orders
from generated.models import OrderSide, OrderStatus

FINAL = frozenset({OrderStatus.filled, OrderStatus.cancelled, OrderStatus.failed})


@dataclass(frozen=True)
class OrderRow:
    id: uuid.UUID
    user_id: uuid.UUID
    exchange_id: uuid.UUID
    order_id: str
    base_sub_account_id: uuid.UUID
    quote_sub_account_id: uuid.UUID
    symbol: str
    side: OrderSide
    order_type: str
    status: OrderStatus
    amount: Decimal | None
    price: Decimal | None
    filled_amount: Decimal
    filled_quote: Decimal
    fees: Decimal
    source: str
    placed_at: dt.datetime | None
    trade_ids: tuple[str, ...] = ()  # the trades that filled it: each fills it once
    transaction_ids: tuple[uuid.UUID, ...] = ()  # what its fills booked, in order
    info: dict = field(default_factory=dict)

    @property
    def key(self) -> OrderKey:
        return self.user_id, self.exchange_id, self.order_id

    @property
    def held_sub_account_id(self) -> uuid.UUID:
        """A buy holds its quote (what it pays with), a sell its base (what it sells)."""
        return self.quote_sub_account_id if self.side == OrderSide.buy else self.base_sub_account_id


def key_of(user_id: uuid.UUID, order: Order) -> OrderKey:
    return user_id, order.exchange_id, order.order_id


def new(user_id: uuid.UUID, order: Order, *, amount: Decimal | None, placed_at: dt.datetime | None) -> OrderRow:
    return OrderRow(ids.new_id(), user_id, order.exchange_id, order.order_id, order.base_sub_account_id,
                    order.quote_sub_account_id, order.symbol, order.side, order.order_type.value, OrderStatus.open,
                    amount, order.price, Decimal(0), Decimal(0), Decimal(0), order.source, placed_at)


def _check_same_order(row: OrderRow, order: Order) -> None:
    if (row.base_sub_account_id, row.quote_sub_account_id, row.side) != (
            order.base_sub_account_id, order.quote_sub_account_id, order.side):
        raise Conflict(f"Order {row.order_id} was known with other sub-accounts or another side.",
                       code="ORDER_MISMATCH", details={"order_id": row.order_id})


def _check_not_final(row: OrderRow, what: str) -> None:
    if row.status in FINAL:
        raise Conflict(f"Order {row.order_id} is {row.status.value} already: it cannot be {what}.",
                       code="ORDER_ENDED", details={"order_id": row.order_id, "status": row.status.value})


def placed(row: OrderRow | None, user_id: uuid.UUID, change: OrderChange) -> OrderRow:
    """`orders.created`: the order is open (or, if fills came first, it learns its size)."""
    order = change.order
    if row is None:
        return new(user_id, order, amount=order.amount, placed_at=change.at)
    _check_same_order(row, order)
    _check_not_final(row, "placed again")
    if row.placed_at is not None:
        raise Conflict(f"Order {row.order_id} was placed already.", code="ORDER_PLACED",
                       details={"order_id": row.order_id})
    amount = row.amount if row.amount is not None else order.amount
    if amount is not None and row.filled_amount > amount:
        raise Refused(f"Order {row.order_id} has {row.filled_amount} filled, more than its amount {amount}.",
                      code="FILL_EXCEEDS_ORDER", details={"order_id": row.order_id})
    status = OrderStatus.filled if amount is not None and row.filled_amount == amount else row.status
    return replace(row, amount=amount, price=row.price if row.price is not None else order.price,
                   order_type=order.order_type.value, status=status, placed_at=change.at)


def ended(row: OrderRow | None, user_id: uuid.UUID, change: OrderChange) -> OrderRow:
    """`orders.cancelled` / `orders.failed`: the order ends unfilled (an unknown order is recorded ended)."""
    row = row or new(user_id, change.order, amount=change.order.amount, placed_at=None)
    _check_same_order(row, change.order)
    _check_not_final(row, change.change)
    return replace(row, status=OrderStatus(change.change))


def filled(row: OrderRow | None, user_id: uuid.UUID, order: Order, trade_id: str, volume: Decimal, price: Decimal,
           fee: Decimal) -> OrderRow:
    """Trade `trade_id` fills `volume` at `price`: partially filled, or filled once all of `amount` is."""
    row = row or new(user_id, order, amount=None, placed_at=None)  # a fill's event does not say the order's size
    _check_same_order(row, order)
    _check_not_final(row, "filled")
    if trade_id in row.trade_ids:
        raise Conflict(f"Trade {trade_id} filled order {row.order_id} already.", code="FILL_REPEATED",
                       details={"order_id": row.order_id, "trade_id": trade_id})
    with localcontext(MONEY_CONTEXT):
        filled_amount = row.filled_amount + volume
        filled_quote = row.filled_quote + price * volume
        fees = row.fees + fee
    if row.amount is not None and filled_amount > row.amount:
        raise Refused(f"The fill of {volume} takes order {row.order_id} beyond its amount {row.amount}.",
                      code="FILL_EXCEEDS_ORDER", details={"order_id": row.order_id, "filled": row.filled_amount})
    done = row.amount is not None and filled_amount == row.amount
    return replace(row, filled_amount=filled_amount, filled_quote=filled_quote, fees=fees,
                   trade_ids=(*row.trade_ids, trade_id),
                   status=OrderStatus.filled if done else OrderStatus.partially_filled)


def to_hold(row: OrderRow) -> Decimal:
    """What the order should hold for what is left of it: price * rest for a buy, the rest for a sell; 0 when it
    cannot be known (a market buy has no price, an order without an amount no rest)."""
    if row.amount is None:
        return Decimal(0)
    with localcontext(MONEY_CONTEXT):
        rest = row.amount - row.filled_amount
        if row.side == OrderSide.sell:
            return rest
        return round_debit(row.price * rest) if row.price is not None else Decimal(0)


# --- rows


_COLUMNS = ("id", "user_id", "exchange_id", "order_id", "base_sub_account_id", "quote_sub_account_id", "symbol",
            "side", "order_type", "status", "amount", "price", "filled_amount", "filled_quote", "fees", "source",
            "placed_at", "trade_ids", "transaction_ids", "info")


def serializing(keys: set[OrderKey]) -> engine.Read:
    """Takes a transaction-scoped advisory lock per order key, in one fixed order: two transactions that touch the
    same order (a consumer's batch and a re-drive) queue, even while the order has no row yet to lock."""
    if not keys:
        return engine.nothing(None)
    return engine.Read(_SERIALIZE, {"keys": sorted({"/".join(map(str, key)) for key in keys})}, lambda rows: None)


_SERIALIZE = sa.text("SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 727276) AS h "
                     "FROM unnest(:keys) AS k ORDER BY h) AS ordered").bindparams(
    sa.bindparam("keys", type_=bulk.Array(sa.Text())))


_wanted = ORDER_KEYS.subquery("wanted")
_LOCK = (sa.select(*(orders.c[name] for name in _COLUMNS))
         .join_from(orders, _wanted, sa.and_(orders.c.user_id == _wanted.c.user_id,
                                             orders.c.exchange_id == _wanted.c.exchange_id,
                                             orders.c.order_id == _wanted.c.order_id))
         .with_for_update(of=orders))


def locking(keys: set[OrderKey]) -> engine.Read:
    """Locks the rows of these orders (those that have one yet)."""
    if not keys:
        return engine.nothing({})
    return engine.Read(_LOCK, order_keys(keys), _found)


def _found(rows) -> dict[OrderKey, OrderRow]:
    found = {}
    for row in rows:
        values = row._asdict()
        values.update(side=OrderSide(values["side"]), status=OrderStatus(values["status"]),
                      trade_ids=tuple(values["trade_ids"]), transaction_ids=tuple(values["transaction_ids"]))
        found[(row.user_id, row.exchange_id, row.order_id)] = OrderRow(**values)
    return found


_CHANGING = ("order_type", "status", "amount", "price", "filled_amount", "filled_quote", "fees", "placed_at",
             "trade_ids", "transaction_ids")


def write(conn: sa.Connection, changed: dict[OrderKey, OrderRow], known: set[OrderKey],
          booked: dict[OrderKey, list[uuid.UUID]], when: dt.datetime) -> None:
    """Inserts the new orders and brings the `known` ones to their planned state, in a statement each, with the
    transactions their fills `booked` added to theirs. The inserts need no ON CONFLICT: `serialize` holds every
    key's lock, so nobody created one of them meanwhile."""
    def values(key: OrderKey, row: OrderRow, names: tuple[str, ...]) -> dict:
        return {**{name: getattr(row, name) for name in names},
                "transaction_ids": (*row.transaction_ids, *booked.get(key, ())), "updated_at": when}

    bulk.insert(conn, orders, [{**values(key, row, _COLUMNS), "created_at": when}
                               for key, row in changed.items() if key not in known])
    bulk.update(conn, orders, [{"id": row.id, **values(key, row, _CHANGING)}
                               for key, row in changed.items() if key in known])


# --- reads

_held = (sa.select(sa.func.coalesce(sa.func.sum(holds.c.remaining), 0))
         .where(holds.c.user_id == orders.c.user_id, holds.c.exchange_id == orders.c.exchange_id,
                holds.c.order_id == orders.c.order_id, holds.c.status == "open").scalar_subquery())
PUBLIC_COLUMNS = [
    *(orders.c[name] for name in ("id", "order_id", "user_id", "exchange_id", "base_sub_account_id",
                                  "quote_sub_account_id", "symbol", "side", "order_type", "status", "amount",
                                  "filled_amount", "price", "fees", "source", "created_at", "updated_at",
                                  "transaction_ids")),
    sa.case((orders.c.filled_amount > 0, sa.func.round(orders.c.filled_quote / orders.c.filled_amount, 18)))
    .label("average_price"),
    _held.label("held_amount"),
]


def get(conn: sa.Connection, caller: Caller, order_id) -> dict:
    row = conn.execute(sa.select(*PUBLIC_COLUMNS).where(orders.c.id == order_id, readable_by(orders, caller))
                       ).mappings().first()
    if row is None:
        raise NotFound("Order not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None, user_id=None,
              exchange_id=None, sub_account_id=None, status=None, symbol=None, start_time=None,
              end_time=None) -> tuple[list[dict], str | None]:
    c = orders.c
    query = sa.select(*PUBLIC_COLUMNS).where(readable_by(orders, caller, user_id))
    for column, value in ((c.exchange_id, exchange_id), (c.status, status), (c.symbol, symbol)):
        if value is not None:
            query = query.where(column == value)
    if sub_account_id is not None:
        query = query.where(sa.or_(c.base_sub_account_id == sub_account_id, c.quote_sub_account_id == sub_account_id))
    query = pagination.in_range(query, c.created_at, start_time, end_time)
    return pagination.page(conn, query, c.created_at, c.id, limit, cursor)

