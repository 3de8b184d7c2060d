"""The AsyncAPI examples take their documented effects, and the events API reports, re-drives and replays."""

import uuid
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
import yaml

from consumers.contract import received_channels
from db import booking, engine, exchanges, sub_accounts, users
from db.access import Caller
from db.commands import Entry, Transfer
from tests.conftest import expect_error
from tests.helpers import balance_of
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401
from tests.test_events import Bot

ROOT = Path(__file__).resolve().parent.parent
USER, EXCHANGE = "3fa85f64-5717-4562-b3fc-2c963f66afa6", "6f1c2a4e-8b1d-4c8e-9d1a-3b2c4d5e6f70"
ETH, USDT = "2a7d9e10-3c4b-4e5f-8a6b-7c8d9e0f1a2b", "9c1e2d3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"


def _examples() -> list[tuple[str, dict]]:
    """(subject, payload) of every message example in asyncapi.yaml, in the story's time order."""
    document = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    found = []
    for channel in received_channels(document).values():
        for message in channel["messages"].values():
            if "$ref" in message:
                message = document["components"]["messages"][message["$ref"].rsplit("/", 1)[-1]]
            for example in message["examples"]:
                payload = example["payload"]
                found.append((channel["address"].replace("{user_id}", payload["user_id"]), payload))
    return sorted(found, key=lambda item: item[1]["timestamp"])


def _story_accounts() -> None:
    """The user, exchange and sub-accounts the examples name, with those ids, and 10000 USDT."""
    with engine.transaction() as conn:
        user = users.ensure(conn, "example-user@example.com")
        conn.execute(sa.text("UPDATE users SET id = :new WHERE id = :old"), {"new": USER, "old": user["id"]})
        owner = Caller(id=uuid.UUID(USER), role="user")
        exchange = exchanges.create(conn, owner, name="Main", type_="binance", api_key="EXAMPLEKEY12345678",
                                    api_secret="example")
        conn.execute(sa.text("UPDATE exchanges SET id = :new WHERE id = :old"), {"new": EXCHANGE, "old": exchange["id"]})
        for fixed, symbol in ((ETH, "ETH"), (USDT, "USDT")):
            account = sub_accounts.create(conn, owner, exchange_id=uuid.UUID(EXCHANGE), name=symbol, symbol=symbol,
                                          opening_balance=Decimal(0), info={})
            conn.execute(sa.text("UPDATE sub_accounts SET id = :new WHERE id = :old"),
                         {"new": fixed, "old": account["id"]})
        booking.book_one(conn, Entry(owner.id, Transfer(uuid.UUID(USDT), "credit", Decimal(10000), "deposit")))


def test_every_asyncapi_example_takes_its_documented_effect(client, settings, jetstream, start_consumer):
    from tests.conftest import Api
    from tiris import auth

    _story_accounts()
    api = Api(client, auth.mint(uuid.UUID(USER)))
    examples = _examples()
    assert len({payload["event_type"] for _, payload in examples}) == 10
    consumer = start_consumer()
    until_lock = [(s, p, p["event_id"]) for s, p in examples if p["timestamp"] <= "2025-01-15T10:05:01Z"]
    publish(jetstream, until_lock)
    wait_for(settled(engine.reading, len(until_lock)), what="the examples up to the lock", log=consumer.log)
    status, eth = api.get(f"/v1/sub-accounts/{ETH}")
    assert (Decimal(eth["balance"]), Decimal(eth["locked"])) == (2, 1)  # filled 2 ETH, then locked 1 for an order
    assert balance_of(api, USDT) == Decimal("3990.4")  # 10000 - 6012, then the bot's rebate to 3990.4

    rest = [(s, p, p["event_id"]) for s, p in examples if p["timestamp"] > "2025-01-15T10:05:01Z"]
    publish(jetstream, rest)
    wait_for(settled(engine.reading, len(examples)), what="every example", log=consumer.log)
    status, eth = api.get(f"/v1/sub-accounts/{ETH}")
    assert (Decimal(eth["balance"]), Decimal(eth["locked"])) == (2, 0)  # the cancelled order's lock released
    types = sorted(log["type"] for log in api.get("/v1/trading-logs")[1]["items"])
    assert types == ["error", "long", "order_cancelled", "order_created", "order_failed", "signal"]
    status, report = api.get("/v1/events/status")
    assert report["dead_letters"] == 0 and len(report["bots"]) == 1  # one row per bot, not one per beat
    assert sum(c["processed"] for c in report["consumers"]) == len(examples)
    assert sum(c["balance_drifts"] for c in report["consumers"]) == 0


def test_dead_letters_are_listed_for_admins_and_redriven_once_fixed(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    admin = make_api("root@example.com", admin=True)
    bot = Bot(api, usdt="100")
    too_big = bot.fill("buy", "1", "1000", "0")
    consumer = start_consumer()
    publish(jetstream, [too_big])
    wait_for(settled(engine.reading, 1), what="the dead letter", log=consumer.log)

    expect_error(api.get("/v1/events/dead-letters"), 403)
    status, page = admin.get("/v1/events/dead-letters?redriven=false")
    assert status == 200 and len(page["items"]) == 1
    letter = page["items"][0]
    assert letter["event_id"] == too_big[2] and letter["reason"].startswith("INSUFFICIENT_BALANCE")

    expect_error(admin.post(f"/v1/events/dead-letters/{letter['id']}/redrive"), 422, "STILL_REFUSED")
    api.post(f"/v1/sub-accounts/{bot.usdt}/deposit", json={"amount": "900"})
    status, redriven = admin.post(f"/v1/events/dead-letters/{letter['id']}/redrive")
    assert status == 200 and redriven["redriven_at"]
    assert balance_of(api, bot.usdt) == 0 and balance_of(api, bot.eth) == 1
    expect_error(admin.post(f"/v1/events/dead-letters/{letter['id']}/redrive"), 409, "ALREADY_REDRIVEN")
    assert api.get("/v1/events/status")[1]["dead_letters"] == 0


def test_replay_from_the_first_sequence_changes_nothing_already_applied(make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    admin = make_api("root@example.com", admin=True)
    bot = Bot(api)
    fills = [bot.fill("buy", "0.1", "3000", "1") for _ in range(5)]
    consumer = start_consumer()
    publish(jetstream, fills)
    wait_for(settled(engine.reading, 5), what="the fills", log=consumer.log)
    before = (balance_of(api, bot.eth), balance_of(api, bot.usdt))

    expect_error(api.post("/v1/events/replay", json={"start_sequence": 1}), 403)
    expect_error(admin.post("/v1/events/replay", json={}), 400)
    status, replay = admin.post("/v1/events/replay", json={"start_sequence": 1})
    assert status == 202 and len(replay["consumers"]) == 4
    wait_for(settled(engine.reading, 10), what="the replayed fills", log=consumer.log)
    assert (balance_of(api, bot.eth), balance_of(api, bot.usdt)) == before == (Decimal("0.5"), Decimal(8495))
    with engine.reading() as conn:
        assert conn.execute(sa.text("SELECT sum(duplicates) FROM consumer_state")).scalar() == 5


def test_readiness_reports_nats_and_the_consumer(client, jetstream, start_consumer):
    checks = client.get("/health/ready").json()["checks"]
    assert checks == {"database": "ok", "migrations": "ok", "nats": "ok", "consumer": "never started"}
    consumer = start_consumer()
    wait_for(lambda: client.get("/health/ready").json()["checks"]["consumer"] == "ok", what="a sign of life",
             log=consumer.log)
