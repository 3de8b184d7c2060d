"""Rate limits: GCRA per user (api, trading) and per client address (auth), shared by workers through Redis."""

import asyncio
import concurrent.futures
import json
import uuid

import httpx
import pytest
import redis

from db import engine as db_engine
from db import users
from tiris import auth, ratelimit
from tests.conftest import expect_error
from tests.oauth_provider import REDIRECT_URI
from tests.redis_server import redis_url  # noqa: F401
from tests.server import live_server  # noqa: F401

API_LIMIT = 8
TRADING_LIMIT = 2


@pytest.fixture
def service_env(service_env, redis_url):  # noqa: F811 - small limits, counters in the private Redis
    # A fresh Redis database per test would need more than 16; the keys carry the user id, new in every test.
    return {**service_env, "REDIS_URL": redis_url, "RATE_LIMIT_API": f"{API_LIMIT}/h",
            "RATE_LIMIT_TRADING": f"{TRADING_LIMIT}/min", "RATE_LIMIT_AUTH": "3/min"}


def test_gcra_allows_a_burst_of_the_limit_then_one_per_interval():
    tat, now = 0.0, 1000.0
    decisions = []
    for _ in range(4):
        decision, tat = ratelimit.gcra(tat, now, 3, 60)
        decisions.append(decision)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after == pytest.approx(20)
    later, tat = ratelimit.gcra(tat, now + 20, 3, 60)
    assert later.allowed and later.remaining == 0


def test_redis_script_decides_like_the_in_process_algorithm(redis_url):  # noqa: F811
    store = ratelimit.RedisStore(redis_url)
    key = f"unit:{uuid.uuid4()}"

    async def hits():
        return [await store.hit(key, 3, 60) for _ in range(4)]

    decisions = asyncio.run(hits())
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 19 < decisions[3].retry_after <= 20
    assert redis.Redis.from_url(redis_url).pttl(f"tiris:rl:{key}") > 59_000  # the key expires when refilled


def test_login_operations_are_limited_per_client_address(app, oauth_provider):
    body = {"provider": "google", "redirect_uri": REDIRECT_URI}
    with app.test_client(client=("10.0.0.1", 5000)) as first, app.test_client(client=("10.0.0.2", 5000)) as second:
        statuses = [first.post("/v1/auth/login", json=body).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # RATE_LIMIT_AUTH=3/min
        refused = first.post("/v1/auth/refresh", json={"refresh_token": "x"})  # the class, not one operation
        assert refused.status_code == 429 and refused.json()["error"]["details"]["class"] == "auth"
        assert int(refused.headers["Retry-After"]) >= 1
        assert second.post("/v1/auth/login", json=body).status_code == 200  # another address counts apart


def test_trading_operations_have_their_own_limit_and_answer_429_with_retry_after(make_api):
    api = make_api()
    _, exchange = api.post("/v1/exchanges", json={"name": "E", "type": "binance", "api_key": "AKIAXXXXXXXX1",
                                                  "api_secret": "s" * 20})
    _, account = api.post("/v1/sub-accounts", json={"exchange_id": exchange["id"], "name": "usdt",
                                                    "symbol": "USDT"})
    for _ in range(TRADING_LIMIT):
        response = api.client.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": "1"},
                                   headers={"Authorization": f"Bearer {api.token}"})
        assert response.status_code == 201, response.text
    response = api.client.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": "1"},
                               headers={"Authorization": f"Bearer {api.token}"})
    error = expect_error((response.status_code, response.json()), 429, "RATE_LIMITED")
    assert error["details"]["class"] == "trading"
    assert 1 <= int(response.headers["Retry-After"]) <= 60 // TRADING_LIMIT
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Limit"] == str(TRADING_LIMIT)
    status, _ = api.get("/v1/users/me")  # the general class still has room
    assert status == 200
    status, body = api.get(f"/v1/sub-accounts/{account['id']}")
    assert body["balance"].startswith("2.")  # the refused deposit moved nothing


def test_429_after_limit_shared_by_two_workers(live_server, settings):  # noqa: F811
    with db_engine.transaction() as conn:
        user = users.ensure(conn, "limited@example.com")
    token = auth.mint(user["id"])

    def one(i: int) -> httpx.Response:
        # A new connection per request, several at once, so both workers take some.
        with httpx.Client(base_url=live_server.url, timeout=10) as client:
            return client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}",
                                                       "X-Request-ID": f"rl-{i}"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(3 * API_LIMIT)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * API_LIMIT + [429] * (2 * API_LIMIT), statuses
    for response in responses:
        assert response.headers["X-RateLimit-Limit"] == str(API_LIMIT)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "RATE_LIMITED"
            assert response.json()["error"]["trace_id"] == response.headers["X-Request-ID"]
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200) == \
        list(range(API_LIMIT))

    live_server.stop()
    lines = [json.loads(line) for line in live_server.log_text().splitlines() if line.startswith("{")]
    answered_by = {line["pid"] for line in lines if str(line.get("trace_id", "")).startswith("rl-")
                   and line.get("route") == "/v1/users/me"}
    assert len(answered_by) == 2, f"one worker answered everything, the sharing was not exercised: {answered_by}"
