"""Database facts that caches elsewhere depend on, announced by the write that makes them true.

The write calls e.g. `user_changed(conn, user_id)` inside its transaction. This process's subscribers hear of it at
once (tiris/cache.py drops its entry), and a NOTIFY on CHANNEL tells every other process that LISTENs: PostgreSQL
delivers it at commit, and only if the transaction commits. db/ says what changed; who caches it is not its business.
"""

from typing import Callable

import sqlalchemy as sa

CHANNEL = "tiris_cache"  # a listener of an older release understands the same channel and payload
USERS = "users"

Subscriber = Callable[[str, str], None]  # (topic, key)
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Called in the writing thread, before the commit, for every notice this process sends."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


def user_changed(conn: sa.Connection, user_id) -> None:
    """Something authentication reads about the user changed: status, role, or whether a session is live."""
    _send(conn, USERS, str(user_id))


def parse(payload: str) -> tuple[str, str]:
    """A notification's payload as (topic, key)."""
    topic, _, key = payload.partition(":")
    return topic, key


def _send(conn: sa.Connection, topic: str, key: str) -> None:
    for subscriber in _subscribers:
        subscriber(topic, key)
    conn.execute(sa.select(sa.func.pg_notify(CHANNEL, f"{topic}:{key}")))
