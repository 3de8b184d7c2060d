"""Holds without an order that carry an expiry are released once their time has passed, by the consumer process
on its own (no request has to arrive): the same booking as every other change, so each expires at most once even
when several processes look at the same moment. The live feed's retention is kept by the same process."""

import datetime as dt
import logging

from db import booking, engine, feed, holds
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


def trim_feed(retention: dt.timedelta) -> int:
    """Deletes the live feed's events older than `retention` (a job, never a request); returns how many."""
    total = 0
    try:
        while True:
            with engine.transaction() as conn:
                removed = feed.trim(conn, retention)
            total += removed
            if removed == 0:
                return total
    except Exception:  # noqa: BLE001 - the next round trims what this one could not
        log.warning("could not trim the live feed", exc_info=True)
        return total
