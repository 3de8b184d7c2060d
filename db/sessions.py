"""Login sessions and their refresh tokens.

A refresh token is 256 random bits, stored as its SHA-256 only, and works once: each use spends it and issues the
next one in the same session. Presenting a spent token means two parties hold the chain (the user and a thief,
with no way to tell which is which), so the whole session is revoked; every access token minted in it carries the
session's id, so they stop working too, at once.
"""

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from db import notices
from db.schema import refresh_tokens, sessions, users
from db.errors import Denied


@dataclass(frozen=True)
class Issued:
    session_id: uuid.UUID
    user_id: uuid.UUID
    refresh_token: str


@dataclass(frozen=True)
class Reused:
    """A spent refresh token came back; its session is now revoked."""
    session_id: uuid.UUID
    user_id: uuid.UUID


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_refresh_token(conn: sa.Connection, session_id: uuid.UUID, ttl: int) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(sa.insert(refresh_tokens).values(session_id=session_id, token_hash=_hash(token),
                                                  expires_at=sa.func.now() + dt.timedelta(seconds=ttl)))
    return token


def start(conn: sa.Connection, user_id: uuid.UUID, provider: str | None, ttl: int) -> Issued:
    session_id = conn.execute(sa.insert(sessions).values(user_id=user_id, provider=provider)
                              .returning(sessions.c.id)).scalar_one()
    return Issued(session_id, user_id, _new_refresh_token(conn, session_id, ttl))


def rotate(conn: sa.Connection, token: str, ttl: int) -> Issued | Reused:
    """Spends `token` and issues its successor; a spent token revokes its session instead (commit that, then refuse)."""
    spent = conn.execute(
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.token_hash == _hash(token), refresh_tokens.c.used_at.is_(None))
        .values(used_at=sa.func.now())
        .returning(refresh_tokens.c.session_id, refresh_tokens.c.expires_at)).first()
    if spent is None:
        reused = conn.execute(sa.select(sessions.c.id, sessions.c.user_id)
                              .join(refresh_tokens, refresh_tokens.c.session_id == sessions.c.id)
                              .where(refresh_tokens.c.token_hash == _hash(token))).first()
        if reused is None:
            raise Denied("This refresh token is unknown.", code="INVALID_REFRESH_TOKEN")
        revoke(conn, reused.id, "refresh token reused")
        return Reused(reused.id, reused.user_id)
    session = conn.execute(sa.select(sessions.c.user_id, sessions.c.revoked_at, users.c.status)
                           .join(users, users.c.id == sessions.c.user_id)
                           .where(sessions.c.id == spent.session_id)).one()
    if session.revoked_at is not None or spent.expires_at <= dt.datetime.now(dt.timezone.utc):
        raise Denied("This refresh token has expired or its session has ended.", code="INVALID_REFRESH_TOKEN")
    if session.status != "active":
        raise Denied("This account is disabled.", code="ACCOUNT_DISABLED")
    return Issued(spent.session_id, session.user_id, _new_refresh_token(conn, spent.session_id, ttl))


def revoke(conn: sa.Connection, session_id: uuid.UUID, reason: str) -> None:
    user_id = conn.execute(sa.update(sessions).where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
                           .values(revoked_at=sa.func.now(), revoked_reason=reason)
                           .returning(sessions.c.user_id)).scalar()
    if user_id is not None:
        notices.user_changed(conn, user_id)  # authentication caches whether a session is live


def revoke_all(conn: sa.Connection, user_id: uuid.UUID, reason: str) -> int:
    notices.user_changed(conn, user_id)
    return conn.execute(sa.update(sessions).where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
                        .values(revoked_at=sa.func.now(), revoked_reason=reason)).rowcount
