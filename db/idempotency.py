"""Idempotency keys of the POSTs that move money.

The key is claimed in the same database transaction as the money: a concurrent retry waits on the key's row until
the first attempt commits (then replays it) or rolls back (then runs itself). A failed attempt leaves no key.
"""

import hashlib
import json
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.schema import idempotency_keys
from db.errors import Conflict


def fingerprint(method: str, path: str, body) -> bytes:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


def claim(conn: sa.Connection, user_id: uuid.UUID, key: str, request_hash: bytes) -> tuple[int, dict] | None:
    """Claims `key` for this request; returns the stored (status, body) when it was already used for it."""
    claimed = conn.execute(insert(idempotency_keys).values(
        user_id=user_id, key=key, request_hash=request_hash, status=0, response={})
        .on_conflict_do_nothing().returning(idempotency_keys.c.key)).first()
    if claimed:
        return None
    stored = conn.execute(sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.status,
                                    idempotency_keys.c.response)
                          .where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)).one()
    if stored.request_hash != request_hash:
        raise Conflict("This Idempotency-Key was used for a different request.", code="IDEMPOTENCY_KEY_REUSED")
    return stored.status, stored.response


def record(conn: sa.Connection, user_id: uuid.UUID, key: str, status: int, response: dict) -> None:
    conn.execute(sa.update(idempotency_keys).where(idempotency_keys.c.user_id == user_id, idempotency_keys.c.key == key)
                 .values(status=status, response=response))
