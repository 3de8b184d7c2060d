"""Holds without an order that carry an expiry are released once their time has passed, by the consumer process
on its own (no request has to arrive): the same booking as every other change, so each expires at most once even
when several processes look at the same moment."""

import logging

from db import booking, engine, holds
from db.commands import Entry, HoldExpiry

log = logging.getLogger("tiris.consumer")


def release_expired() -> int:
    """Expires the holds whose time has passed; returns how many this call expired."""
    try:
        with engine.transaction() as conn:
            due = holds.expired(conn)
            outcomes = booking.book(conn, [Entry(user_id, HoldExpiry(hold_id, sub_account_id))
                                           for hold_id, user_id, sub_account_id in due])
    except Exception:  # noqa: BLE001 - the next round tries again; a lapsed hold is released late, never twice
        log.warning("could not release expired holds", exc_info=True)
        return 0
    return sum(isinstance(outcome, booking.Booked) for outcome in outcomes)
