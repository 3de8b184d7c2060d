"""Exchanges: connections to trading venues, with their API credentials sealed at rest."""

import uuid

import sqlalchemy as sa

from db import crypto, pagination
from db.access import Caller, readable_by
from db.schema import exchanges, sub_accounts
from db.errors import Conflict, NotFound

PUBLIC_COLUMNS = [exchanges.c[name] for name in (
    "id", "user_id", "name", "type", "status", "api_key_masked", "info", "created_at", "updated_at")]
LIVE = exchanges.c.deleted_at.is_(None)


def _credentials(user_id: uuid.UUID, api_key: str | None, api_secret: str | None) -> dict:
    values: dict = {}
    if api_key is not None:
        values["api_key_ciphertext"], values["key_id"] = crypto.seal(api_key, user_id, "api_key")
        values["api_key_hash"] = crypto.fingerprint(api_key)
        values["api_key_masked"] = crypto.mask(api_key)
    if api_secret is not None:
        # Both fields are sealed under the active key; a rotation re-seals both, so one key id covers the row.
        values["api_secret_ciphertext"], values["key_id"] = crypto.seal(api_secret, user_id, "api_secret")
    return values


def _check_unique(conn: sa.Connection, user_id: uuid.UUID, values: dict, exclude: uuid.UUID | None = None) -> None:
    others = sa.select(exchanges.c.name, exchanges.c.api_key_hash).where(exchanges.c.user_id == user_id, LIVE)
    if exclude is not None:
        others = others.where(exchanges.c.id != exclude)
    for row in conn.execute(others.where(sa.or_(exchanges.c.name == values.get("name"),
                                                exchanges.c.api_key_hash == values.get("api_key_hash")))):
        if row.name == values.get("name"):
            raise Conflict("You already have an exchange with this name.", code="DUPLICATE_NAME")
        raise Conflict("This API key is already connected.", code="DUPLICATE_API_KEY")


def create(conn: sa.Connection, caller: Caller, *, name: str, type_: str, api_key: str, api_secret: str,
           status: str = "active", info: dict | None = None) -> dict:
    values = {"user_id": caller.id, "name": name, "type": type_, "status": status, "info": info or {},
              **_credentials(caller.id, api_key, api_secret)}
    _check_unique(conn, caller.id, values)
    return dict(conn.execute(sa.insert(exchanges).values(**values).returning(*PUBLIC_COLUMNS)).mappings().one())


def get(conn: sa.Connection, caller: Caller, exchange_id: str) -> dict:
    row = conn.execute(sa.select(*PUBLIC_COLUMNS).where(
        exchanges.c.id == exchange_id, LIVE, readable_by(exchanges, caller))).mappings().first()
    if row is None:
        raise NotFound("Exchange not found.")
    return dict(row)


def list_page(conn: sa.Connection, caller: Caller, *, limit: int, cursor: str | None,
              user_id: str | None = None) -> tuple[list[dict], str | None]:
    query = sa.select(*PUBLIC_COLUMNS).where(LIVE, readable_by(exchanges, caller, user_id))
    return pagination.page(conn, query, exchanges.c.created_at, exchanges.c.id, limit, cursor)


def update(conn: sa.Connection, caller: Caller, exchange_id: str, *, name: str | None = None,
           status: str | None = None, info: dict | None = None, api_key: str | None = None,
           api_secret: str | None = None) -> dict:
    """Changes what is given (None: unchanged)."""
    owned = sa.and_(exchanges.c.id == exchange_id, exchanges.c.user_id == caller.id, LIVE)
    if conn.execute(sa.select(exchanges.c.id).where(owned).with_for_update()).first() is None:
        raise NotFound("Exchange not found.")
    values = {k: v for k, v in (("name", name), ("status", status), ("info", info)) if v is not None}
    values.update(_credentials(caller.id, api_key, api_secret))
    if "name" in values or "api_key_hash" in values:
        _check_unique(conn, caller.id, values, exclude=uuid.UUID(str(exchange_id)))
    if (api_key is None) != (api_secret is None):
        # Only one field changes: re-seal the other under the active key too, so the row has one key id.
        reseal_row(conn, uuid.UUID(str(exchange_id)), keep=values)
    return dict(conn.execute(sa.update(exchanges).where(owned).values(**values, updated_at=sa.func.now())
                             .returning(*PUBLIC_COLUMNS)).mappings().one())


def delete(conn: sa.Connection, caller: Caller, exchange_id: str) -> None:
    owned = sa.and_(exchanges.c.id == exchange_id, exchanges.c.user_id == caller.id, LIVE)
    if conn.execute(sa.select(exchanges.c.id).where(owned).with_for_update()).first() is None:
        raise NotFound("Exchange not found.")
    live_accounts = sa.select(sub_accounts.c.id).where(
        sub_accounts.c.exchange_id == exchange_id, sub_accounts.c.deleted_at.is_(None)).limit(1)
    if conn.execute(live_accounts).first():
        raise Conflict("Delete this exchange's sub-accounts first.", code="EXCHANGE_HAS_SUB_ACCOUNTS")
    conn.execute(sa.update(exchanges).where(owned).values(deleted_at=sa.func.now(), updated_at=sa.func.now()))


def reseal_row(conn: sa.Connection, exchange_id: uuid.UUID, keep: dict | None = None) -> None:
    """Re-seals a row's credentials under the active key; fields in `keep` are already sealed with it."""
    keep = keep or {}
    row = conn.execute(sa.select(exchanges).where(exchanges.c.id == exchange_id).with_for_update()).one()
    values = {}
    for field in ("api_key", "api_secret"):
        if f"{field}_ciphertext" not in keep:
            plain = crypto.open_sealed(row._mapping[f"{field}_ciphertext"], row.key_id, row.user_id, field)
            values[f"{field}_ciphertext"], values["key_id"] = crypto.seal(plain, row.user_id, field)
    if values:
        conn.execute(sa.update(exchanges).where(exchanges.c.id == exchange_id).values(**values))


def rotate_keys(conn: sa.Connection, active_key_id: str) -> int:
    """Re-seals every row not sealed with the active key; returns how many rows changed."""
    stale = conn.execute(sa.select(exchanges.c.id).where(exchanges.c.key_id != active_key_id)).scalars().all()
    for exchange_id in stale:
        reseal_row(conn, exchange_id)
    return len(stale)
