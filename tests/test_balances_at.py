"""Balances at an instant: the closing balance of the last transaction at or before it, or a checkpoint's."""

import datetime as dt
import urllib.parse
from decimal import Decimal

import sqlalchemy as sa

from db import checkpoints, engine, schema
from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account


def _at(moment: dt.datetime) -> str:
    return urllib.parse.quote(moment.isoformat())


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _balance(api, sub_account_id, moment: dt.datetime | None = None) -> Decimal:
    query = f"?at={_at(moment)}" if moment else ""
    status, body = api.get(f"/v1/sub-accounts/{sub_account_id}/balance{query}")
    assert status == 200, body
    assert body["sub_account_id"] == sub_account_id
    return Decimal(body["balance"])


def _funded(api):
    """A USDT sub-account with a deposit of 100 then a withdrawal of 30; returns it and the two transactions."""
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT")
    first = api.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "100"})[1]
    second = api.post(f"/v1/sub-accounts/{usdt['id']}/withdraw", json={"amount": "30"})[1]
    return exchange, usdt, _time(first["timestamp"]), _time(second["timestamp"])


def test_the_balance_before_the_first_transaction_is_zero(api):
    _, usdt, first, _ = _funded(api)
    assert _balance(api, usdt["id"], first - dt.timedelta(microseconds=1)) == 0
    assert _balance(api, usdt["id"], dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)) == 0


def test_the_balance_between_two_transactions_is_the_first_ones_closing_balance(api):
    _, usdt, first, second = _funded(api)
    assert _balance(api, usdt["id"], first) == 100  # a transaction at exactly `at` is included
    assert _balance(api, usdt["id"], first + (second - first) / 2) == 100
    assert _balance(api, usdt["id"], second - dt.timedelta(microseconds=1)) == 100


def test_the_balance_after_the_last_transaction_is_the_current_one(api):
    _, usdt, _, second = _funded(api)
    assert _balance(api, usdt["id"], second) == 70
    assert _balance(api, usdt["id"], second + dt.timedelta(days=365)) == 70
    assert _balance(api, usdt["id"]) == 70  # `at` defaults to now


def test_the_answer_echoes_the_instant_and_names_the_sub_account(api):
    exchange, usdt, first, _ = _funded(api)
    moment = first.astimezone(dt.timezone(dt.timedelta(hours=8)))  # another offset names the same instant
    status, body = api.get(f"/v1/sub-accounts/{usdt['id']}/balance?at={_at(moment)}")
    assert status == 200, body
    assert body == {"sub_account_id": usdt["id"], "exchange_id": exchange["id"], "symbol": "USDT",
                    "at": first.isoformat().replace("+00:00", "Z"), "balance": "100.000000000000000000"}


def test_a_checkpoint_stands_in_for_archived_transactions(api):
    _, usdt, first, second = _funded(api)
    cutoff = second + dt.timedelta(microseconds=1)
    with engine.transaction() as conn:  # what the archive job does: checkpoint, then drop the old rows
        assert checkpoints.record(conn, cutoff) == 1
        conn.execute(sa.delete(schema.transactions).where(schema.transactions.c.sub_account_id == usdt["id"]))
    assert _balance(api, usdt["id"], cutoff) == 70
    assert _balance(api, usdt["id"]) == 70
    assert _balance(api, usdt["id"], first) == 0  # before the checkpoint nothing is known any more


def test_the_list_gives_every_live_sub_account_at_one_instant(api, make_api):
    exchange, usdt, first, second = _funded(api)
    eth = create_sub_account(api, exchange["id"], "ETH", "2")
    gone = create_sub_account(api, exchange["id"], "BTC")
    assert api.delete(f"/v1/sub-accounts/{gone['id']}")[0] == 204

    status, page = api.get(f"/v1/balances?at={_at(first)}")
    assert status == 200, page
    assert {item["sub_account_id"]: item["balance"] for item in page["items"]} == {
        usdt["id"]: "100.000000000000000000", eth["id"]: "0.000000000000000000"}
    assert {item["at"] for item in page["items"]} == {first.isoformat().replace("+00:00", "Z")}

    status, now = api.get("/v1/balances?symbol=USDT")
    assert status == 200 and [Decimal(item["balance"]) for item in now["items"]] == [70], now
    status, first_page = api.get("/v1/balances?limit=1")
    assert status == 200 and len(first_page["items"]) == 1 and first_page["next_cursor"], first_page
    status, rest = api.get(f"/v1/balances?limit=1&cursor={first_page['next_cursor']}")
    assert status == 200 and len(rest["items"]) == 1 and "next_cursor" not in rest, rest

    bob, admin = make_api("bob@example.com"), make_api("root@example.com", admin=True)
    assert bob.get("/v1/balances")[1] == {"items": []}
    expect_error(bob.get(f"/v1/sub-accounts/{usdt['id']}/balance"), 404)
    expect_error(bob.get(f"/v1/balances?user_id={api.user['id']}"), 403)
    status, theirs = admin.get(f"/v1/balances?user_id={api.user['id']}")
    assert status == 200 and len(theirs["items"]) == 2, theirs


def test_an_instant_that_is_not_rfc3339_with_an_offset_is_a_400(api):
    _, usdt, _, _ = _funded(api)
    for bad in ("yesterday", "2026-01-15T10:30:00", "2026-13-01T00:00:00Z"):
        expect_error(api.get(f"/v1/sub-accounts/{usdt['id']}/balance?at={bad}"), 400, "VALIDATION_ERROR")
        expect_error(api.get(f"/v1/balances?at={bad}"), 400, "VALIDATION_ERROR")
