"""WeChat login: the website QR flow (snsapi_login) and the flow inside WeChat (snsapi_userinfo).

WeChat's OAuth 2.0 is not the standard's: the client is `appid`/`secret` in the query string, the token endpoint is a
GET, and errors come back as HTTP 200 with an `errcode`. authlib's client would need every one of those patched, so
the two calls are plain HTTP here, and each errcode becomes the error it means for our caller.
"""

import httpx
from authlib.common.urls import add_params_to_uri

from db.identities import Identity
from tiris.config import WeChatApp, WeChatLogin
from tiris.errors import BadGateway, BadRequest, ServiceUnavailable, Unauthorized

# flow -> (authorization page, scope)
FLOWS = {"web": ("connect/qrconnect", "snsapi_login"), "in_app": ("connect/oauth2/authorize", "snsapi_userinfo")}

# errcodes about the code the browser brought back: the user's login failed, not the service
CODE_ERRORS = {40029: "invalid code", 40163: "code already used", 41008: "missing code", 42003: "code expired"}
# errcodes that say "later": WeChat is busy, or this app is over its quota
BUSY_ERRORS = {-1: "system busy", 45009: "daily quota reached", 45011: "minute quota reached"}


def app_for(wechat: WeChatLogin, flow: str) -> WeChatApp:
    app = wechat.web if flow == "web" else wechat.in_app
    if app is None:
        raise BadRequest(f"WeChat's {flow} login is not enabled on this service.", code="PROVIDER_NOT_ENABLED")
    return app


def authorization_url(wechat: WeChatLogin, flow: str, redirect_uri: str, *, state: str) -> str:
    page, scope = FLOWS[flow]
    params = [("appid", app_for(wechat, flow).app_id), ("redirect_uri", redirect_uri), ("response_type", "code"),
              ("scope", scope), ("state", state)]
    return add_params_to_uri(f"{wechat.open_url}/{page}", params) + "#wechat_redirect"


def identity(wechat: WeChatLogin, flow: str, *, code: str, timeout: float) -> Identity:
    app = app_for(wechat, flow)
    with httpx.Client(base_url=wechat.api_url, timeout=timeout) as client:
        token = _call(client, "/sns/oauth2/access_token", appid=app.app_id, secret=app.app_secret, code=code,
                      grant_type="authorization_code")
        if not token.get("openid") or not token.get("access_token"):
            raise BadGateway("WeChat's token answer has no openid.")
        profile = _call(client, "/sns/userinfo", access_token=token["access_token"], openid=token["openid"])
    unionid = profile.get("unionid") or token.get("unionid")
    subjects = (unionid, token["openid"]) if unionid else (token["openid"],)
    return Identity(provider="wechat", subjects=subjects, name=profile.get("nickname"),
                    avatar=profile.get("headimgurl") or None,
                    info={"nickname": profile.get("nickname"), "openid": token["openid"], "flow": flow})


def _call(client: httpx.Client, path: str, **params) -> dict:
    try:
        response = client.get(path, params=params)
    except httpx.TransportError:
        raise ServiceUnavailable("WeChat could not be reached.", code="PROVIDER_UNAVAILABLE") from None
    try:
        answer = response.json()  # WeChat labels its JSON text/plain
    except ValueError:
        raise BadGateway(f"WeChat answered {path} with HTTP {response.status_code} and no JSON.") from None
    if not isinstance(answer, dict):
        raise BadGateway(f"WeChat answered {path} with something other than an object.")
    errcode = answer.get("errcode") or 0
    if errcode == 0:
        return answer
    details = {"provider": "wechat", "errcode": errcode, "errmsg": str(answer.get("errmsg", ""))[:200]}
    if errcode in CODE_ERRORS:
        raise Unauthorized(f"WeChat refused the authorization code (errcode {errcode}: {CODE_ERRORS[errcode]}).",
                           code="LOGIN_FAILED", details=details)
    if errcode in BUSY_ERRORS:
        raise ServiceUnavailable(f"WeChat is unavailable (errcode {errcode}: {BUSY_ERRORS[errcode]}).",
                                 code="PROVIDER_UNAVAILABLE", details=details, headers={"Retry-After": "60"})
    raise BadGateway(f"WeChat answered errcode {errcode} ({details['errmsg'] or 'no message'}).", details=details)
