"""The rows openapi.yaml's examples name, made for the property test with the examples' ids, so that the
examples phase meets real rows (and a 2xx) instead of a 404.

Each row is made through the service's own paths (the HTTP API, the event door's applier, the DB layer), then
re-keyed to the example's id (`UPDATE ... SET id = :example`, as tests/test_events_api.py does). The user is the
contract's example user (3fa85f64-...): their exchange, ETH and USDT sub-accounts, the USDT deposit, the long
trade's trading log, a bot's order, a dead letter an admin can re-drive and a refresh token; and a login the
loopback provider approved (the callback example's state and code), made afresh for each callback case.

A delete is refused while the row holds something (an exchange its sub-accounts, a sub-account its balance, a
trading log its ledger entries: 409), so a DELETE operation gets only the deleted row and its parents, and the
trading log it deletes is a note.
"""

import functools
import hashlib
import json
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml

from consumers import applier
from consumers.contract import load_channels, received_channels
from consumers.parse import Incoming, parse
from db import dead_letters, engine, monitors, sessions, users, webhook_deliveries
from tests.conftest import Api
from tests.helpers import create_exchange, create_sub_account
from tests.oauth_provider import REDIRECT_URI, approve
from tiris import auth, config

ROOT = Path(__file__).resolve().parent.parent

# The ids and secrets the contract's examples use.
USER = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXCHANGE = "6f1c2a4e-8b1d-4c8e-9d1a-3b2c4d5e6f70"
ETH, USDT = "2a7d9e10-3c4b-4e5f-8a6b-7c8d9e0f1a2b", "9c1e2d3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
DEPOSIT = "0b8f3c1e-7a42-4f0e-9c55-2d7e1a9b4c61"  # the Transaction example: 10000 USDT in
TRADING_LOG = "5d2c8b7a-1e3f-4a6b-9c0d-8e7f6a5b4c3d"  # the TradingLog example: long 2 ETH at 3000, fee 12
ORDER = "0b7c8d9e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
DEAD_LETTER = "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e"
WEBHOOK, MONITOR = "7e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "8f2a3b4c-5d6e-4f7a-9b0c-1d2e3f4a5b6c"
REFRESH_TOKEN = "8xLOxBtZp8VpJc4QnS5pC3m1yq0kQ2uXwq9m0H2v7Zk"
LOGIN_STATE, LOGIN_CODE = "Vq2mX0yQ", "4/0AX4XfWh-example"

# What a DELETE operation removes: only that row and its parents are made.
DELETED = {"DELETE /v1/exchanges/{exchange_id}": "exchange",
           "DELETE /v1/sub-accounts/{sub_account_id}": "sub-account",
           "DELETE /v1/trading-logs/{trading_log_id}": "trading-log"}


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _rekey(conn, table: str, old, new: str) -> None:
    conn.execute(sa.text(f"UPDATE {table} SET id = :new WHERE id = :old"), {"new": new, "old": str(old)})


def _rekey_transaction(conn, old: str, new: str) -> None:
    _rekey(conn, "transactions", old, new)
    for table in ("trading_logs", "orders"):
        conn.execute(sa.text(f"UPDATE {table} SET transaction_ids = array_replace(transaction_ids, :old, :new) "
                             "WHERE :old = ANY(transaction_ids)"), {"new": uuid.UUID(new), "old": uuid.UUID(old)})


def _rekey_trading_log(conn, old: str, new: str) -> None:
    _rekey(conn, "trading_logs", old, new)
    conn.execute(sa.text("UPDATE transactions SET trading_log_id = :new WHERE trading_log_id = :old"),
                 {"new": new, "old": old})


@functools.cache
def _channels() -> dict:
    return load_channels()


@functools.cache
def _event(event_type: str) -> tuple[str, dict]:
    """(subject, payload) of asyncapi.yaml's example of this event type (they are all the example user's)."""
    document = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    for channel in received_channels(document).values():
        for message in channel["messages"].values():
            if "$ref" in message:
                message = document["components"]["messages"][message["$ref"].rsplit("/", 1)[-1]]
            for example in message["examples"]:
                if example["payload"]["event_type"] == event_type:
                    return channel["address"].replace("{user_id}", USER), example["payload"]
    raise LookupError(event_type)


def create(client, operation: str) -> str:
    """Makes the examples' rows for `operation` (its label, as Schemathesis names it); returns the example user's
    access token."""
    deleted = DELETED.get(operation)
    with engine.transaction() as conn:
        user = users.ensure(conn, "fuzz-user@example.com")
        _rekey(conn, "users", user["id"], USER)
    api = Api(client, auth.mint(uuid.UUID(USER)))

    exchange = create_exchange(api, name="Main Binance", api_key="KEY-fuzz-user@example.com")["id"]
    with engine.transaction() as conn:
        _rekey(conn, "exchanges", exchange, EXCHANGE)
    if deleted == "exchange":
        return api.token
    if deleted == "trading-log":
        status, note = api.post("/v1/trading-logs", json={"type": "signal", "source": "manual",
                                                          "message": "ETH looks cheap", "exchange_id": EXCHANGE})
        assert status == 201, note
        with engine.transaction() as conn:
            _rekey_trading_log(conn, note["id"], TRADING_LOG)
        return api.token

    for fixed, symbol in ((ETH, "ETH"), (USDT, "USDT")):
        account = create_sub_account(api, EXCHANGE, symbol, name=symbol)["id"]
        with engine.transaction() as conn:
            _rekey(conn, "sub_accounts", account, fixed)
    if deleted == "sub-account":
        return api.token

    # 10000 USDT in twice, the second re-keyed to the example deposit: its reversal leaves the trade's 6012 paid.
    for _ in range(2):
        status, deposit = api.post(f"/v1/sub-accounts/{USDT}/deposit", json={"amount": "10000"})
        assert status == 201, deposit
    with engine.transaction() as conn:
        _rekey_transaction(conn, deposit["id"], DEPOSIT)
    status, log = api.post("/v1/trading-logs", json={
        "type": "long", "source": "manual", "message": "Long 2 ETH at 3000", "exchange_id": EXCHANGE,
        "trade": {"base_sub_account_id": ETH, "quote_sub_account_id": USDT, "symbol": "ETH/USDT", "volume": "2",
                  "price": "3000", "fee": "12"}})
    assert status == 201, log
    with engine.transaction() as conn:
        _rekey_trading_log(conn, log["id"], TRADING_LOG)

    # A bot's order, through the event door (an order that failed holds nothing); and a dead letter of a signal
    # that re-drives fine now.
    subject, failed = _event("orders.failed")
    with engine.transaction() as conn:
        [handled] = applier.handle(conn, [parse(Incoming(subject, json.dumps(failed).encode(), None, None, 1),
                                                _channels())], 1)
        assert handled.outcome == "applied", handled
        conn.execute(sa.text("UPDATE orders SET id = :new WHERE order_id = :order_id"),
                     {"new": ORDER, "order_id": failed["order_id"]})
        subject, signal = _event("signals")
        dead_letters.keep(conn, event_id=signal["event_id"], msg_id=None, subject=subject, stream_seq=None,
                          payload=json.dumps(signal), reason="NOT_FOUND: Exchange not found.", attempts=1)
        conn.execute(sa.text("UPDATE dead_letters SET id = :new WHERE event_id = :event_id"),
                     {"new": DEAD_LETTER, "event_id": signal["event_id"]})

        # A session whose refresh token is the example's.
        issued = sessions.start(conn, uuid.UUID(USER), "google", config.current().refresh_token_ttl)
        conn.execute(sa.text("UPDATE refresh_tokens SET token_hash = :new WHERE token_hash = :old"),
                     {"new": _sha256(REFRESH_TOKEN), "old": _sha256(issued.refresh_token)})

    # A webhook (with a monitor on the USDT sub-account) and a delivery of the deposit that follows it.
    status, webhook = api.post("/v1/webhooks", json={
        "url": "https://hooks.example.com/tiris", "events": ["transaction.booked", "order.updated"],
        "description": "Trading desk alerts",
        "monitors": [{"sub_account_id": USDT, "threshold": "1000", "direction": "below"}]})
    assert status == 201, webhook
    with engine.transaction() as conn:  # its monitor is made again once the webhook has the example's id
        monitors.replace_all(conn, uuid.UUID(USER), uuid.UUID(webhook["id"]), [])
        _rekey(conn, "webhooks", webhook["id"], WEBHOOK)
        monitors.replace_all(conn, uuid.UUID(USER), uuid.UUID(WEBHOOK), webhook["monitors"])
        conn.execute(sa.text("UPDATE balance_monitors SET id = :new WHERE webhook_id = :webhook"),
                     {"new": MONITOR, "webhook": WEBHOOK})
    assert api.post(f"/v1/sub-accounts/{USDT}/deposit", json={"amount": "1"})[0] == 201
    with engine.transaction() as conn:
        assert webhook_deliveries.fan_out(conn) == 1
    return api.token


def approve_login(client, provider) -> None:
    """A login the loopback provider approved, its state and code re-keyed to the callback example's.

    A state works once and any callback naming it spends it (a wrong code, or the wrong provider, too), so the
    property test calls this before every callback case; a state the last case left unspent is dropped first."""
    status, login = Api(client, None).post("/v1/auth/login",
                                           json={"provider": "google", "redirect_uri": REDIRECT_URI})
    assert status == 200, login
    approved = approve(login["auth_url"])
    with engine.transaction() as conn:
        conn.execute(sa.text("DELETE FROM oauth_states WHERE state_hash = :example"),
                     {"example": _sha256(LOGIN_STATE)})
        conn.execute(sa.text("UPDATE oauth_states SET state_hash = :new WHERE state_hash = :old"),
                     {"new": _sha256(LOGIN_STATE), "old": _sha256(approved["state"])})
    provider.codes[LOGIN_CODE] = provider.codes.pop(approved["code"])
