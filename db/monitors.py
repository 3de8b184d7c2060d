"""Balance monitors: a webhook's notice that a sub-account's available balance crossed a threshold.

A monitor fires once per crossing: when the available balance (`balance - locked`) goes from not beyond the
threshold to beyond it (`below`: under it; `above`: over it). It does not fire again while the balance stays
beyond, and is armed again once the balance is back. What it watches is the live feed's `balance.changed` events
(one per sub-account per booking, in the state the booking left it), read by the webhook's fan-out
(db/webhook_deliveries.py) under the webhook's lock, so a crossing is seen once even with several deliverers.

A new monitor starts from the balance as it is (`beyond` now), and ignores the feed events up to the feed head read
before that balance: it fires on the next crossing, never for the past.
"""

import uuid
from dataclasses import dataclass, replace
from decimal import Decimal

import sqlalchemy as sa

from db import feed
from db.errors import Refused
from db.schema import balance_monitors, sub_accounts

PUBLIC_COLUMNS = [balance_monitors.c[name] for name in (
    "id", "webhook_id", "sub_account_id", "threshold", "direction", "beyond", "last_crossed_at")]


@dataclass(frozen=True)
class Monitor:
    id: uuid.UUID
    sub_account_id: uuid.UUID
    threshold: Decimal
    direction: str  # below | above
    beyond: bool
    since_feed_id: int
    last_crossed_at: object = None


def is_beyond(available: Decimal, threshold: Decimal, direction: str) -> bool:
    return available < threshold if direction == "below" else available > threshold


def observe(monitor: Monitor, feed_id: int, available: Decimal, at) -> tuple[Monitor, bool]:
    """The monitor after seeing this available balance at this feed id (at time `at`), and whether it fired."""
    if feed_id <= monitor.since_feed_id:
        return monitor, False
    beyond = is_beyond(available, monitor.threshold, monitor.direction)
    fired = beyond and not monitor.beyond
    return replace(monitor, beyond=beyond, last_crossed_at=at if fired else monitor.last_crossed_at), fired


def replace_all(conn: sa.Connection, user_id: uuid.UUID, webhook_id: uuid.UUID, wanted: list[dict]) -> None:
    """Makes `wanted` ({sub_account_id, threshold, direction}) the webhook's monitors, each starting from its
    sub-account's available balance now. Refused (UNKNOWN_SUB_ACCOUNT) when a sub-account is not the user's: a
    422 rather than a 404, which on an update would read as the webhook itself being gone."""
    conn.execute(sa.delete(balance_monitors).where(balance_monitors.c.webhook_id == webhook_id))
    if not wanted:
        return
    wanted = [(uuid.UUID(str(m["sub_account_id"])), Decimal(m["threshold"]), m["direction"]) for m in wanted]
    since = feed.head(conn, user_id)  # read before the balances: a later booking's event is after it
    ids = list({account_id for account_id, _, _ in wanted})
    available = dict(conn.execute(sa.select(sub_accounts.c.id, sub_accounts.c.balance - sub_accounts.c.locked).where(
        sub_accounts.c.id.in_(ids), sub_accounts.c.user_id == user_id, sub_accounts.c.deleted_at.is_(None))).all())
    if missing := sorted(str(i) for i in set(ids) - set(available)):
        raise Refused("A monitor names a sub-account you do not have.", code="UNKNOWN_SUB_ACCOUNT",
                      details={"sub_account_ids": missing})
    conn.execute(sa.insert(balance_monitors), [
        {"webhook_id": webhook_id, "user_id": user_id, "sub_account_id": account_id, "threshold": threshold,
         "direction": direction, "since_feed_id": since,
         "beyond": is_beyond(available[account_id], threshold, direction), "position": position}
        for position, (account_id, threshold, direction) in enumerate(wanted)])


def of_webhooks(conn: sa.Connection, webhook_ids: list) -> dict[uuid.UUID, list[dict]]:
    """Each webhook's monitors as the API shows them, in the order they were given."""
    found: dict[uuid.UUID, list[dict]] = {webhook_id: [] for webhook_id in webhook_ids}
    if not webhook_ids:
        return found
    for row in conn.execute(sa.select(*PUBLIC_COLUMNS).where(balance_monitors.c.webhook_id.in_(webhook_ids))
                            .order_by(balance_monitors.c.position)).mappings():
        found[row["webhook_id"]].append({key: value for key, value in row.items() if key != "webhook_id"})
    return found


def load(conn: sa.Connection, webhook_id: uuid.UUID) -> list[Monitor]:
    c = balance_monitors.c
    return [Monitor(*row) for row in conn.execute(
        sa.select(c.id, c.sub_account_id, c.threshold, c.direction, c.beyond, c.since_feed_id, c.last_crossed_at)
        .where(c.webhook_id == webhook_id).order_by(c.position))]


def save(conn: sa.Connection, changed: list[Monitor]) -> None:
    if changed:
        c = balance_monitors.c
        conn.execute(sa.update(balance_monitors).where(c.id == sa.bindparam("monitor_id")).values(
            beyond=sa.bindparam("new_beyond"), last_crossed_at=sa.bindparam("crossed_at")),
            [{"monitor_id": m.id, "new_beyond": m.beyond, "crossed_at": m.last_crossed_at} for m in changed])
