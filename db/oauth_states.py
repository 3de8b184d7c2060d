"""Logins in progress. The state travels through the browser, so only its hash is stored, and it works once."""

import datetime as dt
import hashlib

import sqlalchemy as sa

from db.schema import oauth_states


def _hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def save(conn: sa.Connection, state: str, *, provider: str, flow: str, redirect_uri: str, nonce: str,
         code_verifier: str, ttl: int) -> dt.datetime:
    """Stores a new login; returns when it expires. Expired rows of earlier logins are swept on the way."""
    conn.execute(sa.delete(oauth_states).where(oauth_states.c.expires_at < sa.func.now()))
    return conn.execute(sa.insert(oauth_states).values(
        state_hash=_hash(state), provider=provider, flow=flow, redirect_uri=redirect_uri, nonce=nonce,
        code_verifier=code_verifier, expires_at=sa.func.now() + dt.timedelta(seconds=ttl),
    ).returning(oauth_states.c.expires_at)).scalar_one()


def consume(conn: sa.Connection, state: str, provider: str) -> dict | None:
    """The login this state started, deleted as it is read; None if it is unknown, used, expired or not `provider`'s.

    A state presented for the wrong provider is spent all the same: it has been seen where it should not be.
    """
    row = conn.execute(sa.delete(oauth_states).where(oauth_states.c.state_hash == _hash(state))
                       .returning(oauth_states)).mappings().first()
    if row is None or row["provider"] != provider or row["expires_at"] <= dt.datetime.now(dt.timezone.utc):
        return None
    return dict(row)
