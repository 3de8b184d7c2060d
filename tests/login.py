"""A login as the portal does it: start, let the loopback provider approve, call back."""

from tests.oauth_provider import REDIRECT_URI, approve


def log_in(api, provider: str = "google", flow: str | None = None) -> tuple[int, dict]:
    """The callback's (status, body) for a login that the provider's current account approves."""
    body = {"provider": provider, "redirect_uri": REDIRECT_URI, **({"flow": flow} if flow else {})}
    status, started = api.post("/v1/auth/login", json=body)
    assert status == 200, started
    returned = approve(started["auth_url"])
    assert returned["state"] == started["state"]
    return api.post("/v1/auth/callback", json={"provider": provider, "code": returned["code"],
                                                "state": returned["state"]})


def tokens(api, provider: str = "google", flow: str | None = None) -> dict:
    status, body = log_in(api, provider, flow)
    assert status == 200, body
    return body
