"""Google: OpenID Connect authorization code flow with state, nonce and PKCE (S256).

authlib builds the authorization URL and runs the code exchange; the ID token is verified with joserfc (authlib's
JOSE library) against Google's published keys, and authlib's CodeIDToken checks issuer, audience, expiry, nonce
and at_hash.
"""

import threading
import time
import warnings

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from db.identities import Identity
from tiris.config import GoogleLogin
from tiris.errors import BadGateway, ServiceUnavailable, Unauthorized

with warnings.catch_warnings():  # Authlib 1.9 prefers httpx2 and says so; httpx, which Connexion brings, works as is
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

SCOPE = "openid email profile"
KEYS_MAX_AGE = 3600.0  # Google rotates its signing keys over days; a kid we do not know triggers a refetch anyway

_keys: dict[str, tuple[float, KeySet]] = {}
_keys_lock = threading.Lock()


def _client(google: GoogleLogin, redirect_uri: str, timeout: float) -> OAuth2Client:
    return OAuth2Client(google.client_id, google.client_secret, scope=SCOPE, redirect_uri=redirect_uri,
                        code_challenge_method="S256", timeout=timeout)


def authorization_url(google: GoogleLogin, redirect_uri: str, *, state: str, nonce: str, code_verifier: str) -> str:
    with _client(google, redirect_uri, 1) as client:
        url, _ = client.create_authorization_url(google.authorize_url, state=state, nonce=nonce,
                                                 code_verifier=code_verifier)
    return url


def identity(google: GoogleLogin, redirect_uri: str, *, code: str, nonce: str, code_verifier: str,
             timeout: float) -> Identity:
    with _client(google, redirect_uri, timeout) as client:
        try:
            token = client.fetch_token(google.token_url, code=code, code_verifier=code_verifier)
        except OAuthError as error:
            raise Unauthorized(f"Google refused the authorization code ({error.error}).", code="LOGIN_FAILED",
                               details={"provider": "google", "error": error.error}) from None
        except httpx.TransportError:
            raise ServiceUnavailable("Google could not be reached.", code="PROVIDER_UNAVAILABLE") from None
        except ValueError:  # not JSON
            raise BadGateway("Google's token endpoint did not answer with JSON.") from None
        if "id_token" not in token or "access_token" not in token:
            raise BadGateway("Google's token answer has no ID token.")
        claims = _verified_claims(google, token, nonce, timeout)
    email = claims.get("email") if claims.get("email_verified") is True else None
    return Identity(provider="google", subjects=(claims["sub"],), email=email, name=claims.get("name"),
                    avatar=claims.get("picture"), info={"name": claims.get("name"), "locale": claims.get("locale")})


def _verified_claims(google: GoogleLogin, token: dict, nonce: str, timeout: float) -> CodeIDToken:
    try:
        try:
            decoded = jwt.decode(token["id_token"], _key_set(google, timeout), algorithms=["RS256"])
        except InvalidKeyIdError:  # signed with a key newer than our copy of the set
            decoded = jwt.decode(token["id_token"], _key_set(google, timeout, refresh=True), algorithms=["RS256"])
        claims = CodeIDToken(decoded.claims, decoded.header,
                             options={"iss": {"essential": True, "values": [google.issuer]},
                                      "aud": {"essential": True, "values": [google.client_id]},
                                      "sub": {"essential": True}},
                             params={"nonce": nonce, "client_id": google.client_id,
                                     "access_token": token["access_token"]})
        claims.validate(leeway=60)
    except (JoseError, ValueError) as error:
        raise Unauthorized("Google's ID token did not verify.", code="LOGIN_FAILED",
                           details={"provider": "google", "error": type(error).__name__}) from None
    return claims


def _key_set(google: GoogleLogin, timeout: float, refresh: bool = False) -> KeySet:
    with _keys_lock:
        cached = _keys.get(google.jwks_url)
        if cached and not refresh and time.monotonic() - cached[0] < KEYS_MAX_AGE:
            return cached[1]
    try:
        response = httpx.get(google.jwks_url, timeout=timeout)
        response.raise_for_status()
        keys = KeySet.import_key_set(response.json())
    except httpx.TransportError:
        raise ServiceUnavailable("Google's signing keys could not be fetched.", code="PROVIDER_UNAVAILABLE") from None
    except (httpx.HTTPStatusError, ValueError, JoseError):
        raise BadGateway("Google's signing keys could not be read.") from None
    with _keys_lock:
        _keys[google.jwks_url] = (time.monotonic(), keys)
    return keys
