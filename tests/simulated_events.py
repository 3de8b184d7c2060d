"""Events of the simulated bot for the consumer's tests, and the check that each took effect once."""

import asyncio
import json
from decimal import Decimal

import sqlalchemy as sa

from db import engine
from tools import simulate_bot

MIX = {"orders.filled": 5, "orders.created": 1, "signals": 1, "heartbeat": 1, "errors": 1}


def plan(service_env, settings, monkeypatch, users: int) -> list[dict]:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    plan = simulate_bot.setup(users)
    engine.configure(settings)  # setup() configured its own engine from the same environment
    return plan


def events(plan, count: int, seed: int) -> list:
    return simulate_bot.build_events(plan, count=count, mix=MIX, seed=seed)


def publish(url: str, events) -> None:
    result = asyncio.run(simulate_bot.publish(url, events, rate=0, progress=False))
    assert result["published"] == len(events), result


def handled() -> int:
    with engine.reading() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM processed_events")).scalar()


def assert_each_event_took_effect_once(plan, events, *, redelivered: bool = False) -> None:
    """Balances are the opening ones plus the fills' sums, every event was handled once, under the subject it was
    published on, and nothing was dead-lettered; `redelivered` allows events delivered again (found duplicate)."""
    expected = {}
    for user in plan:
        expected[user["base_sub_account_id"]] = Decimal(user["base_balance"])
        expected[user["quote_sub_account_id"]] = Decimal(user["quote_balance"])
    users = {user["user_id"]: user for user in plan}
    for event in events:
        payload = json.loads(event.data)
        if payload["event_type"] == "orders.filled":
            user, amount = users[payload["user_id"]], Decimal(payload["amount"])
            sign = 1 if payload["side"] == "buy" else -1
            expected[user["base_sub_account_id"]] += sign * amount
            expected[user["quote_sub_account_id"]] -= sign * amount * Decimal(payload["price"]) + Decimal(
                payload["fee"])
    with engine.reading() as conn:
        balances = {str(row.id): row.balance for row in conn.execute(sa.text(
            "SELECT id, balance FROM sub_accounts WHERE id = ANY(:ids)"), {"ids": list(expected)})}
        counters = conn.execute(sa.text(
            "SELECT SUM(processed), SUM(duplicates), SUM(dead_lettered) FROM consumer_state")).one()
        rows = conn.execute(sa.text("SELECT event_id, subject, stream_seq FROM processed_events")).all()
        # Per user, the order in which the transactions applied the events is the order of publication.
        out_of_order = conn.execute(sa.text(
            "SELECT user_id FROM (SELECT user_id, stream_seq, lag(stream_seq) OVER (PARTITION BY user_id "
            "ORDER BY processed_at, stream_seq) AS before FROM processed_events) o WHERE stream_seq < before")).all()
    assert balances == expected
    ids = [json.loads(event.data)["event_id"] for event in events]
    # Under the subject it was published on, and at its sequence in the order of publication: LEDGER's sequences
    # are TRADING's, and no layout change copied a message twice.
    assert {row.event_id: (row.subject, row.stream_seq) for row in rows} == {
        event_id: (event.subject, seq) for seq, (event_id, event) in enumerate(zip(ids, events), 1)}
    assert counters[0] == len(events) and counters[2] == 0  # each applied once, none refused
    assert redelivered or counters[1] == 0  # none even delivered twice
    assert out_of_order == []
