"""Who may call what, tried on every operation of openapi.yaml (so an operation added later is covered too).

Every operation the spec secures is called with no token, a malformed one, a bad signature, `alg: none`, an
expired one and a disabled user's: each is a 401 in the error format. Admin operations refuse a user (403) and
accept an admin. Operations on a user's resources (an id in the path or body) answer another user 404 and the owner
something other than a refusal. The requests are the spec's own examples, pointed at real rows.
"""

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
import urllib.parse

import jwt
import pytest
import sqlalchemy as sa
import yaml

from db import booking, dead_letters, engine, schema, users
from db.commands import Entry, Order, OrderChange
from generated.models import OrderSide, OrderType
from tests.conftest import TEST_ENV, Api, expect_error
from tests.helpers import create_exchange, create_sub_account, trade
from tests.server import ROOT
from tiris import auth

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
OPERATIONS = [(method.upper(), path, operation) for path, item in SPEC["paths"].items()
              for method, operation in item.items() if method in {"get", "post", "put", "patch", "delete"}]
OWNED = {"exchange_id", "sub_account_id", "base_sub_account_id", "quote_sub_account_id", "transaction_id",
         "trading_log_id"}  # ids of a user's own rows, in paths and bodies
PUBLIC = {"startLogin", "completeLogin", "refreshTokens", "getLiveness", "getReadiness", "getMetrics"}
# Answered with a stream that lasts while the client wants: refused ones here, served ones in test_live_feed_stream.
STREAMS = {"openStream"}


def access(operation: dict) -> str:
    security = operation.get("security", SPEC["security"])
    if not security:
        return "public"
    return "admin" if any("adminBearer" in requirement for requirement in security) else "user"


def example_body(operation: dict):
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    return json.loads(json.dumps(content.get("example"))) if "example" in content else None


def refers_to_owned(path: str, body) -> bool:
    return any("{" + name + "}" in path for name in OWNED) or bool(body) and bool(OWNED & _keys(body))


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {key for value in node.values() for key in _keys(value)}
    return set()


@pytest.fixture
def world(make_api):
    """Alice's exchange, sub-accounts, a transaction and a trade; Bob; an admin; a disabled user; a user for the
    admin operations to act on; a dead letter."""
    alice, bob, admin = make_api("alice@example.com"), make_api("bob@example.com"), make_api("root@example.com",
                                                                                            admin=True)
    exchange = create_exchange(alice)
    eth = create_sub_account(alice, exchange["id"], "ETH")
    usdt = create_sub_account(alice, exchange["id"], "USDT", balance="10000")
    status, log = trade(alice, exchange["id"], "long", eth["id"], usdt["id"], "1", "3000", "1")
    assert status == 201, log
    with engine.transaction() as conn:
        carol = users.ensure(conn, "carol@example.com")
        users.set_status(conn, carol["id"], "disabled")
        dave = users.ensure(conn, "dave@example.com")  # whom the admin operations act on
        dead_letters.keep(conn, event_id="e-1", msg_id="e-1", subject=f"trading.heartbeat.{alice.user['id']}",
                          stream_seq=1, payload="{}", reason="test", attempts=1)
        letter = conn.execute(sa.select(schema.dead_letters.c.id)).scalar_one()
        placed = Order(uuid.UUID(exchange["id"]), "ord-1", uuid.UUID(eth["id"]), uuid.UUID(usdt["id"]), "ETH/USDT",
                       OrderSide.buy, OrderType.limit, "bot-1", Decimal(1), Decimal(100))
        booking.book_one(conn, Entry(alice.user["id"], OrderChange(placed, "created", dt.datetime.now(dt.timezone.utc))))
        order = conn.execute(sa.select(schema.orders.c.id)).scalar_one()
    ids = {"user_id": str(dave["id"]), "exchange_id": exchange["id"], "sub_account_id": usdt["id"],
           "base_sub_account_id": eth["id"], "quote_sub_account_id": usdt["id"],
           "transaction_id": log["transaction_ids"][0], "trading_log_id": log["id"], "dead_letter_id": str(letter),
           "order_id": str(order)}
    return {"alice": alice, "bob": bob, "admin": admin, "carol": carol, "ids": ids}


def required_query(operation: dict) -> str:
    """The required query parameters, with their examples."""
    pairs = {parameter["name"]: parameter["example"] for parameter in operation.get("parameters", [])
             if parameter.get("in") == "query" and parameter.get("required")}
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def call(api: Api, method: str, path: str, operation: dict, ids: dict):
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    path += required_query(operation)
    body = example_body(operation)

    def point(node):
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = ids[key] if key in ids and isinstance(value, str) else point(value)
        return node

    return api.call(method, path, json=point(body) if body is not None else None)


def _claims(user_id, **changes) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"sub": str(user_id), "iss": "tiris-backend", "iat": now, "nbf": now, "exp": now + dt.timedelta(hours=1),
            "type": "access", **changes}


def _unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value, default=str).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({**claims, 'iat': 0, 'nbf': 0, 'exp': 4102444800})}."


BAD_TOKENS = {
    "no token": lambda w: None,
    "malformed": lambda w: "not-a-jwt",
    "bad signature": lambda w: jwt.encode(_claims(w["alice"].user["id"]), "another-secret-" + "y" * 40, "HS256"),
    "alg none": lambda w: _unsigned(_claims(w["alice"].user["id"])),
    "expired": lambda w: jwt.encode(_claims(w["alice"].user["id"], exp=dt.datetime.now(dt.timezone.utc)
                                            - dt.timedelta(minutes=1)), TEST_ENV["JWT_SECRET"], "HS256"),
    "disabled user": lambda w: auth.mint(w["carol"]["id"]),
}


def test_the_public_operations_are_exactly_the_login_health_and_metrics_ones():
    assert {op["operationId"] for _, _, op in OPERATIONS if access(op) == "public"} == PUBLIC


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_every_secured_operation_refuses_a_bad_token(client, world, subtests, case):
    token = BAD_TOKENS[case](world)
    for method, path, operation in OPERATIONS:
        if access(operation) == "public":
            continue
        with subtests.test(operation=operation["operationId"]):
            error = expect_error(call(Api(client, token), method, path, operation, world["ids"]), 401)
            assert error["code"] in {"UNAUTHORIZED", "INVALID_TOKEN", "ACCOUNT_DISABLED"}


def test_every_admin_operation_refuses_a_user_and_serves_an_admin(world, subtests):
    for method, path, operation in OPERATIONS:
        if access(operation) != "admin":
            continue
        with subtests.test(operation=operation["operationId"]):
            expect_error(call(world["alice"], method, path, operation, world["ids"]), 403, "FORBIDDEN")
            status, body = call(world["admin"], method, path, operation, world["ids"])
            assert status < 300 or status in (409, 422), body  # served: a business answer at most


def test_every_operation_on_a_users_rows_hides_them_from_another_user(world, subtests):
    checked = 0
    for method, path, operation in OPERATIONS:
        if access(operation) != "user" or not refers_to_owned(path, example_body(operation)):
            continue
        checked += 1
        with subtests.test(operation=operation["operationId"]):
            expect_error(call(world["bob"], method, path, operation, world["ids"]), 404)
            status, body = call(world["alice"], method, path, operation, world["ids"])
            assert status < 300 or status in (409, 422), body  # the owner is served
    assert checked >= 13


def test_every_list_shows_another_user_none_of_the_owners_rows(world, subtests):
    own_ids = set(world["ids"].values())
    for method, path, operation in OPERATIONS:
        if method != "GET" or access(operation) != "user" or "{" in path or operation["operationId"] in STREAMS:
            continue
        with subtests.test(operation=operation["operationId"]):
            status, body = call(world["bob"], method, path, operation, world["ids"])
            assert status == 200, body
            assert not own_ids & {item.get("id") for item in body.get("items", [])}


def test_an_admin_token_is_accepted_by_every_secured_operation(world, subtests):
    for method, path, operation in OPERATIONS:
        if access(operation) == "public" or operation["operationId"] in STREAMS:
            continue
        with subtests.test(operation=operation["operationId"]):
            status, body = call(world["admin"], method, path, operation, world["ids"])
            assert status not in (401, 403) and status < 500, body
