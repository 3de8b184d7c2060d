"""Both providers' login flows against the real service (`tiris serve`, two workers) over HTTP."""

import httpx

from tests.conftest import Api
from tests.login import tokens
from tests.oauth_provider import Account
from tests.server import live_server  # noqa: F401


class HttpApi(Api):
    """Api's calls, sent over the network to the live server."""

    def __init__(self, url: str, token: str | None = None):
        super().__init__(httpx.Client(base_url=url, timeout=15), token)


def test_each_login_over_http_ends_with_tokens_that_work_across_workers(live_server, oauth_provider, subtests):
    for provider, flow in [("google", None), ("wechat", "web"), ("wechat", "in_app")]:
        with subtests.test(provider=provider, flow=flow):
            oauth_provider.account = Account(subject=f"live-{provider}-{flow}", email="live@example.com",
                                             name="Live", unionid="union-live" if provider == "wechat" else None)
            _login_refresh_logout(live_server.url, provider, flow)


def _login_refresh_logout(url: str, provider: str, flow: str | None) -> None:
    anonymous = HttpApi(url)
    pair = tokens(anonymous, provider, flow)
    me = HttpApi(url, pair["access_token"])
    for _ in range(4):  # several requests, so both workers see the token
        assert me.get("/v1/users/me")[1]["id"] == pair["user"]["id"]
    status, renewed = anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 200, renewed
    assert HttpApi(url, renewed["access_token"]).post("/v1/auth/logout")[0] == 204
    for _ in range(4):
        assert HttpApi(url, renewed["access_token"]).get("/v1/users/me")[0] == 401
