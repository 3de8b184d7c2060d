"""Webhook deliveries: which events go to which webhook, and the state of sending each.

Fan-out (`fan_out`) reads each webhook's new feed events after its cursor and makes a delivery for each event the
webhook subscribes to and for each crossing of its monitors, then moves the cursor, all in one transaction under
the webhook's row lock (`FOR UPDATE SKIP LOCKED`: two deliverers work on different webhooks). A delivery is unique
per (webhook, event id), so even a fan-out repeated after a crash makes it once.

A delivery's states: `pending` -> `succeeded`, or -> `retrying` -> ... -> `succeeded` | `failed`. A deliverer
claims due deliveries (`claim`, `FOR UPDATE SKIP LOCKED`): the claim counts the attempt and leases the row
(`leased_until`, past the attempt's time-out), which no other deliverer claims before the lease ends. The outcome
(`record`) is written only if the row is still open, leased and at that attempt, and it ends the lease: each
attempt is recorded once, and an attempt whose lease ran out (its process stalled) and was claimed again writes
nothing over the newer one. Delivery is at least once: a deliverer that dies after sending and before recording
leaves the row to be claimed again when the lease ends.
"""

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db import monitors, pagination
from db.access import Caller
from db.schema import feed_events, feed_heads, webhook_deliveries, webhooks
from db.webhooks import CROSSED, readable, secret_of
from db.written import decimal_string, rfc3339

OPEN = ("pending", "retrying")
PUBLIC_COLUMNS = [webhook_deliveries.c[name] for name in (
    "id", "webhook_id", "event_id", "event_type", "status", "attempts", "last_status_code", "last_error",
    "next_attempt_at", "delivered_at", "created_at", "updated_at")]


@dataclass(frozen=True)
class Schedule:
    """When a failed attempt is tried again: `base` doubling up to `cap`, until `give_up_after` since the event's
    delivery was made; then it has failed."""
    base: dt.timedelta
    cap: dt.timedelta
    give_up_after: dt.timedelta

    def delay(self, attempts: int) -> dt.timedelta:
        return min(self.base * 2 ** min(attempts - 1, 40), self.cap)


@dataclass(frozen=True)
class Claim:
    id: uuid.UUID
    webhook_id: uuid.UUID
    attempt: int  # this claim's attempt number: its outcome is recorded only at this number
    event_id: str
    url: str
    secret: str
    body: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # the receiver's answer, if it gave one
    error: str | None  # None: delivered

    @property
    def delivered(self) -> bool:
        return self.error is None


def _body(event_id: str, event_type: str, created_at: dt.datetime, user_id, webhook_id, data) -> str:
    return json.dumps({"id": event_id, "type": event_type, "created_at": rfc3339(created_at),
                       "user_id": str(user_id), "webhook_id": str(webhook_id), "data": data},
                      separators=(",", ":"), ensure_ascii=False)


def fan_out(conn: sa.Connection, *, webhooks_per_call: int = 50, events_per_webhook: int = 500) -> int:
    """Makes the deliveries of up to `webhooks_per_call` webhooks that have new feed events; returns how many."""
    w, h = webhooks.c, feed_heads.c
    due = conn.execute(sa.select(w.id, w.user_id, w.cursor, w.events, h.last_id)
                       .join_from(webhooks, feed_heads, h.user_id == w.user_id)
                       .where(w.deleted_at.is_(None), h.last_id > w.cursor).order_by(w.cursor)
                       .limit(webhooks_per_call).with_for_update(of=webhooks, skip_locked=True)).all()
    made = 0
    for webhook_id, user_id, cursor, subscribed, head in due:
        made += _fan_out_one(conn, webhook_id, user_id, cursor, set(subscribed), head, events_per_webhook)
    return made


def _fan_out_one(conn, webhook_id, user_id, cursor: int, subscribed: set[str], head: int, limit: int) -> int:
    f = feed_events.c
    events = conn.execute(sa.select(f.id, f.type, f.data, f.created_at)
                          .where(f.user_id == user_id, f.id > cursor).order_by(f.id).limit(limit)).all()
    watching = {m.id: m for m in monitors.load(conn, webhook_id)}
    changed = set()
    rows = []
    for feed_id, event_type, data, created_at in events:
        if event_type in subscribed:
            rows.append(_row(webhook_id, user_id, str(feed_id), event_type, created_at, data))
        if event_type != "balance.changed":
            continue
        for monitor in [m for m in watching.values() if str(m.sub_account_id) == data["id"]]:
            after, fired = monitors.observe(monitor, feed_id, Decimal(data["available"]), created_at)
            if fired:
                rows.append(_row(webhook_id, user_id, f"{feed_id}:{monitor.id}", CROSSED, created_at, {
                    "monitor_id": str(monitor.id), "sub_account": data,
                    "threshold": decimal_string(monitor.threshold), "direction": monitor.direction,
                    "available": data["available"]}))
            if after != monitor:
                watching[monitor.id] = after
                changed.add(monitor.id)
    # Everything up to the head read with the lock is read when the page was not full (ids are committed in order).
    new_cursor = events[-1][0] if len(events) == limit else max(head, events[-1][0] if events else 0)
    if rows:
        conn.execute(insert(webhook_deliveries).values(rows)
                     .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))
    monitors.save(conn, [watching[i] for i in changed])
    conn.execute(sa.update(webhooks).where(webhooks.c.id == webhook_id).values(cursor=new_cursor))
    return len(rows)


def _row(webhook_id, user_id, event_id: str, event_type: str, created_at: dt.datetime, data) -> dict:
    return {"webhook_id": webhook_id, "user_id": user_id, "event_id": event_id, "event_type": event_type,
            "body": _body(event_id, event_type, created_at, user_id, webhook_id, data), "status": "pending",
            "next_attempt_at": sa.func.now()}


def claim(conn: sa.Connection, count: int, lease: dt.timedelta) -> list[Claim]:
    """Up to `count` due deliveries, oldest due first, each claimed for one attempt until `lease` has passed."""
    d, w = webhook_deliveries.c, webhooks.c
    due = (sa.select(d.id).where(d.status.in_(OPEN), d.next_attempt_at <= sa.func.now(),
                                 sa.or_(d.leased_until.is_(None), d.leased_until <= sa.func.now()))
           .order_by(d.next_attempt_at).limit(count).with_for_update(skip_locked=True).subquery())
    claimed = conn.execute(sa.update(webhook_deliveries).where(d.id == due.c.id).values(
        attempts=d.attempts + 1, leased_until=sa.func.now() + lease, updated_at=sa.func.now())
        .returning(d.id, d.webhook_id, d.attempts, d.event_id, d.body)).all()
    if not claimed:
        return []
    hooks = {row.id: row for row in conn.execute(sa.select(w.id, w.user_id, w.url, w.secret_ciphertext, w.key_id)
                                                 .where(w.id.in_({row.webhook_id for row in claimed})))}
    return [Claim(row.id, row.webhook_id, row.attempts, row.event_id, hooks[row.webhook_id].url,
                  secret_of(hooks[row.webhook_id]), row.body) for row in claimed]


def record(conn: sa.Connection, claimed: Claim, outcome: Outcome, schedule: Schedule) -> str | None:
    """Writes the attempt's outcome; returns the new status, or None when it was recorded already or the row moved
    on without this attempt (deleted webhook, or the lease ran out and another attempt claimed it)."""
    d = webhook_deliveries.c
    mine = sa.and_(d.id == claimed.id, d.attempts == claimed.attempt, d.status.in_(OPEN), d.leased_until.is_not(None))
    common = {"last_status_code": outcome.status_code, "leased_until": None, "updated_at": sa.func.now()}
    if outcome.delivered:
        values = {**common, "status": "succeeded", "last_error": None, "next_attempt_at": None,
                  "delivered_at": sa.func.now()}
    else:
        retry_at = sa.func.now() + schedule.delay(claimed.attempt)
        gives_up = retry_at > d.created_at + schedule.give_up_after
        values = {**common, "last_error": outcome.error[:1000],
                  "status": sa.case((gives_up, "failed"), else_="retrying"),
                  "next_attempt_at": sa.case((gives_up, sa.null()), else_=retry_at)}
    return conn.execute(sa.update(webhook_deliveries).where(mine).values(**values)
                        .returning(d.status)).scalar_one_or_none()


def list_page(conn: sa.Connection, caller: Caller, webhook_id, *, limit: int, cursor: str | None,
              status: str | None = None) -> tuple[list[dict], str | None]:
    readable(conn, caller, webhook_id)
    query = sa.select(*PUBLIC_COLUMNS).where(webhook_deliveries.c.webhook_id == webhook_id)
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    return pagination.page(conn, query, webhook_deliveries.c.created_at, webhook_deliveries.c.id, limit, cursor)


def trim(conn: sa.Connection, retention: dt.timedelta, limit: int = 10_000) -> int:
    """Deletes up to `limit` finished deliveries older than `retention`; returns how many."""
    d = webhook_deliveries.c
    old = (sa.select(d.id).where(d.created_at < sa.func.now() - retention, d.status.not_in(OPEN))
           .limit(limit).scalar_subquery())
    return conn.execute(sa.delete(webhook_deliveries).where(d.id.in_(old))).rowcount
