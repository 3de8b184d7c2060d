"""Bearer JWT checks, run by Connexion's security layer (the only authentication layer).

The token says who; the database says whether they may still act and in which role, so disabling a user,
changing a role or ending the token's login session (logout, a reused refresh token) takes effect on the next
request rather than when the token expires.
"""

import datetime as dt
import uuid

import jwt

from db import engine, tickets, users
from db.access import Caller
from tiris import cache, config
from db.errors import Forbidden
from tiris.errors import Unauthorized

ALGORITHM = "HS256"


def mint(user_id: uuid.UUID, *, session_id: uuid.UUID | None = None, ttl: int | None = None) -> str:
    settings = config.current()
    now = dt.datetime.now(dt.timezone.utc)
    claims = {"sub": str(user_id), "iss": settings.jwt_issuer, "iat": now, "nbf": now,
              "exp": now + dt.timedelta(seconds=ttl or settings.access_token_ttl), "jti": uuid.uuid4().hex,
              "type": "access"}
    if session_id is not None:
        claims["sid"] = str(session_id)
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def caller_from_token(token: str) -> Caller:
    """The caller a bearer token names (checked: signature, expiry, the user active, the session live)."""
    return _caller(token)


def _caller(token: str) -> Caller:
    settings = config.current()
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=[ALGORITHM], issuer=settings.jwt_issuer,
                            options={"require": ["sub", "exp", "iat", "iss"]})
        user_id = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"]) if "sid" in claims else None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise Unauthorized("The bearer token is invalid or expired.", code="INVALID_TOKEN") from None
    if claims.get("type", "access") != "access":
        raise Unauthorized("The bearer token is not an access token.", code="INVALID_TOKEN")
    return admitted(user_id, session_id)


def admitted(user_id: uuid.UUID, session_id: uuid.UUID | None, *, cached: bool = True) -> Caller:
    """The caller, if the user is active and the session live; raises 401 otherwise. A long-lived stream asks again
    with `cached=False` when it hears of a change to the user."""
    # Keyed by user and session, so announcing a user's change (tiris.cache) drops all of that user's entries.
    row = (cache.get("users", f"{user_id}:{session_id}", lambda: _credentials(user_id, session_id)) if cached
           else _credentials(user_id, session_id))
    if row is None or row.status != "active":
        raise Unauthorized("This account is disabled or no longer exists.", code="ACCOUNT_DISABLED")
    if not row.session_active:
        raise Unauthorized("This token's session has ended; log in again.", code="SESSION_REVOKED")
    return Caller(id=row.id, role=row.role, session_id=session_id)


def _credentials(user_id: uuid.UUID, session_id: uuid.UUID | None):
    with engine.reading() as conn:
        return users.credentials(conn, user_id, session_id)


def user_from_token(token: str) -> dict:
    caller = _caller(token)
    return {"sub": str(caller.id), "caller": caller}


def admin_from_token(token: str) -> dict:
    caller = _caller(token)
    if not caller.is_admin:
        raise Forbidden()
    return {"sub": str(caller.id), "caller": caller}


def caller_from_ticket(ticket: str) -> Caller:
    """The caller a stream ticket was issued to; the ticket is spent (single use). 401 when unknown, spent or
    expired."""
    with engine.transaction() as conn:
        owner = tickets.spend(conn, ticket)
    if owner is None:
        raise Unauthorized("The stream ticket is unknown, expired or used already.", code="INVALID_TICKET")
    return admitted(*owner)


def user_from_ticket(ticket: str) -> dict:
    caller = caller_from_ticket(ticket)
    return {"sub": str(caller.id), "caller": caller}
