"""Holds: part of a sub-account's balance reserved for an order, or without one until it expires.

`locked` is the sum of the open holds' `remaining`; `available = balance - locked`. A hold is opened once, taken
from by its order's fills (the held part of each fill), and resolves once: `settled` when fills took all of it,
`released` when its order ended or the bot released it, `expired` when its time passed. The rules here are pure;
db/booking.py locks the rows, plans with these rules and writes the result (`write`).
"""

import datetime as dt
import functools
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine, ids
from db.errors import Conflict, NotFound, Refused
from db.legs import MONEY_CONTEXT
from db.schema import holds

Status = Literal["open", "released", "settled", "expired"]
OrderKey = tuple[uuid.UUID, uuid.UUID, str]  # (user_id, exchange_id, the bot's order_id)


_UUIDS = bulk.Array(UUID(as_uuid=True))
# Order keys as three unnested arrays (a join on them is planned like one on a table, unlike a long IN list of
# tuples), bound by `order_keys`.
ORDER_KEYS = sa.select(sa.func.unnest(sa.bindparam("k_users", type_=_UUIDS)).label("user_id"),
                       sa.func.unnest(sa.bindparam("k_exchanges", type_=_UUIDS)).label("exchange_id"),
                       sa.func.unnest(sa.bindparam("k_orders", type_=bulk.Array(sa.Text()))).label("order_id"))


def order_keys(keys: set[OrderKey]) -> dict[str, list]:
    """The values of ORDER_KEYS's arrays."""
    users, exchanges, order_ids = zip(*sorted(keys))
    return {"k_users": list(users), "k_exchanges": list(exchanges), "k_orders": list(order_ids)}


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    user_id: uuid.UUID
    exchange_id: uuid.UUID
    sub_account_id: uuid.UUID
    order_id: str | None
    amount: Decimal
    remaining: Decimal
    status: Status = "open"
    expires_at: dt.datetime | None = None
    info: dict = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def key(self) -> OrderKey | None:
        return (self.user_id, self.exchange_id, self.order_id) if self.order_id is not None else None

    @property
    def held(self) -> Decimal:
        """What it adds to its sub-account's `locked`."""
        return self.remaining if self.is_open else Decimal(0)


def opened(user_id: uuid.UUID, exchange_id: uuid.UUID, sub_account_id: uuid.UUID, amount: Decimal, *,
           order_id: str | None = None, expires_at: dt.datetime | None = None) -> Hold:
    if amount <= 0:
        raise Refused("A hold must be greater than zero.", code="AMOUNT_NOT_POSITIVE")
    return Hold(ids.new_id(), user_id, exchange_id, sub_account_id, order_id, amount, amount, expires_at=expires_at)


def taken(hold: Hold, amount: Decimal) -> Hold:
    """A fill takes `amount` of the hold (never more than remains); all of it taken settles the hold."""
    _check_open(hold)
    if amount > hold.remaining:
        raise Refused(f"The fill takes {amount} of a hold with {hold.remaining} remaining.", code="HOLD_EXCEEDED",
                      details={"hold_id": str(hold.id)})
    with localcontext(MONEY_CONTEXT):
        remaining = hold.remaining - amount
    return replace(hold, remaining=remaining, status="open" if remaining else "settled")


def released(hold: Hold, amount: Decimal | None = None, *, status: Status = "released") -> Hold:
    """`amount` of the hold given back (None: all that remains); the hold resolves when nothing remains."""
    _check_open(hold)
    amount = hold.remaining if amount is None else amount
    if amount > hold.remaining:
        raise Refused(f"Releasing {amount} from a hold with {hold.remaining} remaining.",
                      code="RELEASE_EXCEEDS_HOLD", details={"hold_id": str(hold.id), "remaining": hold.remaining})
    with localcontext(MONEY_CONTEXT):
        remaining = hold.remaining - amount
    return replace(hold, remaining=remaining, status="open" if remaining else status)


def _check_open(hold: Hold) -> None:
    if not hold.is_open:
        raise Conflict(f"This hold was {hold.status} already.", code="HOLD_RESOLVED",
                       details={"hold_id": str(hold.id), "status": hold.status})


def release_oldest(open_holds: list[Hold], amount: Decimal) -> list[Hold]:
    """`amount` released from holds without an order, oldest first; refused beyond what they hold together."""
    total = sum((hold.remaining for hold in open_holds), Decimal(0))
    if amount > total:
        raise Refused("The release would leave `locked` below 0: no hold holds that much.", code="LOCK_OUT_OF_RANGE",
                      details={"held": total})
    changed = []
    for hold in open_holds:
        if amount <= 0:
            break
        part = min(amount, hold.remaining)
        changed.append(released(hold, part))
        amount -= part
    return changed


def missing(key: OrderKey, sub_account_id: uuid.UUID) -> NotFound:
    return NotFound(f"Order {key[2]} holds nothing on this sub-account.", code="HOLD_NOT_FOUND",
                    details={"order_id": key[2], "sub_account_id": str(sub_account_id)})


def locking(*, keys: set[OrderKey], orderless_on: set[uuid.UUID], ids: set[uuid.UUID]) -> engine.Read:
    """Locks the holds of these orders (resolved ones too), the open holds without an order on these
    sub-accounts, and these holds; by id."""
    if not (keys or orderless_on or ids):
        return engine.nothing({})
    values = {**(order_keys(keys) if keys else {}), "orderless_on": list(orderless_on), "ids": list(ids)}
    return engine.Read(_locking(bool(keys), bool(orderless_on), bool(ids)), values,
                       lambda rows: {row.id: Hold(*row) for row in rows})


@functools.cache
def _locking(keys: bool, orderless: bool, ids: bool) -> sa.Select:
    """lock_for's statement for the kinds of holds asked for, built once."""
    c = holds.c
    wanted = []
    if keys:
        wanted.append(sa.tuple_(c.user_id, c.exchange_id, c.order_id).in_(ORDER_KEYS))
    if orderless:
        wanted.append(sa.and_(c.order_id.is_(None), c.status == "open",
                              bulk.among_bound(c.sub_account_id, "orderless_on")))
    if ids:
        wanted.append(bulk.among_bound(c.id, "ids"))
    return (sa.select(c.id, c.user_id, c.exchange_id, c.sub_account_id, c.order_id, c.amount, c.remaining, c.status,
                      c.expires_at, c.info)
            .where(sa.or_(*wanted)).order_by(c.created_at, c.id).with_for_update())


def write(conn: sa.Connection, changed: list[Hold], when: dt.datetime) -> None:
    """Inserts the new holds and brings the others to their planned state, in one statement."""
    bulk.insert(conn, holds, [
        {"id": h.id, "user_id": h.user_id, "exchange_id": h.exchange_id, "sub_account_id": h.sub_account_id,
         "order_id": h.order_id, "amount": h.amount, "remaining": h.remaining, "status": h.status,
         "expires_at": h.expires_at, "resolved_at": None if h.is_open else when, "info": h.info,
         "created_at": when, "updated_at": when} for h in changed],
        suffix="ON CONFLICT (id) DO UPDATE SET remaining = EXCLUDED.remaining, status = EXCLUDED.status, "
               "resolved_at = EXCLUDED.resolved_at, updated_at = EXCLUDED.updated_at")


def expired(conn: sa.Connection, limit: int = 500) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """(hold id, user id, sub-account id) of open holds whose time has passed. Not locked here: the booking of
    their expiry locks the sub-account, then the hold, and finds it resolved if another process expired it first."""
    c = holds.c
    return [tuple(row) for row in conn.execute(
        sa.select(c.id, c.user_id, c.sub_account_id)
        .where(c.status == "open", c.expires_at <= sa.func.now()).order_by(c.expires_at).limit(limit))]
