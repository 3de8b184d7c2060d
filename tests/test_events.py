"""The bot's events, through a real JetStream server and `tiris consume`, into the ledger.

Guards: exactly-once effects (duplicates change nothing), poison dead-lettered at once with its reason, transient
database failures retried with backoff, per-user order, and fills booked exactly like long/short trading logs.
"""

import datetime as dt
import uuid
from decimal import Decimal

import sqlalchemy as sa

from consumers.runner import LEASE_HOLDERS
from db import engine
from tests.helpers import balance_of, create_exchange, create_sub_account
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Bot:
    """Builds events for one user's ETH/USDT pair, as the trading bot would publish them."""

    def __init__(self, api, usdt="10000", eth="0"):
        self.user_id = str(api.user["id"])
        self.exchange_id = create_exchange(api, api_key=f"KEY-{uuid.uuid4()}")["id"]
        self.eth = create_sub_account(api, self.exchange_id, "ETH", eth)["id"]
        self.usdt = create_sub_account(api, self.exchange_id, "USDT", usdt)["id"]

    def event(self, kind: str, **fields) -> tuple[str, dict, str]:
        payload = {"event_id": str(uuid.uuid4()), "event_type": kind, "timestamp": _now(), "user_id": self.user_id,
                   "exchange_id": self.exchange_id, "source": "bot-1", "schema_version": 1, **fields}
        return f"trading.{kind}.{self.user_id}", payload, payload["event_id"]

    def order(self, kind: str, side="buy", **fields):
        order = dict(order_id=f"o-{uuid.uuid4().hex[:8]}", symbol="ETH/USDT", side=side, order_type="limit",
                     base_sub_account_id=self.eth, quote_sub_account_id=self.usdt)
        return self.event(kind, **{**order, **fields})

    def fill(self, side, amount, price, fee, fee_asset="quote", **overrides):
        fields = dict(trade_id=f"t-{uuid.uuid4().hex[:8]}", amount=amount, price=price, fee=fee, fee_asset=fee_asset)
        fields.update(overrides)
        return self.order("orders.filled", side=side, **fields)

    def balance_updated(self, new_balance, previous_balance):
        return self.event("balance.updated", sub_account_id=self.usdt, symbol="USDT", new_balance=new_balance,
                          previous_balance=previous_balance)


def _count(sql: str, **params) -> int:
    with engine.reading() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _dead_letters() -> list:
    with engine.reading() as conn:
        return conn.execute(sa.text("SELECT event_id, msg_id, subject, reason FROM dead_letters ORDER BY stream_seq")
                            ).all()


def test_buy_fill_books_the_worked_example_like_a_long_trading_log(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    consumer = start_consumer()
    fill = bot.fill("buy", "2", "3000", "12")
    publish(jetstream, [fill])
    wait_for(settled(engine.reading, 1), what="the fill", log=consumer.log)
    assert balance_of(api, bot.eth) == Decimal(2) and balance_of(api, bot.usdt) == Decimal(3988)
    status, logs = api.get("/v1/trading-logs?type=long&source=bot")
    assert status == 200 and len(logs["items"]) == 1 and len(logs["items"][0]["transaction_ids"]) == 2
    status, txs = api.get("/v1/transactions?reason=long")
    assert sorted(t["id"] for t in txs["items"]) == sorted(logs["items"][0]["transaction_ids"])
    assert {t["event_id"] for t in txs["items"]} == {fill[2]}


def test_sell_fill_with_the_fee_in_base_takes_it_from_the_base_leg(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api, usdt="0", eth="3")
    consumer = start_consumer()
    publish(jetstream, [bot.fill("sell", "1", "3000", "0.01", fee_asset="base")])
    wait_for(settled(engine.reading, 1), what="the fill", log=consumer.log)
    assert balance_of(api, bot.eth) == Decimal("1.99") and balance_of(api, bot.usdt) == Decimal(3000)
    status, page = api.get("/v1/transactions")
    legs = [t for t in page["items"] if t.get("event_id")]
    assert {t["sub_account_id"]: t.get("fee") for t in legs} == {bot.eth: "0.010000000000000000", bot.usdt: None}


def test_a_duplicate_event_id_has_one_effect(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    subject, payload, msg_id = bot.fill("buy", "1", "100", "0")
    # JetStream drops a same-id re-publish inside its window; without the header the copy reaches the consumer,
    # whose database-side record of processed ids must catch it.
    consumer = start_consumer()
    publish(jetstream, [(subject, payload, msg_id), (subject, payload, msg_id), (subject, payload, None)])
    wait_for(settled(engine.reading, 2), what="both copies", log=consumer.log)
    assert balance_of(api, bot.usdt) == Decimal(9900)
    assert _count("SELECT sum(duplicates) FROM consumer_state") == 1
    assert _count("SELECT count(*) FROM transactions WHERE event_id = :e", e=payload["event_id"]) == 2


def test_poison_is_dead_lettered_at_once_with_its_reason_and_the_rest_applies(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    mallory_api = make_api("mallory@example.com")
    mallory = Bot(mallory_api)
    good_before, good_after = bot.fill("buy", "1", "10", "0"), bot.fill("buy", "1", "10", "0")
    missing = bot.order("orders.created")
    del missing[1]["symbol"]
    foreign = bot.fill("buy", "1", "10", "0", quote_sub_account_id=mallory.usdt)
    too_big = bot.fill("buy", "100", "3000", "0")
    consumer = start_consumer()
    publish(jetstream, [good_before, ("trading.orders.created." + bot.user_id, b"{not json", "junk-1"), missing,
                        foreign, too_big, good_after])
    wait_for(settled(engine.reading, 6), what="the batch", log=consumer.log)
    reasons = {row.event_id or row.msg_id: row.reason for row in _dead_letters()}  # junk names no event_id
    assert "malformed JSON" in reasons["junk-1"]
    assert "symbol" in reasons[missing[2]]
    assert reasons[foreign[2]].startswith("NOT_FOUND")
    assert reasons[too_big[2]].startswith("INSUFFICIENT_BALANCE")
    assert balance_of(api, bot.usdt) == Decimal(9980) and balance_of(api, bot.eth) == Decimal(2)
    assert balance_of(mallory_api, mallory.usdt) == Decimal(10000)


def test_a_transient_database_failure_is_retried_with_backoff_then_applies(make_api, jetstream, start_consumer,
                                                                           database_url):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    blocker = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with blocker.connect() as conn:
        conn.execute(sa.text("LOCK TABLE processed_events IN ACCESS EXCLUSIVE MODE"))
        consumer = start_consumer(DB_STATEMENT_TIMEOUT_MS="300")
        publish(jetstream, [bot.fill("buy", "1", "10", "0")])
        wait_for(lambda: "retrying with backoff" in consumer.log(), what="a failed attempt", log=consumer.log)
        conn.rollback()  # the lock goes; the redelivery can now commit
    wait_for(settled(engine.reading, 1), what="the retried fill", log=consumer.log)
    assert balance_of(api, bot.usdt) == Decimal(9990)
    assert _dead_letters() == []


def test_balance_updated_adjusts_to_the_bots_balance_and_counts_drift(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api, usdt="100")
    consumer = start_consumer()
    publish(jetstream, [bot.balance_updated("150", "100"), bot.balance_updated("120", "149")])
    wait_for(settled(engine.reading, 2), what="the updates", log=consumer.log)
    assert balance_of(api, bot.usdt) == Decimal(120)
    status, txs = api.get(f"/v1/transactions?sub_account_id={bot.usdt}&reason=adjustment")
    assert [(t["direction"], Decimal(t["amount"])) for t in txs["items"]] == [("debit", 30), ("credit", 50)]
    assert _count("SELECT sum(balance_drifts) FROM consumer_state") == 1


def test_locks_move_within_bounds_and_notes_and_heartbeats_are_recorded(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api, usdt="100")
    lock = bot.event("balance.locked", sub_account_id=bot.usdt, symbol="USDT", amount="60")
    too_much = bot.event("balance.locked", sub_account_id=bot.usdt, symbol="USDT", amount="50")
    unlock = bot.event("balance.unlocked", sub_account_id=bot.usdt, symbol="USDT", amount="20")
    beats = [bot.event("heartbeat", bot_id="bot-1", status="running", uptime_seconds=i) for i in range(3)]
    notes = [bot.order("orders.created"), bot.order("orders.cancelled"),
             bot.event("errors", code="E1", message="exchange timeout", severity="warning"),
             bot.event("signals", symbol="ETH/USDT", signal="buy", message="RSI < 30")]
    consumer = start_consumer()
    publish(jetstream, [lock, too_much, unlock, *beats, *notes])
    wait_for(settled(engine.reading, 10), what="the events", log=consumer.log)
    status, account = api.get(f"/v1/sub-accounts/{bot.usdt}")
    assert (Decimal(account["locked"]), Decimal(account["available"])) == (Decimal(40), Decimal(60))
    assert _dead_letters()[0].reason.startswith("LOCK_OUT_OF_RANGE")
    assert _count("SELECT count(*) FROM bot_status") == 1
    assert _count("SELECT (info->>'uptime_seconds')::int FROM bot_status") == 2
    types = sorted(log["type"] for log in api.get("/v1/trading-logs")[1]["items"])
    assert types == ["error", "order_cancelled", "order_created", "signal"]


def _leases() -> dict[int, int]:
    """pid -> how many partition leases it holds on this database."""
    with engine.reading() as conn:
        return dict(conn.exec_driver_sql(LEASE_HOLDERS).all())


def test_a_second_consumer_process_is_handed_half_the_partitions_and_a_lone_one_takes_them_all_back(
        make_api, jetstream, start_consumer):
    first = start_consumer()
    wait_for(lambda: sorted(_leases().values()) == [4], what="the first process to hold every partition",
             log=first.log)
    second = start_consumer()
    wait_for(lambda: sorted(_leases().values()) == [2, 2], what="two processes holding two partitions each",
             timeout=30, log=lambda: first.log() + second.log())
    bots = [Bot(make_api(f"user{i}@example.com"), usdt="0") for i in range(16)]
    events = [bot.balance_updated(str(step), str(step - 1)) for step in range(1, 11) for bot in bots]
    publish(jetstream, events)
    wait_for(settled(engine.reading, len(events)), what="all updates", log=lambda: first.log() + second.log())
    assert _count("SELECT sum(processed) FROM consumer_state") == len(events)
    assert {bot.usdt: _count("SELECT balance FROM sub_accounts WHERE id = :s", s=bot.usdt) for bot in bots} == {
        bot.usdt: 10 for bot in bots}
    # Three partitions or more worked (16 random users miss two of four once in 10^4 runs): both processes worked.
    assert _count("SELECT count(*) FROM consumer_state WHERE processed > 0") >= 3
    second.kill()  # kill -9: its leases go with its connection
    wait_for(lambda: sorted(_leases().values()) == [4], what="the remaining process to take every partition back",
             timeout=30, log=first.log)


def test_two_consumer_processes_keep_each_users_order(make_api, jetstream, start_consumer):
    bots = [Bot(make_api(f"user{i}@example.com"), usdt="0") for i in range(4)]
    steps = 150
    events = []
    for step in range(1, steps + 1):
        for bot in bots:  # interleaved users, each with a strictly increasing balance
            events.append(bot.balance_updated(str(step), str(step - 1)))
    consumers = [start_consumer(CONSUMER_BATCH="20"), start_consumer(CONSUMER_BATCH="20")]
    publish(jetstream, events)
    wait_for(settled(engine.reading, len(events)), what="all updates", timeout=120,
             log=lambda: consumers[0].log() + consumers[1].log())
    with engine.reading() as conn:
        for bot in bots:
            closing = conn.execute(sa.text(
                "SELECT closing_balance FROM transactions WHERE sub_account_id = :s AND reason = 'adjustment' "
                "ORDER BY timestamp, id"), {"s": bot.usdt}).scalars().all()
            assert closing == [Decimal(step) for step in range(1, steps + 1)]
    assert _count("SELECT sum(balance_drifts) FROM consumer_state") == 0
