"""A real OAuth provider on loopback, speaking Google's OpenID Connect and WeChat's protocol over HTTP.

The service under test is configured with this server's URLs instead of Google's and WeChat's, so every login test
runs the whole protocol (authorize redirect, code exchange with PKCE or app secret, ID-token signature, userinfo)
with no network access. The "browser" is the test: it fetches the authorization URL the service returned and reads
the code from the redirect, as if the user had approved.

Who approves is `provider.account` (set by the test before following the URL). A code of the form
`errcode-NNNNN` makes WeChat's token endpoint answer with that errcode, as WeChat does for a bad, used or
expired code or a misconfigured app.

`tiris dev` runs it as the local login (`interactive=True`): the authorization URL shows a sign-in page where the
developer types any e-mail and name, so the portal goes through the real flow with no Google credentials. Its home
page also runs the flow against the service by itself (`service_url`) and shows the tokens the service returned.
Only `tiris dev` starts it; `tiris serve` never does.
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

GOOGLE_CLIENT = ("tiris-google-client", "tiris-google-secret")
WECHAT_WEB_APP = ("wx-web-app", "wx-web-secret")
WECHAT_IN_APP = ("wx-mp-app", "wx-mp-secret")
REDIRECT_URI = "http://localhost:3000/auth/callback"  # the contract's example, on the service's allow-list
WECHAT_ERRMSG = {40029: "invalid code", 40163: "code been used", 40013: "invalid appid", 45011: "api minute-quota reach limit"}


@dataclass
class Account:
    """A person at the provider."""
    subject: str  # Google's sub; WeChat's openid (per app, so the in-app flow sees `openid + '-mp'`)
    email: str | None = None
    email_verified: bool = True
    name: str | None = None
    unionid: str | None = None  # WeChat: only for apps bound to an open-platform account


@dataclass
class Grant:
    account: Account
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None = None
    code_challenge: str | None = None


@dataclass
class LoopbackProvider:
    port: int = 0
    account: Account = field(default_factory=lambda: Account(subject="g-1", email="alice@example.com", name="Alice"))
    codes: dict[str, Grant] = field(default_factory=dict)
    wechat_tokens: dict[str, Grant] = field(default_factory=dict)
    id_token_claims: dict = field(default_factory=dict)  # overrides, to forge a bad ID token
    requests: list[str] = field(default_factory=list)
    issued: dict[str, Grant] = field(default_factory=dict)  # every code ever issued, for the home page's callback
    interactive: bool = False  # the authorization URL asks who signs in instead of approving `account`
    service_url: str | None = None  # the API the home page's own sign-in talks to

    def __post_init__(self):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "loopback-1", "use": "sig", "alg": "RS256"})
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                provider._handle(self, "GET")

            def do_POST(self):
                provider._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict[str, str]:
        """The service's configuration for this provider."""
        return {
            "GOOGLE_CLIENT_ID": GOOGLE_CLIENT[0], "GOOGLE_CLIENT_SECRET": GOOGLE_CLIENT[1],
            "GOOGLE_AUTHORIZE_URL": f"{self.url}/google/authorize", "GOOGLE_TOKEN_URL": f"{self.url}/google/token",
            "GOOGLE_JWKS_URL": f"{self.url}/google/certs", "GOOGLE_ISSUER": self.url,
            "WECHAT_APP_ID": WECHAT_WEB_APP[0], "WECHAT_APP_SECRET": WECHAT_WEB_APP[1],
            "WECHAT_MP_APP_ID": WECHAT_IN_APP[0], "WECHAT_MP_APP_SECRET": WECHAT_IN_APP[1],
            "WECHAT_OPEN_URL": f"{self.url}/wechat-open", "WECHAT_API_URL": f"{self.url}/wechat-api",
            "OAUTH_REDIRECT_URIS": REDIRECT_URI + (f",{self.url}/callback" if self.service_url else ""),
        }

    # ------------------------------------------------------------------ HTTP

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        form = {}
        if method == "POST":
            length = int(request.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(request.rfile.read(length).decode()))
        self.requests.append(f"{method} {url.path}")
        if self.interactive and url.path in self.SIGN_IN:
            if method == "GET":
                return self._send_html(request, 200, self._sign_in_page(url.path, query))
            query = {**query, **{k: v for k, v in form.items() if k not in ("email", "name")}}
            email = form.get("email", "").strip() or "developer@example.com"
            self.account = Account(subject="local-" + hashlib.sha256(email.lower().encode()).hexdigest()[:16],
                                   email=email, name=form.get("name", "").strip() or email.split("@")[0])
            method = "GET"
        if method == "GET" and url.path == "/":
            return self._send_html(request, 200, self._home_page())
        if method == "GET" and url.path == "/start" and self.service_url:
            return self._start(request, query.get("provider", "google"))
        if method == "GET" and url.path == "/callback" and self.service_url:
            return self._callback(request, query)
        routes = {
            ("GET", "/google/authorize"): lambda: self._google_authorize(query),
            ("POST", "/google/token"): lambda: self._google_token(form, request.headers.get("Authorization", "")),
            ("GET", "/google/certs"): lambda: (200, KeySet([self.key]).as_dict(private=False)),
            ("GET", "/wechat-open/connect/qrconnect"): lambda: self._wechat_authorize(query, "snsapi_login"),
            ("GET", "/wechat-open/connect/oauth2/authorize"): lambda: self._wechat_authorize(query, "snsapi_userinfo"),
            ("GET", "/wechat-api/sns/oauth2/access_token"): lambda: self._wechat_token(query),
            ("GET", "/wechat-api/sns/userinfo"): lambda: self._wechat_userinfo(query),
        }
        route = routes.get((method, url.path))
        status, answer = route() if route else (404, {"error": "not_found"})
        if status == 302:
            request.send_response(302)
            request.send_header("Location", answer)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        body = json.dumps(answer).encode()
        request.send_response(status)
        # WeChat labels its JSON text/plain; Google says application/json.
        request.send_header("Content-Type", "text/plain" if url.path.startswith("/wechat") else "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    # ------------------------------------------------------------------ the local login's pages

    SIGN_IN = {"/google/authorize": "Google", "/wechat-open/connect/qrconnect": "WeChat",
               "/wechat-open/connect/oauth2/authorize": "WeChat (in-app)"}

    @staticmethod
    def _send_html(request: BaseHTTPRequestHandler, status: int, html: str, location: str | None = None) -> None:
        body = html.encode()
        request.send_response(status)
        if location:
            request.send_header("Location", location)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    @staticmethod
    def _page(title: str, content: str) -> str:
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
                "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}"
                "input{display:block;width:100%;margin:.3rem 0 1rem;padding:.4rem}pre{white-space:pre-wrap;"
                "word-break:break-all;background:#f4f4f4;padding:.6rem}</style></head><body>"
                f"<h1>{escape(title)}</h1>{content}<p><small>Local login of <code>tiris dev</code>: for "
                "development only, it lets anyone sign in as anyone.</small></p></body></html>")

    def _sign_in_page(self, path: str, query: dict) -> str:
        hidden = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in query.items())
        return self._page(f"Sign in with {self.SIGN_IN[path]} (local)",
                          f"<form method='post' action='{escape(path)}'>{hidden}"
                          "<label>E-mail<input name='email' type='email' value='developer@example.com' required>"
                          "</label><label>Name<input name='name' value='Developer'></label>"
                          "<button type='submit'>Sign in</button></form>")

    def _home_page(self) -> str:
        start = (f"<p><a href='/start?provider=google'>Sign in with Google (local)</a> · "
                 f"<a href='/start?provider=wechat'>Sign in with WeChat (local)</a>: the whole flow against "
                 f"{escape(self.service_url)}, ending with the tokens it returns.</p>") if self.service_url else ""
        return self._page("Tiris local login", start + (
            "<p>The service's Google and WeChat logins point here. A portal on "
            f"<code>{escape(REDIRECT_URI)}</code> gets this provider's sign-in page from "
            "<code>POST /v1/auth/login</code> and finishes with <code>POST /v1/auth/callback</code>; refresh and "
            "logout are the service's own.</p>"))

    def _service(self, path: str, body: dict) -> tuple[int, dict]:
        import httpx

        response = httpx.post(f"{self.service_url}{path}", json=body, timeout=10)
        return response.status_code, (response.json() if response.content else {})

    def _start(self, request: BaseHTTPRequestHandler, provider: str) -> None:
        status, started = self._service("/v1/auth/login", {"provider": provider,
                                                            "redirect_uri": f"{self.url}/callback"})
        if status != 200:
            return self._send_html(request, 502, self._page("The service refused the login",
                                                            f"<pre>{escape(json.dumps(started, indent=2))}</pre>"))
        self._send_html(request, 302, "", location=started["auth_url"])

    def _callback(self, request: BaseHTTPRequestHandler, query: dict) -> None:
        provider = "wechat" if self._last_sign_in_wechat(query) else "google"
        status, tokens = self._service("/v1/auth/callback", {"provider": provider, "code": query.get("code", ""),
                                                              "state": query.get("state", "")})
        title = "Signed in" if status == 200 else f"The service answered {status}"
        self._send_html(request, 200 if status == 200 else 502,
                        self._page(title, f"<pre>{escape(json.dumps(tokens, indent=2))}</pre>"))

    def _last_sign_in_wechat(self, query: dict) -> bool:
        grant = self.issued.get(query.get("code", ""))
        return grant is not None and grant.client_id != GOOGLE_CLIENT[0]

    # ------------------------------------------------------------------ HTTP helpers

    def _redirect(self, grant: Grant, state: str) -> tuple[int, str]:
        code = secrets.token_urlsafe(16)
        self.codes[code] = grant
        if self.service_url:
            self.issued[code] = grant
        return 302, f"{grant.redirect_uri}?{urllib.parse.urlencode({'code': code, 'state': state})}"

    # ------------------------------------------------------------------ Google (OpenID Connect)

    def _google_authorize(self, q: dict) -> tuple[int, object]:
        if q.get("client_id") != GOOGLE_CLIENT[0] or q.get("response_type") != "code":
            return 400, {"error": "invalid_request"}
        if "openid" not in q.get("scope", "").split() or not q.get("nonce") or not q.get("state"):
            return 400, {"error": "invalid_request", "error_description": "openid scope, nonce and state needed"}
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return 400, {"error": "invalid_request", "error_description": "PKCE S256 required"}
        return self._redirect(Grant(self.account, q["client_id"], q["redirect_uri"], q["scope"], q["nonce"],
                                    q["code_challenge"]), q["state"])

    def _google_token(self, form: dict, authorization: str) -> tuple[int, object]:
        client = form.get("client_id"), form.get("client_secret")
        if authorization.startswith("Basic "):
            client = tuple(urllib.parse.unquote(part) for part in
                           base64.b64decode(authorization[6:]).decode().split(":", 1))
        if client != GOOGLE_CLIENT:
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code" or grant.redirect_uri != form.get(
                "redirect_uri"):
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant.code_challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(time.time())
        account = grant.account
        claims = {"iss": self.url, "aud": GOOGLE_CLIENT[0], "sub": account.subject, "iat": now, "exp": now + 3600,
                  "nonce": grant.nonce, "email": account.email, "email_verified": account.email_verified,
                  "name": account.name, **self.id_token_claims}
        id_token = jwt.encode({"alg": "RS256", "kid": "loopback-1"}, {k: v for k, v in claims.items()
                                                                     if v is not None}, self.key)
        return 200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 3599,
                     "scope": grant.scope, "id_token": id_token}

    # ------------------------------------------------------------------ WeChat

    def _wechat_authorize(self, q: dict, scope: str) -> tuple[int, object]:
        app = {"snsapi_login": WECHAT_WEB_APP, "snsapi_userinfo": WECHAT_IN_APP}[scope]
        if q.get("appid") != app[0] or q.get("scope") != scope or q.get("response_type") != "code":
            return 200, {"errcode": 10003, "errmsg": "redirect_uri or appid mismatch"}
        return self._redirect(Grant(self.account, app[0], q["redirect_uri"], scope), q.get("state", ""))

    def _wechat_token(self, q: dict) -> tuple[int, object]:
        code = q.get("code", "")
        if code.startswith("errcode-"):
            errcode = int(code.removeprefix("errcode-"))
            return 200, {"errcode": errcode, "errmsg": WECHAT_ERRMSG.get(errcode, "error")}
        apps = {WECHAT_WEB_APP[0]: WECHAT_WEB_APP, WECHAT_IN_APP[0]: WECHAT_IN_APP}
        if (q.get("appid"), q.get("secret")) != apps.get(q.get("appid")):
            return 200, {"errcode": 40013, "errmsg": "invalid appid"}
        grant = self.codes.pop(code, None)
        if grant is None or grant.client_id != q["appid"] or q.get("grant_type") != "authorization_code":
            return 200, {"errcode": 40029, "errmsg": "invalid code"}
        token = secrets.token_urlsafe(24)
        self.wechat_tokens[token] = grant
        answer = {"access_token": token, "expires_in": 7200, "refresh_token": secrets.token_urlsafe(24),
                  "openid": self._openid(grant), "scope": grant.scope}
        if grant.account.unionid:
            answer["unionid"] = grant.account.unionid
        return 200, answer

    def _wechat_userinfo(self, q: dict) -> tuple[int, object]:
        grant = self.wechat_tokens.get(q.get("access_token", ""))
        if grant is None or q.get("openid") != self._openid(grant):
            return 200, {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        answer = {"openid": self._openid(grant), "nickname": grant.account.name or "", "sex": 0,
                  "headimgurl": "https://wx.example/avatar.png", "privilege": []}
        if grant.account.unionid:
            answer["unionid"] = grant.account.unionid
        return 200, answer

    @staticmethod
    def _openid(grant: Grant) -> str:
        return grant.account.subject + ("-mp" if grant.client_id == WECHAT_IN_APP[0] else "")


def approve(auth_url: str) -> dict[str, str]:
    """The browser's part: open the authorization URL, let the account approve, read the redirect's query."""
    import httpx

    response = httpx.get(auth_url.split("#")[0], follow_redirects=False, timeout=10)
    assert response.status_code == 302, (response.status_code, response.text)
    location = urllib.parse.urlsplit(response.headers["Location"])
    return dict(urllib.parse.parse_qsl(location.query))
