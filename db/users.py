"""Users: profile reads and updates, admin listing and status changes, statistics."""

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db import balance_history, notices, pagination
from db.errors import Conflict, NotFound
from db.schema import exchanges, sessions, sub_accounts, trading_logs, users

PUBLIC_COLUMNS = [users.c[name] for name in (
    "id", "username", "email", "avatar", "role", "status", "settings", "info", "created_at", "updated_at")]


def get(conn: sa.Connection, user_id: uuid.UUID | str) -> dict:
    row = conn.execute(sa.select(*PUBLIC_COLUMNS).where(users.c.id == user_id)).mappings().first()
    if row is None:
        raise NotFound("User not found.")
    return dict(row)


def credentials(conn: sa.Connection, user_id: uuid.UUID, session_id: uuid.UUID | None) -> sa.Row | None:
    """What authentication needs to know about a token's subject and session, in one round trip."""
    session_active = sa.exists().where(sessions.c.id == session_id, sessions.c.user_id == users.c.id,
                                       sessions.c.revoked_at.is_(None)) if session_id else sa.true()
    return conn.execute(sa.select(users.c.id, users.c.role, users.c.status, session_active.label("session_active"))
                        .where(users.c.id == user_id)).first()


def update(conn: sa.Connection, user_id: uuid.UUID, changes: dict) -> dict:
    values: dict = {"updated_at": sa.func.now()}
    for field in ("username", "avatar", "info"):
        if field in changes:
            values[field] = changes[field]
    if "settings" in changes:  # merged key by key, so a client can change one setting without sending all
        values["settings"] = users.c.settings.op("||")(sa.cast(changes["settings"], users.c.settings.type))
    if "username" in changes and conn.execute(
            sa.select(users.c.id).where(users.c.username == changes["username"], users.c.id != user_id)).first():
        raise Conflict("That username is taken.", code="USERNAME_TAKEN")
    row = conn.execute(sa.update(users).where(users.c.id == user_id).values(**values)
                       .returning(*PUBLIC_COLUMNS)).mappings().first()
    if row is None:
        raise NotFound("User not found.")
    return dict(row)


def set_status(conn: sa.Connection, user_id: str, status: str) -> dict:
    notices.user_changed(conn, user_id)  # authentication reads the status through the cache
    row = conn.execute(sa.update(users).where(users.c.id == user_id)
                       .values(status=status, updated_at=sa.func.now()).returning(*PUBLIC_COLUMNS)).mappings().first()
    if row is None:
        raise NotFound("User not found.")
    return dict(row)


def disable(conn: sa.Connection, user_id: uuid.UUID | str, *, by: uuid.UUID | None = None) -> dict:
    """Disables a user, unless it is the admin `by` themself or the last active admin: either would leave nobody
    who can enable users again."""
    if by is not None and str(by) == str(user_id):
        raise Conflict("An admin cannot disable themself.", code="CANNOT_DISABLE_SELF")
    # Locked in one order, so two admins disabling each other at once cannot both pass the count.
    admins = conn.execute(sa.select(users.c.id).where(users.c.role == "admin", users.c.status == "active")
                          .order_by(users.c.id).with_for_update()).scalars().all()
    if [str(a) for a in admins] == [str(user_id)]:
        raise Conflict("The last active admin cannot be disabled.", code="LAST_ADMIN")
    return set_status(conn, user_id, "disabled")


def id_by_email(conn: sa.Connection, email: str) -> uuid.UUID:
    found = conn.execute(sa.select(users.c.id).where(sa.func.lower(users.c.email) == email.lower())).scalar()
    if found is None:
        raise NotFound(f"No user has the email {email}.")
    return found


def set_role(conn: sa.Connection, email: str, role: str) -> tuple[dict, str]:
    """Gives the user with this email `role`; returns the user and the role they had."""
    before = conn.execute(sa.select(users.c.id, users.c.role).where(sa.func.lower(users.c.email) == email.lower())
                          .with_for_update()).first()
    if before is None:
        raise NotFound(f"No user has the email {email}.")
    row = conn.execute(sa.update(users).where(users.c.id == before.id).values(role=role, updated_at=sa.func.now())
                       .returning(*PUBLIC_COLUMNS)).mappings().one()
    notices.user_changed(conn, before.id)  # authentication reads the role through the cache
    return dict(row), before.role


def list_page(conn: sa.Connection, *, limit: int, cursor: str | None, status: str | None) -> tuple[list[dict], str | None]:
    query = sa.select(*PUBLIC_COLUMNS)
    if status:
        query = query.where(users.c.status == status)
    return pagination.page(conn, query, users.c.created_at, users.c.id, limit, cursor)


def ensure(conn: sa.Connection, email: str, *, role: str = "user") -> dict:
    """Finds the user with this email, or creates one whose username is derived from it."""
    existing = conn.execute(sa.select(*PUBLIC_COLUMNS).where(users.c.email == email)).mappings().first()
    if existing is not None:
        if role == "admin" and existing["role"] != "admin":
            notices.user_changed(conn, existing["id"])
            return dict(conn.execute(sa.update(users).where(users.c.id == existing["id"]).values(role="admin")
                                     .returning(*PUBLIC_COLUMNS)).mappings().one())
        return dict(existing)
    base = "".join(ch for ch in email.split("@")[0] if ch.isalnum() or ch in "_.-")[:40] or "user"
    username, suffix = base, 1
    while conn.execute(sa.select(users.c.id).where(users.c.username == username)).first():
        suffix += 1
        username = f"{base}{suffix}"
    row = conn.execute(insert(users).values(email=email, username=username, role=role)
                       .returning(*PUBLIC_COLUMNS)).mappings().one()
    return dict(row)


def stats(conn: sa.Connection, user_id: uuid.UUID) -> dict:
    def count(table: sa.Table, *where) -> sa.ScalarSelect:
        return sa.select(sa.func.count()).select_from(table).where(table.c.user_id == user_id, *where).scalar_subquery()

    counts = conn.execute(sa.select(
        count(exchanges, exchanges.c.deleted_at.is_(None)).label("exchange_count"),
        count(sub_accounts, sub_accounts.c.deleted_at.is_(None)).label("sub_account_count"),
        count(trading_logs).label("trading_log_count"),
    )).mappings().one()
    balances = conn.execute(
        sa.select(sub_accounts.c.symbol, sa.func.sum(sub_accounts.c.balance).label("balance"))
        .where(sub_accounts.c.user_id == user_id, sub_accounts.c.deleted_at.is_(None))
        .group_by(sub_accounts.c.symbol).order_by(sub_accounts.c.symbol)).mappings().all()
    return {**counts, "transaction_count": balance_history.transaction_count(conn, user_id),
            "balances": [dict(b) for b in balances]}
