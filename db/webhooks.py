"""Webhooks: a user's subscriptions of a URL to their live feed's events and to balance monitors.

Deliveries begin with the events after the webhook's creation (its cursor starts at the user's feed head). The
signing secret is made here, returned once, and kept sealed like exchange credentials (db/crypto.py), bound to the
user and the webhook. The URL is checked against WEBHOOK_ALLOWED_HOSTS (db/webhook_targets.py) on every change.
"""

import secrets
import uuid

import sqlalchemy as sa

from db import crypto, feed, monitors, pagination
from db.access import Caller, readable_by
from db.errors import NotFound, Refused
from db.schema import webhook_deliveries, webhooks
from db.webhook_targets import Allowed, check_target

CROSSED = "balance.threshold_crossed"  # the event type of a monitor's crossing
PUBLIC_COLUMNS = [webhooks.c[name] for name in (
    "id", "user_id", "url", "events", "description", "created_at", "updated_at")]
LIVE = webhooks.c.deleted_at.is_(None)
_UNSET = object()


def _field(webhook_id: uuid.UUID) -> str:
    return f"webhook_secret:{webhook_id}"  # the sealed secret opens only for this webhook's row


def secret_of(row) -> str:
    return crypto.open_sealed(row.secret_ciphertext, row.key_id, row.user_id, _field(row.id))


def _with_monitors(conn: sa.Connection, rows: list[dict]) -> list[dict]:
    found = monitors.of_webhooks(conn, [row["id"] for row in rows])
    return [{**row, "monitors": found[row["id"]]} for row in rows]


def create(conn: sa.Connection, caller: Caller, *, url: str, events: list[str], monitor_specs: list[dict],
           description: str | None, allowed: Allowed, max_per_user: int) -> tuple[dict, str]:
    """The new webhook and its secret (the only time it is given out)."""
    check_target(url, allowed)
    # Serializes a user's creations, so the limit holds under concurrent requests.
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"webhooks:{caller.id}"})
    count = conn.execute(sa.select(sa.func.count()).where(webhooks.c.user_id == caller.id, LIVE)).scalar_one()
    if count >= max_per_user:
        raise Refused(f"A user may have at most {max_per_user} webhooks.", code="TOO_MANY_WEBHOOKS",
                      details={"limit": max_per_user})
    webhook_id = uuid.uuid4()
    secret = "whsec_" + secrets.token_urlsafe(32)
    sealed, key_id = crypto.seal(secret, caller.id, _field(webhook_id))
    conn.execute(sa.insert(webhooks).values(
        id=webhook_id, user_id=caller.id, url=url, events=list(events), description=description,
        secret_ciphertext=sealed, key_id=key_id, cursor=feed.head(conn, caller.id)))
    monitors.replace_all(conn, caller.id, webhook_id, monitor_specs)
    return get(conn, caller, webhook_id), secret


def get(conn: sa.Connection, caller: Caller, webhook_id) -> dict:
    row = conn.execute(sa.select(*PUBLIC_COLUMNS).where(
        webhooks.c.id == webhook_id, LIVE, readable_by(webhooks, caller))).mappings().first()
    if row is None:
        raise NotFound("Webhook not found.")
    return _with_monitors(conn, [dict(row)])[0]


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None,
              user_id: str | None = None) -> tuple[list[dict], str | None]:
    query = sa.select(*PUBLIC_COLUMNS).where(LIVE, readable_by(webhooks, caller, user_id))
    rows, next_cursor = pagination.page(conn, query, webhooks.c.created_at, webhooks.c.id, limit, cursor)
    return _with_monitors(conn, rows), next_cursor


def _lock_own(conn: sa.Connection, caller: Caller, webhook_id) -> sa.ColumnElement[bool]:
    """The caller's own live webhook, locked (fan-out waits for the change); 404 otherwise, admins included."""
    owned = sa.and_(webhooks.c.id == webhook_id, webhooks.c.user_id == caller.id, LIVE)
    if conn.execute(sa.select(webhooks.c.id).where(owned).with_for_update()).first() is None:
        raise NotFound("Webhook not found.")
    return owned


def update(conn: sa.Connection, caller: Caller, webhook_id, *, allowed: Allowed, url: str | None = None,
           events: list[str] | None = None, monitor_specs: list[dict] | None = None, description=_UNSET) -> dict:
    """Changes what is given (None: unchanged; `monitor_specs` replaces the whole list)."""
    owned = _lock_own(conn, caller, webhook_id)
    if url is not None:
        check_target(url, allowed)
    values = {key: value for key, value in (("url", url), ("events", events)) if value is not None}
    if description is not _UNSET:
        values["description"] = description
    conn.execute(sa.update(webhooks).where(owned).values(**values, updated_at=sa.func.now()))
    if monitor_specs is not None:
        monitors.replace_all(conn, caller.id, uuid.UUID(str(webhook_id)), monitor_specs)
    return get(conn, caller, webhook_id)


def delete(conn: sa.Connection, caller: Caller, webhook_id) -> None:
    """Soft delete; the deliveries not made yet end as failed (a deliverer's attempt in flight records nothing)."""
    owned = _lock_own(conn, caller, webhook_id)
    conn.execute(sa.update(webhooks).where(owned).values(deleted_at=sa.func.now(), updated_at=sa.func.now()))
    d = webhook_deliveries.c
    conn.execute(sa.update(webhook_deliveries).where(d.webhook_id == webhook_id, d.status.in_(("pending", "retrying")))
                 .values(status="failed", last_error="the webhook was deleted", next_attempt_at=None,
                         leased_until=None, updated_at=sa.func.now()))


def readable(conn: sa.Connection, caller: Caller, webhook_id) -> None:
    """404 unless the caller may read this webhook (theirs, or any for an admin)."""
    if conn.execute(sa.select(webhooks.c.id).where(
            webhooks.c.id == webhook_id, LIVE, readable_by(webhooks, caller))).first() is None:
        raise NotFound("Webhook not found.")


def rotate_keys(conn: sa.Connection, active_key_id: str) -> int:
    """Re-seals every webhook secret not sealed with the active key; returns how many."""
    stale = conn.execute(sa.select(webhooks).where(webhooks.c.key_id != active_key_id).with_for_update()).all()
    for row in stale:
        sealed, key_id = crypto.seal(secret_of(row), row.user_id, _field(row.id))
        conn.execute(sa.update(webhooks).where(webhooks.c.id == row.id).values(secret_ciphertext=sealed,
                                                                                key_id=key_id))
    return len(stale)
