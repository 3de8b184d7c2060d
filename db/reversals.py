"""Reversals: the booked legs a Reversal command undoes, the rules for undoing them, and the links written with them.

A booked transaction never changes (transactions are a TimescaleDB hypertable where installed); a reversal books
the opposite legs, and the `reversals` table links each transaction to the leg that reversed it. Its primary key
makes "reversed at most once" a property of the database; db/booking.py checks it before, under the locks of the
sub-accounts involved, so that a second reversal is a clean Conflict rather than a failed insert:

1. `read`, before the sub-accounts are locked: the legs to reverse (which sub-accounts to lock);
2. `linked`, once they are locked: which of those legs are reversed already or are reversals themselves. Every
   reversal of a leg locks that leg's sub-account, and READ COMMITTED reads what committed before each statement, so
   a reversal that committed while this one waited for the lock is seen here;
3. `to_reverse` and `opposite_legs` (pure) plan it;
4. `write` links what was booked.
"""

import datetime as dt
import uuid
from dataclasses import dataclass, replace
from decimal import Decimal

import sqlalchemy as sa

from db import bulk
from db.commands import Entry, Reversal
from db.errors import Conflict, NotFound, Refused
from db.legs import Leg
from db.schema import reversals, transactions

REASON = "reversal"  # the reversing legs' reason (TransactionReason)


@dataclass(frozen=True)
class Original:
    """A booked leg, as its reversal needs it."""
    id: uuid.UUID
    timestamp: dt.datetime
    user_id: uuid.UUID
    sub_account_id: uuid.UUID
    direction: str
    amount: Decimal
    price: Decimal | None
    quote_symbol: str | None
    trading_log_id: uuid.UUID | None
    reversed_by: uuid.UUID | None = None  # the leg that reversed it
    reverses: uuid.UUID | None = None  # on a reversing leg: the transaction it reversed


def _named(entries: list[Entry]) -> set[uuid.UUID]:
    return {i for entry in entries if isinstance(entry.command, Reversal) for i in entry.command.transaction_ids}


def read(conn: sa.Connection, entries: list[Entry]) -> dict[uuid.UUID, tuple[Original, ...]]:
    """For each transaction the entries' reversals name: the legs booked with it (its own first, then the other legs
    of its trading log). Legs of one entry share its instant, so the (timestamp) index finds them; a trading log
    deleted by retention does not hide them."""
    named = _named(entries)
    if not named:
        return {}
    n, t = transactions.alias("n"), transactions.alias("t")
    rows = conn.execute(
        sa.select(n.c.id.label("named"), t.c.id, t.c.timestamp, t.c.user_id, t.c.sub_account_id, t.c.direction,
                  t.c.amount, t.c.price, t.c.quote_symbol, t.c.trading_log_id)
        .select_from(n.join(t, sa.and_(t.c.timestamp == n.c.timestamp, sa.or_(
            t.c.id == n.c.id, t.c.trading_log_id == n.c.trading_log_id))))
        .where(n.c.id.in_(sorted(named)))
        .order_by(n.c.id, (t.c.id != n.c.id), t.c.id)).all()
    found: dict[uuid.UUID, list[Original]] = {}
    for row in rows:
        found.setdefault(row.named, []).append(Original(*row[1:]))
    return {named_id: tuple(legs) for named_id, legs in found.items()}


def accounts(originals: dict[uuid.UUID, tuple[Original, ...]]) -> set[uuid.UUID]:
    return {leg.sub_account_id for legs in originals.values() for leg in legs}


def linked(conn: sa.Connection, originals: dict[uuid.UUID, tuple[Original, ...]]
           ) -> dict[uuid.UUID, tuple[Original, ...]]:
    """The legs with their links as committed now (call it with their sub-accounts locked)."""
    ids = sorted({leg.id for legs in originals.values() for leg in legs})
    if not ids:
        return originals
    c = reversals.c
    rows = conn.execute(sa.select(c.transaction_id, c.reversed_by).where(
        sa.or_(c.transaction_id.in_(ids), c.reversed_by.in_(ids)))).all()
    reversed_by = {row.transaction_id: row.reversed_by for row in rows}
    reverses = {row.reversed_by: row.transaction_id for row in rows}
    return {named_id: tuple(replace(leg, reversed_by=reversed_by.get(leg.id), reverses=reverses.get(leg.id))
                            for leg in legs) for named_id, legs in originals.items()}


def to_reverse(command: Reversal, originals: dict[uuid.UUID, tuple[Original, ...]],
               user_id: uuid.UUID) -> list[Original]:
    """The legs the command reverses, checked: the user's, none a reversal, none reversed already."""
    if not command.transaction_ids:
        raise Refused("Nothing to reverse: no money moved.", code="NOT_REVERSIBLE")
    chosen: dict[uuid.UUID, Original] = {}
    for transaction_id in command.transaction_ids:
        legs = originals.get(transaction_id, ())
        if not legs or legs[0].user_id != user_id:  # missing and someone else's look the same
            raise NotFound("Transaction not found.", details={"transaction_id": str(transaction_id)})
        chosen.update((leg.id, leg) for leg in legs)
    for leg in chosen.values():
        if leg.reverses is not None:
            raise Refused("A reversal is not reversed; book a new entry instead.", code="NOT_REVERSIBLE",
                          details={"transaction_id": str(leg.id), "reverses_transaction_id": str(leg.reverses)})
    done = [leg for leg in chosen.values() if leg.reversed_by is not None]
    if done:
        raise Conflict("This transaction has been reversed already.", code="ALREADY_REVERSED",
                       details={"reversed_by": {str(leg.id): str(leg.reversed_by) for leg in done}})
    return list(chosen.values())


def opposite_legs(originals: list[Original]) -> list[Leg]:
    """Each leg undone: the other direction, the same amount, price and quote symbol. No fee: a reversed trade's fee
    comes back inside the amount, and counting it again would double the fees paid."""
    return [Leg(leg.sub_account_id, "debit" if leg.direction == "credit" else "credit", leg.amount, REASON,
                leg.price, leg.quote_symbol) for leg in originals]


def leg_info(command: Reversal) -> dict:
    return {**command.info, "reason": command.reason} if command.reason else dict(command.info)


def write(conn: sa.Connection, links: list[tuple[uuid.UUID, dict]]) -> None:
    """Links each reversed transaction to its reversing row (written already) and shows the link on that row."""
    bulk.insert(conn, reversals, [{"transaction_id": original_id, "reversed_by": row["id"]}
                                  for original_id, row in links])
    for original_id, row in links:
        row["reverses_transaction_id"] = original_id
