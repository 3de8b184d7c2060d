"""The event contract (asyncapi.yaml): a valid document whose examples match the generated models, and the events of
`tiris simulate-bot`, which must be exactly what the contract allows (or, when asked for, exactly what it refuses)."""

import json
import shutil
import subprocess
import uuid
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from consumers import contract
from generated import models
from tools import simulate_bot

ROOT = Path(__file__).resolve().parent.parent
DOC = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
# The bot's events, on NATS subjects; the document also describes what the service sends to webhooks.
RECEIVED = contract.received_channels(DOC)
MESSAGES = {name: (channel, DOC["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]])
            for channel in RECEIVED.values() for name, ref in channel["messages"].items()}
WEBHOOK_MESSAGES = {name: DOC["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
                    for name, ref in DOC["channels"]["webhook"]["messages"].items()}
# The JSON Schema the models are generated from; unlike the models it keeps the decimal patterns (pydantic drops a
# pattern on Decimal), so a "-1" or "1e3" amount fails here.
CONTRACT = contract.merged_schemas()
PLAN = [
    {"user_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "exchange_id": "6f1c2a4e-8b1d-4c8e-9d1a-3b2c4d5e6f70",
     "base_sub_account_id": "2a7d9e10-3c4b-4e5f-8a6b-7c8d9e0f1a2b", "base_symbol": "ETH", "base_balance": "100",
     "quote_sub_account_id": "9c1e2d3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f", "quote_symbol": "USDT",
     "quote_balance": "1000000"},
    {"user_id": "0b6f3c1e-2d4a-4b5c-9e8f-7a6b5c4d3e2f", "exchange_id": "1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
     "base_sub_account_id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9", "base_symbol": "BTC", "base_balance": "100",
     "quote_sub_account_id": "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e0f", "quote_symbol": "USDC",
     "quote_balance": "1000000"},
]
EVERY_TYPE = {event_type: 1 for event_type in simulate_bot.channels()}


def event_type_of(address: str) -> str:
    return address.removeprefix("trading.").removesuffix(".{user_id}")


def contract_errors(schema_name: str, payload) -> list[str]:
    validator = jsonschema.Draft7Validator({**CONTRACT, "$ref": f"#/$defs/{schema_name}"},
                                           format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(payload)]


def test_asyncapi_document_is_valid():
    if not (ROOT / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("node_modules/@asyncapi/parser is missing: run `make install` (it runs `npm ci`)")
    node = shutil.which("node")
    assert node, "node is not on PATH; it is needed to validate asyncapi.yaml"
    result = subprocess.run([node, "tools/validate_asyncapi.mjs", "asyncapi.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("message_name", sorted(MESSAGES))
def test_every_message_example_validates_against_the_generated_models(message_name):
    channel, message = MESSAGES[message_name]
    schema_name = message["payload"]["$ref"].rsplit("/", 1)[-1]
    assert message["examples"], f"{message_name} has no example"
    for example in message["examples"]:
        payload = example["payload"]
        getattr(models, schema_name).model_validate(payload)
        assert contract_errors(schema_name, payload) == []
        assert payload["event_type"] == event_type_of(channel["address"])
        assert models.EventHeaders.model_validate(example["headers"]).Nats_Msg_Id == payload["event_id"]


def test_every_example_has_its_own_event_id():
    ids = [example["payload"]["event_id"] for _, message in MESSAGES.values() for example in message["examples"]]
    assert len(ids) == len(set(ids))


def test_every_received_channel_has_the_user_id_as_its_last_token():
    for channel in RECEIVED.values():
        tokens = channel["address"].split(".")
        assert tokens[-1] == "{user_id}" and "{user_id}" not in tokens[:-1], channel["address"]
        assert list(channel["parameters"]) == ["user_id"]


def test_the_service_receives_every_nats_channel_once_and_event_types_name_the_channels():
    received = [op["channel"]["$ref"] for op in DOC["operations"].values() if op["action"] == "receive"
                and op["channel"]["$ref"] != "#/channels/liveFeed"]
    nats = [name for name, channel in DOC["channels"].items() if channel.get("servers") == [{"$ref": "#/servers/nats"}]]
    assert sorted(received) == sorted(f"#/channels/{name}" for name in nats) == sorted(
        f"#/channels/{name}" for name in RECEIVED)
    assert set(DOC["channels"]) == {*nats, "liveFeed", "webhook"}
    assert sorted(DOC["components"]["schemas"]["EventType"]["enum"]) == sorted(
        event_type_of(channel["address"]) for channel in RECEIVED.values())


def test_the_service_sends_only_the_live_feed_and_the_webhooks_each_on_its_own_server():
    sent = {name: op for name, op in DOC["operations"].items() if op["action"] == "send"}
    assert sorted(op["channel"]["$ref"] for op in sent.values()) == ["#/channels/liveFeed", "#/channels/webhook"]
    assert DOC["channels"]["liveFeed"]["servers"] == [{"$ref": "#/servers/liveFeed"}]
    assert (DOC["servers"]["liveFeed"]["protocol"], DOC["servers"]["liveFeed"]["pathname"]) == ("wss", "/v1/stream")
    assert DOC["channels"]["webhook"]["servers"] == [{"$ref": "#/servers/webhook"}]
    assert DOC["servers"]["webhook"]["protocol"] == "https"


def test_every_webhook_event_type_has_one_message_whose_example_validates():
    """One message per type a webhook delivers (the live feed's types and the monitors' crossing), each with an
    example whose `type` is that message's, valid against the contract and the generated models."""
    from db import feed, webhooks

    types = []
    for name, message in WEBHOOK_MESSAGES.items():
        schema_name = message["payload"]["$ref"].rsplit("/", 1)[-1]
        assert message["examples"], f"{name} has no example"
        for example in message["examples"]:
            payload = example["payload"]
            assert contract_errors(schema_name, payload) == [], name
            getattr(models, schema_name).model_validate(payload)
            assert contract_errors("WebhookHeaders", example["headers"]) == [], name
            assert example["headers"]["Tiris-Event-Id"] == payload["id"]
            types.append(payload["type"])
    assert sorted(types) == sorted(set(types)) == sorted((*feed.TYPES, webhooks.CROSSED))


def test_simulated_events_conform_to_the_contract():
    events = simulate_bot.build_events(PLAN, count=600, mix=EVERY_TYPE, seed=1)
    routes = simulate_bot.channels()
    assert {e.kind for e in events} == {"valid"}
    seen_types = set()
    for event in events:
        payload = json.loads(event.data)
        address, model = routes[payload["event_type"]]
        assert event.subject == address.replace("{user_id}", payload["user_id"])
        assert event.headers == {"Nats-Msg-Id": payload["event_id"]}
        model.model_validate(payload)
        assert contract_errors(model.__name__, payload) == []
        seen_types.add(payload["event_type"])
    assert seen_types == set(routes)
    assert len({e.headers["Nats-Msg-Id"] for e in events}) == len(events)


def test_simulated_fills_alternate_and_never_take_a_funded_user_below_zero():
    events = simulate_bot.build_events(PLAN, count=2000, mix=EVERY_TYPE, seed=2)
    books = {u["user_id"]: {"base": Decimal(u["base_balance"]), "quote": Decimal(u["quote_balance"]),
                            "locked": Decimal(0), "sides": []} for u in PLAN}
    for payload in (json.loads(e.data) for e in events):
        book = books[payload["user_id"]]
        if payload["event_type"] == "orders.filled":
            volume, cost, fee = Decimal(payload["amount"]), Decimal(payload["amount"]) * Decimal(payload["price"]), \
                Decimal(payload["fee"])
            sign = 1 if payload["side"] == "buy" else -1
            book["base"] += sign * volume
            book["quote"] -= sign * cost + fee
            book["sides"].append(payload["side"])
        elif payload["event_type"] == "balance.updated":
            assert Decimal(payload["previous_balance"]) == book["quote"]  # the simulator tracks what we would hold
            book["quote"] = Decimal(payload["new_balance"])
        elif payload["event_type"].startswith("balance."):
            book["locked"] += Decimal(payload["amount"]) * (1 if payload["event_type"] == "balance.locked" else -1)
        assert book["base"] >= 0 and book["quote"] >= 0 and 0 <= book["locked"] <= book["base"]
    for book in books.values():
        assert book["sides"] and book["sides"] == ["buy", "sell"] * (len(book["sides"]) // 2) + \
            ["buy"] * (len(book["sides"]) % 2)


def test_simulated_duplicates_resend_an_earlier_event_with_the_same_id():
    events = simulate_bot.build_events(PLAN, count=1000, duplicate_ratio=0.2, seed=3)
    duplicates = [i for i, e in enumerate(events) if e.kind == "duplicate"]
    assert 120 < len(duplicates) < 280
    for i in duplicates:
        original = [e for e in events[:i] if e.kind == "valid" and e.headers == events[i].headers]
        assert len(original) == 1
        assert (original[0].subject, original[0].data) == (events[i].subject, events[i].data)
    assert len({e.headers["Nats-Msg-Id"] for e in events}) == len(events) - len(duplicates)


def test_simulated_invalid_events_fail_validation_or_name_a_foreign_sub_account():
    events = simulate_bot.build_events(PLAN, count=600, invalid_ratio=0.5, seed=4)
    accounts = {u["user_id"]: {u["base_sub_account_id"], u["quote_sub_account_id"]} for u in PLAN}
    flavours = Counter()
    for event in (e for e in events if e.kind == "invalid"):
        try:
            payload = json.loads(event.data)
        except json.JSONDecodeError:
            flavours["malformed"] += 1
            continue
        assert event.headers == {"Nats-Msg-Id": payload["event_id"]}
        try:
            models.OrderFilledEvent.model_validate(payload)
        except ValidationError:
            assert contract_errors("OrderFilledEvent", payload)
            flavours["missing field"] += 1
            continue
        assert {payload["base_sub_account_id"], payload["quote_sub_account_id"]} - accounts[payload["user_id"]]
        flavours["foreign"] += 1
    assert set(flavours) == {"malformed", "missing field", "foreign"} and sum(flavours.values()) > 200
    assert len({e.headers["Nats-Msg-Id"] for e in events}) == len(events)


def test_the_same_seed_builds_the_same_events():
    start = datetime(2025, 1, 15, 10, 0, tzinfo=timezone.utc)
    first, second = (simulate_bot.build_events(PLAN, count=200, duplicate_ratio=0.1, invalid_ratio=0.1, seed=5,
                                               start=start) for _ in range(2))
    assert first == second


def test_setup_creates_users_with_funded_sub_accounts(service_env, monkeypatch):
    from db import engine, sub_accounts
    from db.access import Caller

    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    plan = simulate_bot.setup(2)
    try:
        assert len({user["user_id"] for user in plan}) == 2
        with engine.reading() as conn:
            for user in plan:
                caller = Caller(id=uuid.UUID(user["user_id"]), role="user")
                base = sub_accounts.get(conn, caller, user["base_sub_account_id"])
                quote = sub_accounts.get(conn, caller, user["quote_sub_account_id"])
                assert (base["symbol"], base["balance"]) == ("ETH", Decimal(user["base_balance"]))
                assert (quote["symbol"], quote["balance"]) == ("USDT", Decimal(user["quote_balance"]))
                assert str(base["exchange_id"]) == str(quote["exchange_id"]) == user["exchange_id"]
    finally:
        engine.engine().dispose()
    assert all(e.kind == "valid" for e in simulate_bot.build_events(plan, count=50, mix=EVERY_TYPE, seed=6))


def test_a_schema_defined_differently_in_the_two_contracts_is_refused(tmp_path, monkeypatch):
    (tmp_path / "openapi.yaml").write_text("components: {schemas: {Side: {type: string, enum: [buy, sell]}}}")
    (tmp_path / "asyncapi.yaml").write_text("components: {schemas: {Side: {type: string, enum: [buy]}}}")
    monkeypatch.setattr(contract, "ROOT", tmp_path)
    with pytest.raises(ValueError, match="'Side' is defined differently"):
        contract.merged_schemas()


LIVE_FEED = {name: DOC["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
             for name, ref in DOC["channels"]["liveFeed"]["messages"].items()}


def test_every_live_feed_message_has_an_example_that_validates_and_every_event_type_has_its_message():
    from db import feed

    events = []
    for name, message in LIVE_FEED.items():
        schema = message["payload"]["$ref"].rsplit("/", 1)[-1]
        [example] = message["examples"]
        assert contract_errors(schema, example["payload"]) == [], name
        if example["payload"]["type"] == "event":
            events.append(example["payload"]["event"])
    assert sorted(events) == sorted(set(events)) == sorted(feed.TYPES)
