"""The event door handles every event exactly once and never stalls on data, through a real JetStream server and
`tiris consume`: a replay cannot skip the stream nor apply what was refused, a value the database cannot store is
dead-lettered at once with its reason, foreign references are refused on every kind of event, and the status API
tells the truth (its schema, live lag, stalls).
"""

import asyncio
import concurrent.futures
import dataclasses
import uuid
from decimal import Decimal

import jsonschema
import nats
import pytest
import sqlalchemy as sa
from nats.js.api import DeliverPolicy

from consumers import runner, streams
from consumers.contract import merged_schemas
from db import engine
from tests.conftest import expect_error
from tests.helpers import balance_of, create_exchange, create_sub_account
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401
from tests.test_events import Bot
from tiris import config

CONTRACT = merged_schemas()


def _valid(schema: str, body: dict) -> dict:
    """The body, after checking it against the contract's schema (nullability included)."""
    jsonschema.Draft7Validator({**CONTRACT, "$ref": f"#/$defs/{schema}"},
                               format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(body)
    return body


def _rows(sql: str, **params) -> list:
    with engine.reading() as conn:
        return conn.execute(sa.text(sql), params).all()


def _stall_after(seconds: int) -> None:
    config.use(dataclasses.replace(config.current(), consumer_stall_after=seconds))


def _move_consumers_beyond_the_end(url: str, sequence: int) -> None:
    """What a replay past the end used to do: every partition's consumer repositioned where nothing will come."""

    async def run():
        nc = await nats.connect(url)
        js = nc.jetstream()
        layout = streams.layout_of((await js.stream_info(streams.LEDGER)).config)
        for partition in range(4):
            await js.delete_consumer(streams.LEDGER, runner.consumer_name(partition))
            await js.add_consumer(streams.LEDGER, streams.consumer_config(partition, layout, 500).evolve(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence))
        await nc.close()

    asyncio.run(run())


def test_a_replay_beyond_the_streams_end_is_refused_and_the_ledger_keeps_applying(make_api, jetstream,
                                                                                   start_consumer):
    api, admin = make_api("bot-owner@example.com"), make_api("root@example.com", admin=True)
    bot = Bot(api)
    consumer = start_consumer()
    publish(jetstream, [bot.fill("buy", "1", "100", "0")])
    wait_for(settled(engine.reading, 1), what="the first fill", log=consumer.log)

    error = expect_error(admin.post("/v1/events/replay", json={"start_sequence": 1_000_000_000_000}), 400,
                         "REPLAY_BEYOND_END")
    assert "last sequence (1)" in error["message"]
    expect_error(admin.post("/v1/events/replay", json={"start_time": "2999-01-01T00:00:00Z"}), 400,
                 "REPLAY_BEYOND_END")
    publish(jetstream, [bot.fill("buy", "1", "100", "0")])
    wait_for(settled(engine.reading, 2), what="the fill published after the refused replay", log=consumer.log)
    assert balance_of(api, bot.eth) == 2 and balance_of(api, bot.usdt) == Decimal(9800)


def test_readiness_and_status_report_consumers_positioned_beyond_the_streams_end(make_api, client, jetstream,
                                                                                 start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    consumer = start_consumer()
    wait_for(lambda: client.get("/health/ready").json()["checks"]["consumer"] == "ok", what="a sign of life",
             log=consumer.log)
    _move_consumers_beyond_the_end(jetstream, 1_000_000_000_000)
    publish(jetstream, [bot.fill("buy", "1", "100", "0")])

    checks = client.get("/health/ready").json()["checks"]
    assert checks["consumer"] == "stalled: " + ", ".join(runner.consumer_name(p) for p in range(4))
    status, report = api.get("/v1/events/status")
    assert status == 200 and all(c["stalled"] is True for c in _valid("EventsStatus", report)["consumers"])


def test_status_validates_on_a_fresh_service_listing_every_partition_with_nulls(make_api, jetstream):
    status, report = make_api("someone@example.com").get("/v1/events/status")
    assert status == 200
    consumers = _valid("EventsStatus", report)["consumers"]
    assert [c["name"] for c in consumers] == [runner.consumer_name(p) for p in range(4)]
    assert all(c["processed"] == 0 and c["last_stream_seq"] is None and c["seen_at"] is None for c in consumers)


def test_a_consumer_stuck_retrying_shows_its_batch_pending_and_stalled_then_recovers(make_api, client, jetstream,
                                                                                   start_consumer, database_url):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    _stall_after(1)
    blocker = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with blocker.connect() as conn:
        conn.execute(sa.text("LOCK TABLE processed_events IN ACCESS EXCLUSIVE MODE"))
        consumer = start_consumer(DB_STATEMENT_TIMEOUT_MS="300")
        publish(jetstream, [bot.fill("buy", "1", "10", "0")])
        wait_for(lambda: "retrying with backoff" in consumer.log(), what="a failed attempt", log=consumer.log)

        def stalled():
            report = _valid("EventsStatus", api.get("/v1/events/status")[1])
            return [c for c in report["consumers"] if c["stalled"]]

        stuck = wait_for(stalled, what="a stalled partition", log=consumer.log)
        assert all(c["pending"] >= 1 for c in stuck)  # the batch in hand counts: it is not acknowledged
        assert client.get("/health/ready").json()["checks"]["consumer"].startswith("stalled: ")
        conn.rollback()
    wait_for(settled(engine.reading, 1), what="the retried fill", log=consumer.log)
    wait_for(lambda: not stalled(), what="the stall to clear", log=consumer.log)
    assert balance_of(api, bot.usdt) == Decimal(9990)


def test_a_replay_never_applies_an_event_that_was_refused(make_api, jetstream, start_consumer):
    api, admin = make_api("bot-owner@example.com"), make_api("root@example.com", admin=True)
    bot = Bot(api, eth="5")
    refused = bot.fill("sell", "777", "2000", "0")
    consumer = start_consumer()
    publish(jetstream, [refused])
    wait_for(settled(engine.reading, 1), what="the refused sell", log=consumer.log)
    api.post(f"/v1/sub-accounts/{bot.eth}/deposit", json={"amount": "1000"})  # now it could be applied

    status, _ = admin.post("/v1/events/replay", json={"start_sequence": 1})
    assert status == 202
    wait_for(settled(engine.reading, 2), what="the replayed sell", log=consumer.log)
    assert balance_of(api, bot.eth) == Decimal(1005)
    [letter] = admin.get("/v1/events/dead-letters")[1]["items"]
    assert letter["event_id"] == refused[2] and "redriven_at" not in letter
    assert _rows("SELECT outcome FROM processed_events WHERE event_id = :e", e=refused[2]) == [("refused",)]

    status, _ = admin.post(f"/v1/events/dead-letters/{letter['id']}/redrive")  # only a re-drive retries it
    assert status == 200 and balance_of(api, bot.eth) == Decimal(228)
    assert _rows("SELECT outcome FROM processed_events WHERE event_id = :e", e=refused[2]) == [("applied",)]


def test_two_concurrent_redrives_of_one_dead_letter_apply_it_once(make_api, jetstream, start_consumer):
    api, admin = make_api("bot-owner@example.com"), make_api("root@example.com", admin=True)
    bot = Bot(api, usdt="10")
    consumer = start_consumer()
    publish(jetstream, [bot.fill("buy", "1", "100", "0")])
    wait_for(settled(engine.reading, 1), what="the dead letter", log=consumer.log)
    api.post(f"/v1/sub-accounts/{bot.usdt}/deposit", json={"amount": "90"})
    [letter] = admin.get("/v1/events/dead-letters")[1]["items"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: admin.post(f"/v1/events/dead-letters/{letter['id']}/redrive"), range(4)))
    assert sorted(status for status, _ in answers) == [200, 409, 409, 409]
    assert balance_of(api, bot.eth) == 1 and balance_of(api, bot.usdt) == 0


@pytest.mark.parametrize("where", ["message", "info value", "info key", "source"])
def test_a_nul_in_any_string_is_dead_lettered_at_validation_and_the_event_behind_it_goes_on(
        where, make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    fields = {"code": "E1", "message": "timeout", "severity": "warning"}
    subject, payload, event_id = bot.event("errors", **fields)
    if where == "message":
        payload["message"] = "time\u0000out"
    elif where == "info value":
        payload["info"] = {"detail": {"nested": ["ok", "bad\u0000"]}}
    elif where == "info key":
        payload["info"] = {"bad\u0000key": 1}
    else:
        payload["source"] = "bot\u0000"
    fill = bot.fill("buy", "1", "100", "0")
    consumer = start_consumer()
    publish(jetstream, [(subject, payload, event_id), fill])
    wait_for(settled(engine.reading, 2), what="both events", log=consumer.log)

    [(reason, refused_at)] = _rows("SELECT reason, created_at FROM dead_letters WHERE event_id = :e", e=event_id)
    assert "U+0000" in reason or "\\u0000" in reason, reason
    [(applied_at,)] = _rows("SELECT min(timestamp) FROM transactions WHERE event_id = :e", e=fill[2])
    assert (applied_at - refused_at).total_seconds() < 1  # nothing held the fill back: no retry, no backoff
    assert _rows("SELECT failed FROM consumer_state WHERE failed > 0") == []
    assert balance_of(api, bot.eth) == 1


def test_a_value_the_database_refuses_is_dead_lettered_at_once_with_its_reason_and_the_batch_goes_on(
        make_api, jetstream, start_consumer):
    api = make_api("bot-owner@example.com")
    bot = Bot(api)
    with engine.transaction() as conn:  # a data error the contract cannot foresee, raised by the database itself
        conn.execute(sa.text(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.message = 'poison' THEN RAISE EXCEPTION 'poison is not storable' USING ERRCODE = '22023'; "
            "END IF; RETURN NEW; END $$"))
        conn.execute(sa.text("CREATE TRIGGER refuse_poison BEFORE INSERT ON trading_logs FOR EACH ROW "
                             "EXECUTE FUNCTION refuse_poison()"))
    before, poison, after = (bot.fill("buy", "1", "100", "0"),
                             bot.event("errors", code="E1", message="poison", severity="error"),
                             bot.fill("buy", "1", "100", "0"))
    consumer = start_consumer()
    publish(jetstream, [before, poison, after])
    wait_for(settled(engine.reading, 3), what="the batch", log=consumer.log)

    [(reason,)] = _rows("SELECT reason FROM dead_letters WHERE event_id = :e", e=poison[2])
    assert "poison is not storable" in reason and "attempts" not in reason
    assert balance_of(api, bot.eth) == 2
    assert _rows("SELECT failed FROM consumer_state WHERE failed > 0") == []  # never retried
    assert _rows("SELECT outcome FROM processed_events WHERE event_id = :e", e=poison[2]) == [("refused",)]


def test_order_notes_and_heartbeats_naming_what_is_not_the_users_are_dead_lettered(make_api, jetstream,
                                                                                    start_consumer):
    api, mallory_api = make_api("bot-owner@example.com"), make_api("mallory@example.com")
    bot, mallory = Bot(api), Bot(mallory_api)
    other_exchange = create_exchange(api, name="Other", api_key=f"KEY-{uuid.uuid4()}")["id"]
    btc = create_sub_account(api, other_exchange, "BTC")["id"]
    unknown = str(uuid.uuid4())
    refused = [
        bot.order("orders.created", quote_sub_account_id=mallory.usdt),  # someone else's sub-account
        bot.order("orders.cancelled", base_sub_account_id=unknown),  # no such sub-account
        bot.order("orders.failed", symbol="BTC/EUR"),  # symbols that do not match the sub-accounts
        bot.order("orders.created", base_sub_account_id=btc),  # the user's, but on another exchange
        bot.order("orders.created", exchange_id=mallory.exchange_id),  # someone else's exchange
        bot.event("heartbeat", bot_id="b1", status="running", exchange_id=mallory.exchange_id),
        bot.event("heartbeat", bot_id="b2", status="running", exchange_id=unknown),
    ]
    consumer = start_consumer()
    publish(jetstream, refused)
    wait_for(settled(engine.reading, len(refused)), what="the events", log=consumer.log)

    reasons = dict(_rows("SELECT event_id, reason FROM dead_letters"))
    assert set(reasons) == {event_id for _, _, event_id in refused}
    assert reasons[refused[2][2]].startswith("SYMBOL_MISMATCH")
    assert all(reasons[e[2]].startswith("NOT_FOUND") for i, e in enumerate(refused) if i != 2), reasons
    assert _rows("SELECT id FROM trading_logs") == [] and _rows("SELECT bot_id FROM bot_status") == []


def test_a_dead_letter_keeps_the_payloads_event_id_and_the_header_beside_it(make_api, jetstream, start_consumer):
    admin = make_api("root@example.com", admin=True)
    bot = Bot(make_api("bot-owner@example.com"))
    subject, payload, _ = bot.fill("buy", "1", "100", "0")
    consumer = start_consumer()
    publish(jetstream, [(subject, payload, "a-different-id")])
    wait_for(settled(engine.reading, 1), what="the dead letter", log=consumer.log)
    [letter] = _valid("DeadLetterList", admin.get("/v1/events/dead-letters")[1])["items"]
    assert (letter["event_id"], letter["msg_id"]) == (payload["event_id"], "a-different-id")
    assert "differ" in letter["reason"]
