"""Stream tickets: for a browser's EventSource, which cannot send an Authorization header. A ticket is 256 random
bits, bound to the user and the login session of the token that asked for it, stored as its SHA-256 only, valid for
seconds, and spent by the first stream it opens (a second use, even a concurrent one, finds it spent)."""

import datetime as dt
import hashlib
import secrets
import uuid

import sqlalchemy as sa

from db.schema import stream_tickets


def _hash(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


def issue(conn: sa.Connection, user_id: uuid.UUID, session_id: uuid.UUID | None, ttl: int) -> tuple[str, dt.datetime]:
    """A new ticket and when it expires; expired tickets are deleted on the way."""
    conn.execute(sa.delete(stream_tickets).where(stream_tickets.c.expires_at < sa.func.now() - dt.timedelta(hours=1)))
    ticket = secrets.token_urlsafe(32)
    expires_at = conn.execute(sa.insert(stream_tickets).values(
        ticket_hash=_hash(ticket), user_id=user_id, session_id=session_id,
        expires_at=sa.func.now() + dt.timedelta(seconds=ttl)).returning(stream_tickets.c.expires_at)).scalar_one()
    return ticket, expires_at


def spend(conn: sa.Connection, ticket: str) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """(user id, session id) of a valid unspent ticket, now spent; None for an unknown, spent or expired one."""
    c = stream_tickets.c
    row = conn.execute(sa.update(stream_tickets).where(
        c.ticket_hash == _hash(ticket), c.used_at.is_(None), c.expires_at > sa.func.now())
        .values(used_at=sa.func.now()).returning(c.user_id, c.session_id)).first()
    return (row.user_id, row.session_id) if row else None
