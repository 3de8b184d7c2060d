"""Orders and their holds over the real doors (JetStream and `tiris consume`, the HTTP API): the story of an order,
each transition at most once (under redelivery, replay and two consumer processes), a hold's expiry, and the
ledger's invariants while HTTP clients and the consumer work on the same sub-accounts at once.
"""

import concurrent.futures
import datetime as dt
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa

from db import engine
from tests.conftest import expect_error
from tests.helpers import trade
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401
from tests.test_events import Bot


def _order(api, bot: Bot, order_id: str) -> dict:
    [order] = [o for o in api.get("/v1/orders?limit=1000")[1]["items"] if o["order_id"] == order_id]
    assert api.get(f"/v1/orders/{order['id']}") == (200, order)
    return order


def _account(api, account_id: str) -> tuple[Decimal, Decimal, Decimal]:
    status, account = api.get(f"/v1/sub-accounts/{account_id}")
    return Decimal(account["balance"]), Decimal(account["locked"]), Decimal(account["available"])


def _reasons() -> dict[str, str]:
    with engine.reading() as conn:
        return dict(conn.execute(sa.text("SELECT event_id, reason FROM dead_letters")).all())


def _invariants_hold() -> None:
    """balance = credits - debits, 0 <= locked <= balance, locked = the sum of open holds: on every sub-account."""
    with engine.reading() as conn:
        broken = conn.execute(sa.text("""
            SELECT s.id, s.balance, s.locked, coalesce(t.net, 0) AS net, coalesce(h.held, 0) AS held
            FROM sub_accounts s
            LEFT JOIN (SELECT sub_account_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS net
                       FROM transactions GROUP BY sub_account_id) t ON t.sub_account_id = s.id
            LEFT JOIN (SELECT sub_account_id, sum(remaining) AS held FROM holds WHERE status = 'open'
                       GROUP BY sub_account_id) h ON h.sub_account_id = s.id
            WHERE s.balance <> coalesce(t.net, 0) OR s.locked < 0 OR s.locked > s.balance
               OR s.locked <> coalesce(h.held, 0)""")).all()
    assert broken == []


def test_an_order_holds_its_cost_fills_take_from_the_hold_and_the_cancel_releases_the_rest(
        make_api, jetstream, start_consumer):
    api, admin = make_api("trader@example.com"), make_api("root@example.com", admin=True)
    bot = Bot(api, usdt="10000")
    placed = bot.order("orders.created", side="buy", order_id="ord-1", amount="2", price="3000")
    consumer = start_consumer()
    publish(jetstream, [placed])
    wait_for(settled(engine.reading, 1), what="the order", log=consumer.log)
    order = _order(api, bot, "ord-1")
    assert (order["status"], order["held_amount"], order["filled_amount"]) == ("open", "6000.000000000000000000",
                                                                              "0.000000000000000000")
    assert _account(api, bot.usdt) == (10000, 6000, 4000)
    expect_error(api.post(f"/v1/sub-accounts/{bot.usdt}/withdraw", json={"amount": "5000"}), 422,
                 "INSUFFICIENT_BALANCE")

    fill = bot.fill("buy", "1", "3000", "3", order_id="ord-1")
    publish(jetstream, [fill])
    wait_for(settled(engine.reading, 2), what="the fill", log=consumer.log)
    order = _order(api, bot, "ord-1")
    assert (order["status"], order["filled_amount"], order["held_amount"], order["average_price"], order["fees"]) == (
        "partially_filled", "1.000000000000000000", "3000.000000000000000000", "3000.000000000000000000",
        "3.000000000000000000")
    assert _account(api, bot.usdt) == (6997, 3000, 3997)
    assert len(order["transaction_ids"]) == 2

    cancelled = bot.order("orders.cancelled", side="buy", order_id="ord-1", amount="2", price="3000")
    publish(jetstream, [cancelled])
    wait_for(settled(engine.reading, 3), what="the cancel", log=consumer.log)
    assert _order(api, bot, "ord-1")["status"] == "cancelled"
    assert _account(api, bot.usdt) == (6997, 0, 6997) and _account(api, bot.eth) == (1, 0, 1)

    # The same events again: redelivered (no Nats-Msg-Id, so JetStream keeps the copies) and replayed.
    publish(jetstream, [(s, p, None) for s, p, _ in (placed, fill, cancelled)])
    wait_for(settled(engine.reading, 6), what="the copies", log=consumer.log)
    assert admin.post("/v1/events/replay", json={"start_sequence": 1})[0] == 202
    wait_for(settled(engine.reading, 12), what="the replay", log=consumer.log)
    assert _account(api, bot.usdt) == (6997, 0, 6997) and _reasons() == {}
    assert _order(api, bot, "ord-1")["status"] == "cancelled"
    _invariants_hold()


@pytest.mark.parametrize("case", ["released twice", "filled after the cancel", "placed again after the end",
                                  "placed twice", "filled beyond its amount", "the same trade twice",
                                  "held again after release"])
def test_each_transition_of_an_order_and_its_hold_happens_at_most_once(case, make_api, jetstream, start_consumer):
    api = make_api("trader@example.com")
    bot = Bot(api, usdt="10000", eth="10")
    order = dict(order_id="ord-7", amount="2", price="100")
    lock = bot.event("balance.locked", sub_account_id=bot.eth, symbol="ETH", amount="2", order_id="ord-7")
    unlock = bot.event("balance.unlocked", sub_account_id=bot.eth, symbol="ETH", amount="2", order_id="ord-7")
    created = bot.order("orders.created", side="sell", **order)
    cancelled = bot.order("orders.cancelled", side="sell", **order)
    fill = bot.fill("sell", "1", "100", "0", order_id="ord-7")
    events, code = {
        "released twice": ([lock, unlock, bot.event("balance.unlocked", sub_account_id=bot.eth, symbol="ETH",
                                                     amount="2", order_id="ord-7")], "HOLD_RESOLVED"),
        "filled after the cancel": ([created, cancelled, fill], "ORDER_ENDED"),
        "placed again after the end": ([created, cancelled, bot.order("orders.created", side="sell", **order)],
                                       "ORDER_ENDED"),
        "placed twice": ([created, bot.order("orders.created", side="sell", **order)], "ORDER_PLACED"),
        "filled beyond its amount": ([created, bot.fill("sell", "3", "100", "0", order_id="ord-7")],
                                     "FILL_EXCEEDS_ORDER"),
        "the same trade twice": ([created, fill, bot.fill("sell", "1", "100", "0", order_id="ord-7",
                                                          trade_id=fill[1]["trade_id"])], "FILL_REPEATED"),
        "held again after release": ([lock, unlock, bot.event("balance.locked", sub_account_id=bot.eth,
                                                              symbol="ETH", amount="2", order_id="ord-7")],
                                     "HOLD_RESOLVED"),
    }[case]
    consumer = start_consumer()
    publish(jetstream, events)
    wait_for(settled(engine.reading, len(events)), what="the events", log=consumer.log)
    reasons = _reasons()
    assert list(reasons) == [events[-1][2]] and reasons[events[-1][2]].startswith(code), reasons
    _invariants_hold()


def test_a_hold_without_an_order_expires_once_with_two_consumers_running(make_api, jetstream, start_consumer):
    api = make_api("trader@example.com")
    bot = Bot(api, usdt="100")
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    consumers = [start_consumer(), start_consumer()]
    publish(jetstream, [bot.event("balance.locked", sub_account_id=bot.usdt, symbol="USDT", amount="40",
                                  expires_at=expires)])
    wait_for(settled(engine.reading, 1), what="the hold", log=consumers[0].log)
    assert _account(api, bot.usdt) == (100, 40, 60)
    wait_for(lambda: _account(api, bot.usdt)[1] == 0, what="the expiry", timeout=30,
             log=lambda: consumers[0].log() + consumers[1].log())
    with engine.reading() as conn:
        holds = conn.execute(sa.text("SELECT status, remaining, resolved_at IS NOT NULL FROM holds")).all()
    assert holds == [("expired", Decimal(0), True)]
    _invariants_hold()


def test_http_clients_and_the_consumer_on_the_same_sub_accounts_keep_every_invariant(make_api, jetstream,
                                                                                     start_consumer):
    """8 clients mix trades, withdrawals and reversals over HTTP while two consumers apply orders, holds and fills
    (with duplicates) against the same sub-accounts."""
    apis = [make_api(f"trader{i}@example.com") for i in range(2)]
    bots = [Bot(api, usdt="100000", eth="100") for api in apis]
    rng = random.Random(7)
    events = []
    for n in range(60):
        i = rng.randrange(2)
        bot, order_id, side = bots[i], f"ord-{n}", rng.choice(["buy", "sell"])
        created = bot.order("orders.created", side=side, order_id=order_id, amount="2", price="50")
        fills = [bot.fill(side, "1", "50", "0.1", order_id=order_id) for _ in range(rng.randrange(3))]
        end = bot.order(rng.choice(["orders.cancelled", "orders.failed"]), side=side, order_id=order_id,
                        amount="2", price="50")
        events += [created, *fills] + ([end] if len(fills) < 2 else [])
    # Copies of 20 events, without Nats-Msg-Id so that JetStream keeps them: the consumer must recognise them.
    events += [(s, p, None) for s, p, _ in (events[k] for k in rng.sample(range(len(events)), 20))]
    consumers = [start_consumer(CONSUMER_BATCH="20"), start_consumer(CONSUMER_BATCH="20")]

    def client(k: int) -> None:
        api, bot, choose = apis[k % 2], bots[k % 2], random.Random(k)
        for step in range(15):
            choice = (k + step) % 3
            if choice == 0:
                status, log = trade(api, bot.exchange_id, choose.choice(["long", "short"]), bot.eth, bot.usdt, "0.5",
                                    "40", "0.2")
            elif choice == 1:
                status, tx = api.post(f"/v1/sub-accounts/{bot.usdt}/withdraw", json={"amount": "10"})
            else:
                status, tx = api.post(f"/v1/sub-accounts/{bot.usdt}/deposit", json={"amount": "20"})
                if status == 201:
                    status, _ = api.post(f"/v1/transactions/{tx['id']}/reversal", json={})
            assert status in (201, 409, 422), status

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        publishing = pool.submit(publish, jetstream, events)
        for done in concurrent.futures.as_completed([pool.submit(client, k) for k in range(8)]):
            done.result()
        publishing.result()
    wait_for(settled(engine.reading, len(events)), what="every event", timeout=180,
             log=lambda: consumers[0].log() + consumers[1].log())
    _invariants_hold()
    with engine.reading() as conn:
        fills = conn.execute(sa.text("SELECT coalesce(sum(cardinality(trade_ids)), 0) FROM orders")).scalar()
        applied = conn.execute(sa.text(
            "SELECT count(*) FROM processed_events WHERE event_type = 'orders.filled' AND outcome = 'applied'")
        ).scalar()
        open_orders = conn.execute(sa.text(
            "SELECT count(*) FROM holds h JOIN orders o ON (o.user_id, o.exchange_id, o.order_id) = "
            "(h.user_id, h.exchange_id, h.order_id) WHERE h.status = 'open' AND o.status IN "
            "('filled', 'cancelled', 'failed')")).scalar()
    assert fills == applied  # every applied fill once, and nothing else
    assert open_orders == 0  # an order that ended holds nothing

