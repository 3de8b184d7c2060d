"""The live feed's outbox: written in the booking's own transaction, per-user ids without gaps in commit order, the
resources as the REST API returns them, and retention kept by a job."""

import datetime as dt
import json
import logging
import threading
import uuid
from decimal import Decimal

import sqlalchemy as sa

from consumers import expiry
from db import booking, bots, engine, feed
from db.commands import BotSeen, Entry, Transfer
from db.errors import Refused
from generated.models import BotState
from tests.helpers import create_exchange, create_sub_account, trade


def _events(user_id) -> list[tuple[int, str, dict]]:
    with engine.reading() as conn:
        return [(e.id, e.type, json.loads(e.data)) for e in feed.read(conn, user_id, 0, 10_000)]


def test_a_deposit_feeds_its_transaction_then_the_balance_as_the_rest_api_returns_them(api):
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT")
    _, deposited = api.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "10000"})
    _, account = api.get(f"/v1/sub-accounts/{usdt['id']}")
    _, transaction = api.get(f"/v1/transactions/{deposited['id']}")

    assert _events(api.user["id"]) == [(1, "transaction.booked", transaction), (2, "balance.changed", account)]


def test_a_trade_feeds_both_legs_its_log_and_both_balances(api):
    exchange = create_exchange(api)
    eth = create_sub_account(api, exchange["id"], "ETH")
    usdt = create_sub_account(api, exchange["id"], "USDT", "10000")
    status, log = trade(api, exchange["id"], "long", eth["id"], usdt["id"], "2", "3000", "12")
    assert status == 201, log

    events = _events(api.user["id"])[2:]  # after the opening balance's two
    assert [kind for _, kind, _ in events] == ["transaction.booked", "transaction.booked", "trading_log.created",
                                               "balance.changed", "balance.changed"]
    assert events[2][2] == api.get(f"/v1/trading-logs/{log['id']}")[1]
    assert {data["id"]: data["balance"] for _, kind, data in events if kind == "balance.changed"} == {
        eth["id"]: "2.000000000000000000", usdt["id"]: "3988.000000000000000000"}


def test_a_refused_or_rolled_back_booking_never_reaches_the_feed_and_takes_no_id(api):
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT", "10")
    status, _ = api.post(f"/v1/sub-accounts/{usdt['id']}/withdraw", json={"amount": "11"})
    assert status == 422
    user = api.user["id"]
    try:
        with engine.transaction() as conn:
            booking.book_one(conn, Entry(user, Transfer(uuid.UUID(usdt["id"]), "credit", Decimal(5), "deposit")))
            raise RuntimeError("rolled back after booking")
    except RuntimeError:
        pass
    api.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "1"})

    events = _events(user)
    assert [event_id for event_id, _, _ in events] == [1, 2, 3, 4]
    assert [data["amount"] for _, kind, data in events if kind == "transaction.booked"] == [
        "10.000000000000000000", "1.000000000000000000"]


def test_concurrent_bookings_of_one_user_get_consecutive_ids_in_commit_order(api):
    exchange = create_exchange(api)
    accounts = [create_sub_account(api, exchange["id"], f"A{n}", name=f"a{n}") for n in range(4)]
    user = api.user["id"]
    errors = []

    def deposit(account_id, count):
        try:
            for _ in range(count):
                with engine.transaction() as conn:
                    booking.book_one(conn, Entry(user, Transfer(account_id, "credit", Decimal(1), "deposit")))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=deposit, args=(uuid.UUID(a["id"]), 25)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    events = _events(user)
    assert [event_id for event_id, _, _ in events] == list(range(1, 201))
    closing = {}  # each sub-account's closing balances rise by one, in feed order: ids follow the commits
    for _, kind, data in events:
        if kind == "transaction.booked":
            before = closing.get(data["sub_account_id"], Decimal(0))
            assert Decimal(data["closing_balance"]) == before + 1
            closing[data["sub_account_id"]] = before + 1


def test_a_batch_for_many_users_feeds_each_user_only_their_own(make_api):
    apis = [make_api() for _ in range(3)]
    accounts = {}
    for api in apis:
        accounts[api.user["id"]] = create_sub_account(api, create_exchange(api)["id"], "USDT")["id"]
    entries = [Entry(user, Transfer(uuid.UUID(account), "credit", Decimal(n + 1), "deposit"))
               for n in range(5) for user, account in accounts.items()]
    with engine.transaction() as conn:
        booking.book(conn, entries)

    for user, account in accounts.items():
        events = _events(user)
        assert [kind for _, kind, _ in events] == ["transaction.booked"] * 5 + ["balance.changed"]
        assert {data.get("sub_account_id", data["id"]) for _, _, data in events} == {account}
        assert [data["amount"] for _, _, data in events[:5]] == [f"{n}.000000000000000000" for n in range(1, 6)]


def test_bot_heartbeats_reach_the_feed_on_a_status_change_or_once_a_minute(api):
    exchange = create_exchange(api)
    user, start = api.user["id"], dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def beat(seconds, state=BotState.running):
        with engine.transaction() as conn:
            seen = BotSeen(uuid.UUID(exchange["id"]), "bot-1", state, start + dt.timedelta(seconds=seconds))
            booking.book_one(conn, Entry(user, seen, event_id=f"beat-{seconds}"))

    for seconds in (0, 10, 20, 30, 60, 70):
        beat(seconds)
    beat(75, BotState.paused)
    beat(74)  # older than the last: ignored
    seen = [(data["status"], data["last_seen_at"]) for _, kind, data in _events(user) if kind == "bot.heartbeat"]
    assert seen == [("running", "2026-01-01T00:00:00Z"), ("running", "2026-01-01T00:01:00Z"),
                    ("paused", "2026-01-01T00:01:15Z")]
    assert bots.ANNOUNCE_EVERY == dt.timedelta(seconds=60)


def test_events_past_the_retention_are_trimmed_by_the_job_and_ids_go_on(api):
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT", "5")
    with engine.transaction() as conn:
        conn.execute(sa.text("UPDATE feed_events SET created_at = now() - interval '2 hours'"))
    api.post(f"/v1/sub-accounts/{usdt['id']}/deposit", json={"amount": "1"})

    assert expiry.trim_feed(dt.timedelta(hours=1)) == 2
    assert [event_id for event_id, _, _ in _events(api.user["id"])] == [3, 4]
    with engine.reading() as conn:
        assert feed.oldest(conn, api.user["id"]) == 3 and feed.head(conn, api.user["id"]) == 4


def test_a_refused_rule_is_reported_in_place_and_feeds_nothing_for_it(api):
    exchange = create_exchange(api)
    usdt = create_sub_account(api, exchange["id"], "USDT", "1")
    user, account = api.user["id"], uuid.UUID(usdt["id"])
    with engine.transaction() as conn:
        outcomes = booking.book(conn, [Entry(user, Transfer(account, "debit", Decimal(2), "withdraw")),
                                       Entry(user, Transfer(account, "credit", Decimal(3), "deposit"))])
    assert isinstance(outcomes[0], booking.Rejected) and isinstance(outcomes[0].error, Refused)
    assert [(kind, data.get("amount")) for _, kind, data in _events(user)[2:]] == [
        ("transaction.booked", "3.000000000000000000"), ("balance.changed", None)]


def test_with_the_feed_off_bookings_write_no_feed_and_the_stream_is_503_not_logged_as_an_outage(api, client,
                                                                                                  caplog):
    account = create_sub_account(api, create_exchange(api)["id"], "USDT")
    feed.configure(False)
    try:
        assert api.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": "5"})[0] == 201
        with caplog.at_level(logging.ERROR):
            answer = client.get("/v1/stream", headers={"Authorization": f"Bearer {api.token}"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "FEED_DISABLED")
        assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    finally:
        feed.configure(True)
    assert _events(api.user["id"]) == []
