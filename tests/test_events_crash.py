"""`kill -9` of the consumer in the middle of a 20,000-event run loses and doubles nothing.

The simulated bot publishes fills, notes, heartbeats, duplicates and poison; the consumer is killed while it works
and started again. Afterwards every valid event took effect once, every poison event is one dead letter, and every
balance equals its credits minus its debits.
"""

import asyncio
from collections import Counter

import sqlalchemy as sa

from db import engine
from tests.jetstream import jetstream, start_consumer, wait_for  # noqa: F401
from tools import simulate_bot


def _totals() -> dict:
    with engine.reading() as conn:
        return dict(conn.execute(sa.text(
            "SELECT COALESCE(SUM(processed), 0) AS processed, COALESCE(SUM(dead_lettered), 0) AS dead_lettered "
            "FROM consumer_state")).mappings().one())


def test_kill_9_mid_run_then_restart_applies_every_event_exactly_once(service_env, settings, jetstream,
                                                                      start_consumer, monkeypatch):
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    plan = simulate_bot.setup(20)
    engine.configure(settings)  # setup() configured its own engine from the same environment
    events = simulate_bot.build_events(plan, count=20_000, duplicate_ratio=0.02, invalid_ratio=0.01, seed=7)
    kinds = Counter(event.kind for event in events)
    published = asyncio.run(simulate_bot.publish(jetstream, events, rate=0, progress=False))
    assert published["published"] == 20_000 and published["duplicates"] == kinds["duplicate"]

    first = start_consumer(CONSUMER_BATCH="200")
    wait_for(lambda: _totals()["processed"] > 3_000, what="the first 3,000 events", log=first.log)
    first.kill()
    assert _totals()["processed"] < kinds["valid"], "the run finished before the kill; nothing was tested"

    second = start_consumer(CONSUMER_BATCH="200")
    wait_for(lambda: _totals() == {"processed": kinds["valid"], "dead_lettered": kinds["invalid"]}, timeout=240,
             what=f"every event once ({kinds})", log=lambda: f"{_totals()}\n" + first.log() + second.log())

    with engine.reading() as conn:
        # processed_events records every handled event: the applied ones, and the refused ones beside their dead letters
        assert conn.execute(sa.text(
            "SELECT count(*) FROM processed_events WHERE outcome = 'applied'")).scalar() == kinds["valid"]
        assert conn.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar() == kinds["invalid"]
        unbalanced = conn.execute(sa.text(
            "SELECT s.id FROM sub_accounts s LEFT JOIN transactions t ON t.sub_account_id = s.id GROUP BY s.id "
            "HAVING s.balance <> COALESCE(SUM(CASE t.direction WHEN 'credit' THEN t.amount ELSE -t.amount END), 0)"
        )).all()
        assert unbalanced == []
        fills = conn.execute(sa.text(
            "SELECT count(*) FROM processed_events WHERE event_type = 'orders.filled' AND outcome = 'applied'")).scalar()
        legs = conn.execute(sa.text("SELECT count(*) FROM transactions WHERE event_id IS NOT NULL")).scalar()
        assert legs == 2 * fills  # every fill booked both legs, once
