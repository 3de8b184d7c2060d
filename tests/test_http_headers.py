"""Security headers on every response, a CSP relaxed only for the docs page, and CORS from CORS_ORIGINS."""

import pytest

from tiris import config
from tiris.app import create_app

ALLOWED = "https://portal.example.com"


@pytest.fixture
def service_env(service_env):
    return {**service_env, "CORS_ORIGINS": f"{ALLOWED}, https://admin.example.com"}


def _assert_secured(response, csp_start: str):
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"].startswith(csp_start)


def test_security_headers_on_answers_and_errors_with_a_strict_csp(api, client):
    for response in (client.get("/v1/users/me", headers={"Authorization": f"Bearer {api.token}"}),
                     client.get("/v1/users/me"),  # 401
                     client.get("/v1/nowhere"),  # 404
                     client.get("/health/live"), client.get("/metrics")):
        _assert_secured(response, "default-src 'none'")
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


def test_docs_page_renders_under_its_relaxed_csp(client):
    page = client.get("/v1/ui/")
    assert page.status_code == 200 and "swagger-ui" in page.text and "<script" in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in csp and "img-src 'self' data:" in csp
    _assert_secured(page, "default-src 'self'")
    assert client.get("/v1/openapi.json").status_code == 200  # what the page loads


def test_cors_preflight_answered_for_an_allowed_origin_only(api, client):
    preflight = client.options("/v1/users/me", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()

    allowed = client.get("/v1/users/me", headers={"Origin": ALLOWED, "Authorization": f"Bearer {api.token}"})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-RateLimit-Remaining" in allowed.headers["Access-Control-Expose-Headers"]

    other = client.get("/v1/users/me", headers={"Origin": "https://evil.example.com",
                                                "Authorization": f"Bearer {api.token}"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    refused = client.options("/v1/users/me", headers={"Origin": "https://evil.example.com",
                                                      "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_rate_limit_headers_on_every_authenticated_v1_response(api, client):
    ok = client.get("/v1/users/me", headers={"Authorization": f"Bearer {api.token}"})
    missing = client.get("/v1/exchanges/00000000-0000-4000-8000-000000000000",
                         headers={"Authorization": f"Bearer {api.token}"})
    invalid = client.post("/v1/exchanges", json={"name": ""}, headers={"Authorization": f"Bearer {api.token}"})
    for response, status in ((ok, 200), (missing, 404), (invalid, 400)):
        assert response.status_code == status
        assert int(response.headers["X-RateLimit-Limit"]) == config.current().rate_limit_api[0]
        assert int(response.headers["X-RateLimit-Remaining"]) >= 0
        assert "X-RateLimit-Reset" in response.headers


def test_cors_origins_rejects_a_wildcard(service_env):
    with pytest.raises(config.ConfigError, match="CORS_ORIGINS"):
        create_app(config.load({**service_env, "CORS_ORIGINS": "*"}))


# The handler's thread finishes after its request was answered; the ASGI bridge's late reply is dropped with this.
@pytest.mark.filterwarnings("ignore:coroutine 'Queue.put' was never awaited:RuntimeWarning")
def test_a_request_over_request_timeout_gets_a_503_in_the_error_format(service_env, make_api):
    """The handler waits on a table lock held here; the answer comes after REQUEST_TIMEOUT regardless."""
    import time

    import psycopg

    from db.urls import psycopg_kwargs
    from tests.helpers import create_exchange, create_sub_account
    from tiris import config as tiris_config

    api = make_api()
    account = create_sub_account(api, create_exchange(api)["id"], "USDT")
    short = tiris_config.load({**service_env, "REQUEST_TIMEOUT": "1"})
    with create_app(short).test_client() as client, psycopg.connect(
            **psycopg_kwargs(service_env["DATABASE_URL"])) as locker:
        locker.execute("LOCK TABLE sub_accounts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = client.get(f"/v1/sub-accounts/{account['id']}", headers={
            "Authorization": f"Bearer {api.token}", "X-Request-ID": "slow-1"})
        elapsed = time.monotonic() - started
        locker.rollback()
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "REQUEST_TIMEOUT" and error["trace_id"] == "slow-1"
    _assert_secured(response, "default-src 'none'")
    assert 1 <= elapsed < 5
