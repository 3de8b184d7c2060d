"""Hostile input at every write operation: each answer is the documented status in the error format, and nothing
is written. Sizes, nesting, media types, lone surrogates, NUL, newlines after decimals (in-process); header floods
and forwarded headers (against `tiris serve`, where the HTTP server itself is part of the door).
"""

import json
import uuid

import httpx
import pytest
import sqlalchemy as sa

from db import engine
from db.schema import metadata
from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account
from tests.server import live_server, running_server  # noqa: F401
from tiris import config

MB = 1024 * 1024


@pytest.fixture
def world(make_api):
    """A user with an exchange, a funded USDT and an ETH sub-account; `writes` is every write operation with a
    valid body, `(method, path, body, where a string goes, where a decimal goes or None)`."""
    api = make_api("hostile@example.com")
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT", "1000")
    eth = create_sub_account(api, exchange["id"], "ETH")
    trade = {"base_sub_account_id": eth["id"], "quote_sub_account_id": usdt["id"], "volume": "1", "price": "10",
             "fee": "0"}
    writes = [
        ("POST", "/v1/exchanges", {"name": "Other", "type": "okx", "api_key": "KEY-other-0001",
                                   "api_secret": "secret-other-0001", "info": {}}, "name", None),
        ("PATCH", f"/v1/exchanges/{exchange['id']}", {"name": "Renamed", "info": {}}, "name", None),
        ("POST", "/v1/sub-accounts", {"exchange_id": exchange["id"], "name": "BTC wallet", "symbol": "BTC",
                                      "balance": "5", "info": {}}, "name", "balance"),
        ("PATCH", f"/v1/sub-accounts/{usdt['id']}", {"name": "Renamed", "info": {}}, "name", None),
        ("POST", f"/v1/sub-accounts/{usdt['id']}/deposit", {"amount": "2", "info": {}}, None, "amount"),
        ("POST", f"/v1/sub-accounts/{usdt['id']}/withdraw", {"amount": "2", "info": {}}, None, "amount"),
        ("POST", "/v1/trading-logs", {"type": "long", "source": "manual", "message": "long 1 ETH",
                                      "exchange_id": exchange["id"], "trade": trade, "info": {}}, "message",
         "trade/volume"),
        ("PATCH", "/v1/users/me", {"username": "hostile_user", "info": {}}, "username", None),
        ("POST", "/v1/auth/login", {"provider": "google", "redirect_uri": "http://localhost:3000/cb"},
         "redirect_uri", None),
        ("POST", "/v1/auth/refresh", {"refresh_token": "x" * 40}, "refresh_token", None),
        ("POST", "/v1/auth/logout", {"refresh_token": "x" * 40}, "refresh_token", None),
    ]
    return api, writes


def _set(body: dict, where: str, value) -> dict:
    body = json.loads(json.dumps(body))
    *parents, last = where.split("/")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


def _nested(levels: int):
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _snapshot() -> dict:
    """Every table's rows, so a test can show that a refused request changed nothing."""
    with engine.reading() as conn:
        return {table.name: sorted(map(str, conn.execute(sa.select(table)).all())) for table in metadata.sorted_tables}


def _send(api, method, path, raw: bytes | None, content_type: str | None = "application/json", **headers):
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = api.client.request(method, path, content=raw, headers={"Authorization": f"Bearer {api.token}",
                                                                       **headers})
    return response.status_code, response.json()


def _hostile_requests(writes):
    """(what, method, path, raw body, content type, expected status, expected code)"""
    limit = config.current().max_body_bytes
    for method, path, body, text_field, decimal_field in writes:
        name = f"{method} {path}"
        yield (f"{name}: a body over the limit", method, path, json.dumps({**body, "pad": "x" * limit}).encode(),
               "application/json", 413, "PAYLOAD_TOO_LARGE")
        yield (f"{name}: 500 levels of nesting", method, path, json.dumps(_set(body, "pad", _nested(500))).encode(),
               "application/json", 400, "MALFORMED_BODY")
        yield (f"{name}: 100000 levels of nesting", method, path, b"[" * 100000 + b"]" * 100000,
               "application/json", 400, "MALFORMED_BODY")
        yield (f"{name}: no media type", method, path, json.dumps(body).encode(), None, 415,
               "UNSUPPORTED_MEDIA_TYPE")
        yield (f"{name}: a form", method, path, b"a=1", "application/x-www-form-urlencoded", 415,
               "UNSUPPORTED_MEDIA_TYPE")
        yield (f"{name}: JSON in another charset", method, path, json.dumps(body).encode("utf-16"),
               "application/json; charset=utf-16", 415, "UNSUPPORTED_MEDIA_TYPE")
        yield (f"{name}: upper-case media type, invalid body", method, path, json.dumps({**body, "x": 1}).encode(),
               "Application/JSON", 400, "VALIDATION_ERROR")
        if "info" in body:
            yield (f"{name}: info 9 levels deep", method, path, json.dumps(_set(body, "info", _nested(9))).encode(),
                   "application/json", 400, "VALIDATION_ERROR")
            yield (f"{name}: info over 16 KB", method, path,
                   json.dumps(_set(body, "info", {"note": "x" * 17000})).encode(), "application/json", 400,
                   "VALIDATION_ERROR")
            yield (f"{name}: a lone surrogate in info", method, path,
                   json.dumps(_set(body, "info", {"k": "\ud800"})).encode(), "application/json", 400,
                   "VALIDATION_ERROR")
            yield (f"{name}: a lone surrogate in an info key", method, path,
                   json.dumps(_set(body, "info", {"\udfff": 1})).encode(), "application/json", 400,
                   "VALIDATION_ERROR")
            yield (f"{name}: NUL in info", method, path, json.dumps(_set(body, "info", {"k": "a\x00"})).encode(),
                   "application/json", 400, "VALIDATION_ERROR")
        if text_field:
            for bad in ("\ud800", "ok\udc00", "a\x00b"):
                yield (f"{name}: {bad!r} in {text_field}", method, path, json.dumps(_set(body, text_field, bad)).encode(),
                       "application/json", 400, "VALIDATION_ERROR")
        if decimal_field:
            for bad in ("2\n", "2\r\n", " 2", "2.\n", "0\n"):
                yield (f"{name}: {bad!r} in {decimal_field}", method, path,
                       json.dumps(_set(body, decimal_field, bad)).encode(), "application/json", 400, "VALIDATION_ERROR")


def test_every_write_operation_refuses_hostile_bodies_in_the_error_format_and_writes_nothing(world):
    api, writes = world
    before = _snapshot()
    wrong = []
    for what, method, path, raw, content_type, status, code in _hostile_requests(writes):
        got_status, body = _send(api, method, path, raw, content_type)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if (got_status, error.get("code")) != (status, code) or not {"message", "trace_id", "timestamp"} <= set(error):
            wrong.append(f"{what}: {got_status} {body}")
    assert not wrong, "\n".join(wrong)
    assert _snapshot() == before


def test_a_streamed_body_over_the_limit_is_413_however_it_is_framed(world, live_server):
    """Chunked, without Content-Length, through the real HTTP server: the limit is counted as the body arrives."""
    api, _ = world
    limit = config.current().max_body_bytes
    account = api.get("/v1/sub-accounts")[1]["items"][0]["id"]
    before = _snapshot()

    def chunks():
        yield b'{"amount": "1", "info": {"pad": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        response = http.post(f"/v1/sub-accounts/{account}/deposit", content=chunks(), headers={
            "Authorization": f"Bearer {api.token}", "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    expect_error((response.status_code, response.json()), 413, "PAYLOAD_TOO_LARGE")
    assert _snapshot() == before


def test_media_types_are_case_insensitive(world):
    api, writes = world
    method, path, body, *_ = next(w for w in writes if w[1].endswith("/deposit"))
    status, created = _send(api, method, path, json.dumps(body).encode(), "Application/JSON; Charset=UTF-8")
    assert status == 201 and created["amount"] == "2.000000000000000000", created


# ---------------------------------------------------------------- the HTTP server: headers


def test_oversized_request_heads_are_431_in_the_error_format_before_the_application(live_server, settings):
    before = _snapshot()
    floods = {"an 8 MB bearer token": {"Authorization": "Bearer " + "a" * (8 * MB)},
              "500 headers of 8 KB": {f"X-Flood-{i}": "a" * 8192 for i in range(500)},
              "one 40 KB header": {"X-Big": "a" * 40_000}}
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for what, headers in floods.items():
            response = http.post("/v1/exchanges", headers=headers, json={"name": "x"})
            assert response.status_code == 431, (what, response.status_code, response.text[:200])
            expect_error((431, response.json()), 431, "HEADERS_TOO_LARGE")
        # the connection's next request, and a new one, are served normally
        assert http.get("/health/live").status_code == 200
    assert _snapshot() == before
    assert "request head over" in live_server.log_text()


def _refreshes(server, forwarded: dict) -> list[int]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        return [http.post("/v1/auth/refresh", json={"refresh_token": "x" * 40}, headers={
            name: value.format(i=i) for name, value in forwarded.items()}).status_code for i in range(1, 26)]


# A small auth allowance, so that a bypass shows within a few requests.
def test_forwarded_for_headers_do_not_bypass_the_per_address_auth_limit(service_env, tmp_path_factory):
    env = {**service_env, "RATE_LIMIT_AUTH": "5/min"}
    with running_server(env, tmp_path_factory.mktemp("direct")) as server:
        statuses = _refreshes(server, {"X-Forwarded-For": "203.0.113.{i}", "Forwarded": "for=198.51.100.{i}"})
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses


def test_forwarded_for_is_believed_from_a_listed_proxy_only(service_env, tmp_path_factory):
    """With FORWARDED_ALLOW_IPS naming the proxy (loopback here), each forwarded client has its own allowance."""
    env = {**service_env, "RATE_LIMIT_AUTH": "5/min", "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with running_server(env, tmp_path_factory.mktemp("proxied")) as proxied:
        statuses = _refreshes(proxied, {"X-Forwarded-For": "203.0.113.{i}"})
    assert set(statuses) == {401}, statuses


@pytest.mark.parametrize("bad_id", ["%0A", str(uuid.uuid4()) + "%00"])
def test_control_characters_in_a_path_are_404(world, bad_id):
    api, _ = world
    expect_error(api.post(f"/v1/sub-accounts/{bad_id}/deposit", json={"amount": "1"}), 404, "NOT_FOUND")
