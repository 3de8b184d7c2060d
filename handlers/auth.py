import secrets

from db import engine, identities, oauth_states, sessions, users
from generated.models import LoginStart, TokenPair, User
from handlers import as_model, audit_trail, caller
from tiris import auth, config
from db.errors import DomainError
from tiris.errors import BadRequest, Unauthorized
from tiris.oauth import google, wechat


def _enabled(provider: str):
    settings = config.current()
    provider_settings = getattr(settings, provider)
    if provider_settings is None:
        raise BadRequest(f"Login with {provider} is not enabled on this service.", code="PROVIDER_NOT_ENABLED")
    return provider_settings


def start_login(body):
    settings = config.current()
    provider, redirect_uri, flow = body["provider"], body["redirect_uri"], body.get("flow", "web")
    provider_settings = _enabled(provider)
    if redirect_uri not in settings.oauth_redirect_uris:
        raise BadRequest("This redirect_uri is not on the service's allow-list.", code="REDIRECT_URI_NOT_ALLOWED")
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    if provider == "google":
        flow = "web"
        url = google.authorization_url(provider_settings, redirect_uri, state=state, nonce=nonce,
                                       code_verifier=verifier)
    else:
        url = wechat.authorization_url(provider_settings, flow, redirect_uri, state=state)
    with engine.transaction() as conn:
        expires_at = oauth_states.save(conn, state, provider=provider, flow=flow, redirect_uri=redirect_uri,
                                       nonce=nonce, code_verifier=verifier, ttl=settings.oauth_state_ttl)
    return LoginStart(auth_url=url, state=state, expires_at=expires_at)


def complete_login(body):
    settings = config.current()
    provider = body["provider"]
    try:
        identity = _provider_identity(provider, body["state"], body["code"])
    except DomainError as error:
        with engine.transaction() as conn:
            audit_trail(conn, "auth.login_failed", info={"provider": provider, "code": error.code})
        raise
    with engine.transaction() as conn:
        found = identities.find_or_create(conn, identity)
        active = found.user["status"] == "active"
        if active:
            issued = sessions.start(conn, found.user["id"], provider, settings.refresh_token_ttl)
        audit_trail(conn, "auth.login" if active else "auth.login_failed", user_id=found.user["id"],
                    info={"provider": provider, "created": found.created, "linked": found.linked,
                          **({"session_id": str(issued.session_id)} if active else {"code": "ACCOUNT_DISABLED"})})
    if not active:
        raise Unauthorized("This account is disabled.", code="ACCOUNT_DISABLED")
    return _token_pair(issued, found.user)


def _provider_identity(provider: str, state: str, code: str) -> identities.Identity:
    """Spends the state, then asks the provider who the code belongs to."""
    settings = config.current()
    provider_settings = _enabled(provider)
    with engine.transaction() as conn:  # committed before the provider is asked, so a replayed state fails
        login = oauth_states.consume(conn, state, provider)
    if login is None:
        raise Unauthorized("This login state is unknown, used or expired; start the login again.",
                           code="INVALID_STATE")
    if provider == "google":
        return google.identity(provider_settings, login["redirect_uri"], code=code, nonce=login["nonce"],
                               code_verifier=login["code_verifier"], timeout=settings.oauth_timeout)
    return wechat.identity(provider_settings, login["flow"], code=code, timeout=settings.oauth_timeout)


def refresh_tokens(body):
    settings = config.current()
    with engine.transaction() as conn:
        outcome = sessions.rotate(conn, body["refresh_token"], settings.refresh_token_ttl)
        reused = isinstance(outcome, sessions.Reused)
        audit_trail(conn, "auth.refresh_reused" if reused else "auth.refresh", user_id=outcome.user_id,
                    info={"session_id": str(outcome.session_id)})
        user = None if reused else users.get(conn, outcome.user_id)
    if reused:  # raised after the commit: the revocation must stick
        raise Unauthorized("This refresh token was already used; the session is revoked.",
                           code="REFRESH_TOKEN_REUSED")
    return _token_pair(outcome, user)


def logout(token_info, body=None):
    who = caller(token_info)
    everywhere = bool((body or {}).get("everywhere"))
    with engine.transaction() as conn:
        if everywhere:
            sessions.revoke_all(conn, who.id, "logout everywhere")
        elif who.session_id is not None:
            sessions.revoke(conn, who.session_id, "logout")
        audit_trail(conn, "auth.logout", user_id=who.id,
                    info={"everywhere": everywhere, "session_id": who.session_id and str(who.session_id)})
    return None, 204


def _token_pair(issued: sessions.Issued, user: dict) -> TokenPair:
    settings = config.current()
    return TokenPair(access_token=auth.mint(issued.user_id, session_id=issued.session_id), token_type="Bearer",
                     expires_in=settings.access_token_ttl, refresh_token=issued.refresh_token,
                     refresh_expires_in=settings.refresh_token_ttl, user=as_model(User, user))
