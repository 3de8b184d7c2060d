"""Who a provider's login is: found by the provider's subject, else by a verified email (linked), else created."""

import re
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from db.schema import oauth_identities, users
from db.users import PUBLIC_COLUMNS


@dataclass(frozen=True)
class Identity:
    """What a provider vouched for. `subjects` are the keys of this person at the provider, best first: WeChat
    gives a unionid (one person across the service's WeChat apps) only to apps bound to an open-platform account,
    and an openid (one person in one app) always, so a login keyed by openid earlier is found and re-keyed."""
    provider: str
    subjects: tuple[str, ...]
    email: str | None = None  # only when the provider verified it
    name: str | None = None
    avatar: str | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Login:
    user: dict
    created: bool
    linked: bool


_USERNAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


def find_or_create(conn: sa.Connection, identity: Identity) -> Login:
    c = oauth_identities.c
    known = conn.execute(sa.select(c.id, c.user_id).where(c.provider == identity.provider,
                                                         c.subject.in_(identity.subjects))
                         .order_by(c.created_at).limit(1).with_for_update()).first()
    if known is not None:
        conn.execute(sa.update(oauth_identities).where(c.id == known.id).values(
            subject=identity.subjects[0], last_login_at=sa.func.now(), updated_at=sa.func.now(),
            info=identity.info, **({"email": identity.email} if identity.email else {})))
        return Login(_user(conn, known.user_id), created=False, linked=False)

    user, created = None, False
    if identity.email:
        user = conn.execute(sa.select(*PUBLIC_COLUMNS).where(sa.func.lower(users.c.email) == identity.email.lower())
                            ).mappings().first()
    if user is None:
        user, created = _create_user(conn, identity), True
    conn.execute(insert(oauth_identities).values(user_id=user["id"], provider=identity.provider,
                                                 subject=identity.subjects[0], email=identity.email,
                                                 info=identity.info))
    return Login(dict(user), created=created, linked=not created)


def _user(conn: sa.Connection, user_id: uuid.UUID) -> dict:
    return dict(conn.execute(sa.select(*PUBLIC_COLUMNS).where(users.c.id == user_id)).mappings().one())


def _create_user(conn: sa.Connection, identity: Identity) -> dict:
    """A new user; the username comes from the name or email and gets a number when taken, so a login never fails
    on a collision (ON CONFLICT DO NOTHING also covers two logins racing for the same name)."""
    for candidate in (identity.name, (identity.email or "").split("@")[0], f"{identity.provider}_user"):
        base = _USERNAME_CHARACTERS.sub("", (candidate or "").replace(" ", "_"))[:40]
        if len(base) >= 3:
            break
    suffix = 1
    while True:
        username = base if suffix == 1 else f"{base}{suffix}"
        row = conn.execute(insert(users).values(username=username, email=identity.email, avatar=identity.avatar,
                                                info={"created_via": identity.provider})
                           .on_conflict_do_nothing(index_elements=["username"])
                           .returning(*PUBLIC_COLUMNS)).mappings().first()
        if row is not None:
            return dict(row)
        suffix += 1
