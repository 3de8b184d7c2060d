"""Corrections, never edits: a reversal books the opposite legs, linked both ways, at most once, never below what is
locked, for the owner or an admin."""

import threading
import uuid
from decimal import Decimal

import sqlalchemy as sa

from db import engine, schema
from tests.conftest import expect_error
from tests.helpers import balance_of, create_exchange, create_sub_account, trade


def _pair(api, usdt="10000"):
    exchange = create_exchange(api)
    eth = create_sub_account(api, exchange["id"], "ETH")
    usdt_account = create_sub_account(api, exchange["id"], "USDT", usdt)
    return exchange["id"], eth["id"], usdt_account["id"]


def _deposit(api, sub_account_id, amount):
    status, body = api.post(f"/v1/sub-accounts/{sub_account_id}/deposit", json={"amount": amount})
    assert status == 201, body
    return body


def _get(api, path):
    status, body = api.get(path)
    assert status == 200, body
    return body


def test_a_deposit_reversed_books_the_opposite_leg_linked_both_ways(api):
    _, _, usdt = _pair(api, usdt="100")
    deposit = _deposit(api, usdt, "250")

    status, reversal = api.post(f"/v1/transactions/{deposit['id']}/reversal",
                                json={"reason": "Booked twice", "info": {"ticket": "T-1"}})

    assert status == 201, reversal
    assert (reversal["direction"], reversal["reason"], Decimal(reversal["amount"])) == ("debit", "reversal", 250)
    assert Decimal(reversal["closing_balance"]) == 100 and balance_of(api, usdt) == 100
    assert reversal["reverses_transaction_id"] == deposit["id"]
    assert reversal["info"] == {"ticket": "T-1", "reason": "Booked twice"}
    assert _get(api, f"/v1/transactions/{deposit['id']}")["reversed_by_transaction_id"] == reversal["id"]
    assert _get(api, f"/v1/transactions/{reversal['id']}")["reverses_transaction_id"] == deposit["id"]
    listed = {t["id"]: t for t in _get(api, f"/v1/transactions?sub_account_id={usdt}")["items"]}
    assert listed[deposit["id"]]["reversed_by_transaction_id"] == reversal["id"]
    log = _get(api, f"/v1/trading-logs/{reversal['trading_log_id']}")
    assert (log["type"], log["message"], log["transaction_ids"]) == ("reversal", "Booked twice", [reversal["id"]])
    assert log["sub_account_id"] == usdt and log["info"]["reverses_transaction_id"] == deposit["id"]


def test_a_reversal_without_a_body_is_accepted(api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "5")
    status, reversal = api.post(f"/v1/transactions/{deposit['id']}/reversal")
    assert status == 201, reversal
    assert reversal["info"] == {} and balance_of(api, usdt) == 0


def test_a_trade_reversed_through_its_log_reverses_both_legs(api):
    exchange_id, eth, usdt = _pair(api)
    status, log = trade(api, exchange_id, "long", eth, usdt, "2", "3000", "12")
    assert status == 201, log

    status, reversal_log = api.post(f"/v1/trading-logs/{log['id']}/reversal", json={"reason": "Wrong pair"})

    assert status == 201, reversal_log
    assert reversal_log["type"] == "reversal" and reversal_log["info"]["reverses_trading_log_id"] == log["id"]
    assert len(reversal_log["transaction_ids"]) == 2
    assert balance_of(api, eth) == 0 and balance_of(api, usdt) == 10000
    legs = [_get(api, f"/v1/transactions/{i}") for i in reversal_log["transaction_ids"]]
    assert sorted(leg["reverses_transaction_id"] for leg in legs) == sorted(log["transaction_ids"])
    assert {(leg["sub_account_id"], leg["direction"], Decimal(leg["amount"])) for leg in legs} == {
        (eth, "debit", Decimal(2)), (usdt, "credit", Decimal(6012))}
    assert all(leg["trading_log_id"] == reversal_log["id"] and "fee" not in leg for leg in legs)


def test_a_trade_reversed_through_one_leg_reverses_the_other_leg_too(api):
    exchange_id, eth, usdt = _pair(api)
    status, log = trade(api, exchange_id, "long", eth, usdt, "2", "3000", "12")
    assert status == 201, log
    quote_leg = next(i for i in log["transaction_ids"] if _get(api, f"/v1/transactions/{i}")["sub_account_id"] == usdt)

    status, reversal = api.post(f"/v1/transactions/{quote_leg}/reversal")

    assert status == 201, reversal
    assert reversal["reverses_transaction_id"] == quote_leg and reversal["sub_account_id"] == usdt
    assert balance_of(api, eth) == 0 and balance_of(api, usdt) == 10000
    assert all(_get(api, f"/v1/transactions/{i}").get("reversed_by_transaction_id") for i in log["transaction_ids"])
    assert len(_get(api, f"/v1/trading-logs/{reversal['trading_log_id']}")["transaction_ids"]) == 2
    expect_error(api.post(f"/v1/trading-logs/{log['id']}/reversal"), 409, "ALREADY_REVERSED")


def test_a_second_reversal_of_the_same_transaction_is_a_409(api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "10")
    assert api.post(f"/v1/transactions/{deposit['id']}/reversal")[0] == 201
    error = expect_error(api.post(f"/v1/transactions/{deposit['id']}/reversal"), 409, "ALREADY_REVERSED")
    assert deposit["id"] in error["details"]["reversed_by"]
    assert balance_of(api, usdt) == 0


def test_a_reversal_is_not_itself_reversed(api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "10")
    status, reversal = api.post(f"/v1/transactions/{deposit['id']}/reversal")
    assert status == 201, reversal
    expect_error(api.post(f"/v1/transactions/{reversal['id']}/reversal"), 422, "NOT_REVERSIBLE")
    expect_error(api.post(f"/v1/trading-logs/{reversal['trading_log_id']}/reversal"), 422, "NOT_REVERSIBLE")


def test_a_note_has_nothing_to_reverse(api):
    exchange_id, _, _ = _pair(api)
    status, note = api.post("/v1/trading-logs", json={"type": "note", "source": "manual", "message": "hello",
                                                      "exchange_id": exchange_id})
    assert status == 201, note
    expect_error(api.post(f"/v1/trading-logs/{note['id']}/reversal"), 422, "NOT_REVERSIBLE")


def test_reversing_a_deposit_that_was_spent_is_refused_with_insufficient_balance(api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "100")
    assert api.post(f"/v1/sub-accounts/{usdt}/withdraw", json={"amount": "60"})[0] == 201

    expect_error(api.post(f"/v1/transactions/{deposit['id']}/reversal"), 422, "INSUFFICIENT_BALANCE")

    assert balance_of(api, usdt) == 40
    assert "reversed_by_transaction_id" not in _get(api, f"/v1/transactions/{deposit['id']}")


def test_a_reversal_never_takes_the_balance_below_what_is_held(api):
    exchange_id, _, usdt = _pair(api, usdt="100")
    deposit = _deposit(api, usdt, "50")
    with engine.transaction() as conn:  # 120 of the 150 held for an open order
        conn.execute(sa.insert(schema.holds).values(user_id=api.user["id"], exchange_id=exchange_id,
                                                    sub_account_id=usdt, order_id="o-1", amount=120, remaining=120))
        conn.execute(sa.update(schema.sub_accounts).where(schema.sub_accounts.c.id == usdt).values(locked=120))

    error = expect_error(api.post(f"/v1/transactions/{deposit['id']}/reversal"), 422, "INSUFFICIENT_BALANCE")

    assert Decimal(error["details"]["available"]) == 30
    assert balance_of(api, usdt) == 150


def test_an_idempotency_key_replays_the_first_reversal(api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "10")
    key = {"Idempotency-Key": f"rev-{uuid.uuid4()}"}
    first = api.post(f"/v1/transactions/{deposit['id']}/reversal", json={"reason": "typo"}, headers=key)
    again = api.post(f"/v1/transactions/{deposit['id']}/reversal", json={"reason": "typo"}, headers=key)
    assert first[0] == 201 and again == first
    expect_error(api.post(f"/v1/transactions/{deposit['id']}/reversal", json={"reason": "other"}, headers=key),
                 409, "IDEMPOTENCY_KEY_REUSED")
    assert balance_of(api, usdt) == 0


def test_another_users_rows_are_a_404_and_an_admin_may_reverse_them(api, make_api):
    exchange_id, eth, usdt = _pair(api)
    deposit = _deposit(api, usdt, "10")
    status, log = trade(api, exchange_id, "long", eth, usdt, "1", "3000")
    assert status == 201, log
    bob, admin = make_api("bob@example.com"), make_api("root@example.com", admin=True)

    expect_error(bob.post(f"/v1/transactions/{deposit['id']}/reversal"), 404)
    expect_error(bob.post(f"/v1/trading-logs/{log['id']}/reversal"), 404)
    status, reversal = admin.post(f"/v1/transactions/{deposit['id']}/reversal", json={"reason": "support"})
    assert status == 201 and reversal["user_id"] == str(api.user["id"]), reversal
    status, reversal_log = admin.post(f"/v1/trading-logs/{log['id']}/reversal")
    assert status == 201 and reversal_log["user_id"] == str(api.user["id"]), reversal_log

    assert balance_of(api, usdt) == 10000 and balance_of(api, eth) == 0
    audit = _get(admin, f"/v1/audit-events?type=transaction.reversed&user_id={api.user['id']}")["items"]
    assert len(audit) == 2 and {event["actor_id"] for event in audit} == {str(admin.user["id"])}
    assert any(event["info"]["transaction_ids"] == [deposit["id"]] and event["info"]["reason"] == "support"
               for event in audit)


def test_the_owners_reversal_is_audited_without_an_actor(api, make_api):
    _, _, usdt = _pair(api, usdt="0")
    deposit = _deposit(api, usdt, "10")
    status, reversal = api.post(f"/v1/transactions/{deposit['id']}/reversal")
    assert status == 201, reversal
    admin = make_api("root@example.com", admin=True)
    [event] = _get(admin, f"/v1/audit-events?type=transaction.reversed&user_id={api.user['id']}")["items"]
    assert "actor_id" not in event and event["info"]["reversed_by"] == [reversal["id"]]


def test_eight_concurrent_reversals_of_one_transaction_book_exactly_one(api, client):
    _, _, usdt = _pair(api, usdt="1000")
    deposit = _deposit(api, usdt, "10")
    results, start = [], threading.Barrier(8)

    def reverse():
        start.wait()
        results.append(api.post(f"/v1/transactions/{deposit['id']}/reversal"))

    threads = [threading.Thread(target=reverse) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 7, results
    assert all(body["error"]["code"] == "ALREADY_REVERSED" for status, body in results if status == 409)
    assert balance_of(api, usdt) == 1000
    with engine.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.reversals)).scalar() == 1
