"""Dredd hooks: make every documented example of openapi.yaml a real, passing request against a live server.

tests/test_dredd.py runs `dredd openapi.yaml URL --hookfiles tests/dredd_hooks.py` against `tiris serve` on the
test's fresh database; `dredd-hooks-python` loads this file in its own process, with the service's environment plus
TIRIS_URL (the server), DREDD_REPORT (where this file writes what it did) and DREDD_HOOKS_LOG (tracebacks).

Dredd makes one transaction per documented response: the operation's request example, sent as is, and the
response's example as the expectation. The hooks
- create what the examples refer to (users and tokens through the DB layer; an exchange, funded sub-accounts,
  transactions, trading logs through the API; dead letters, a consumer's counters and a bot heartbeat through the
  DB layer, since only the event consumer writes those),
- point each transaction at those rows (path ids, ids inside the example body) and give it the credentials and
  the one change that makes the server answer with the transaction's status (no token for 401, a user's token on an
  admin operation for 403, an unknown id for 404, an invalid field for 400, ...),
- skip only the transactions listed in SKIPPED, each with its reason,
- after each response, check its body against the response's schema in openapi.yaml as well: Dredd itself only
  compares the body with the example's structure (its OpenAPI 3 parser drops format, pattern, enum checks ...).

A transaction without a plan here fails ("no hook plan"), so a new operation or status in openapi.yaml cannot be
silently left out. An exception in a hook would kill the hook server (and every later transaction fails after a
5 s timeout), so every hook catches everything and fails only its own transaction.
"""

import io
import json
import os
import socket
import sys
import traceback
import uuid
from pathlib import Path

import dredd_hooks as hooks
import httpx
import yaml
from dredd_hooks import dredd as hook_server

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the service's packages (db, tiris), for the fixtures made through the DB layer
    sys.path.insert(0, str(ROOT))



class _QuickAckReader(io.RawIOBase):
    """Reads the hook server's socket, acknowledging each segment at once.

    Dredd writes each message as two segments (the JSON, then the newline) on a socket with Nagle's algorithm on,
    so the newline waits until the JSON is acknowledged, and Linux delays that ACK by 40 ms: about 0.15 s per
    transaction, 20 s per run. TCP_QUICKACK does not stick, so it is set again before every read.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if hasattr(socket, "TCP_QUICKACK"):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self.sock.recv_into(buffer)


class _HookHandler(hook_server.HookHandler):
    disable_nagle_algorithm = True  # our answers go out at once, too

    def setup(self):
        super().setup()
        self.rfile = io.BufferedReader(_QuickAckReader(self.connection))


# The hook server is created after this file is loaded (dredd_hooks.dredd.main), with the class it finds here.
hook_server.HookHandler = _HookHandler

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"  # a well-formed id that no row has

# (method, path template, status) -> why Dredd cannot test it. "default" stands for every operation's `default`.
SKIPPED = {
    ("*", "*", "default"): (
        "Dredd 14 turns each `default` response into a transaction that expects status 200 with the ErrorResponse example; "
        "`default` documents unexpected errors (a 500), which no request produces on purpose. Schemathesis checks "
        "every undocumented status against it (tests/test_schemathesis*.py)."),
    ("*", "*", "429"): (
        "A 429 needs the caller's allowance used up; the live server runs with limits no test reaches, so that "
        "the other transactions pass. tests/test_rate_limits.py exhausts small limits, against two workers too."),
    ("GET", "/metrics", "200"): (
        "Dredd compares a text/plain body with the example verbatim, and the body is live counters; "
        "tests/test_observability.py parses it with the Prometheus text parser instead."),
    ("POST", "/v1/events/replay", "503"): (
        "Needs NATS to be unreachable; the run's NATS server is shared by the whole test session, and stopping it "
        "under a live server would not be deterministic."),
    ("GET", "/v1/stream", "200"): (
        "The live feed is a stream that lasts while the client wants and Dredd reads a body to its end; "
        "tests/test_live_feed_stream.py reads it event by event (resume, replicas, tickets, limits, the WebSocket)."),
    ("GET", "/v1/stream", "503"): (
        "Answered by a server started with FEED_ENABLED=0, while the live server runs with the feed on; "
        "tests/test_live_feed_outbox.py::test_with_the_feed_off_bookings_write_no_feed_and_the_stream_is_503 "
        "proves it."),
    ("GET", "/health/ready", "503"): (
        "Needs the database or NATS to be down while the server runs; not deterministic against a shared "
        "PostgreSQL and NATS."),
}

state: dict = {}  # the fixtures, made in before_all
report: list[dict] = []  # one entry per transaction, written to DREDD_REPORT in after_all


def _log(text: str) -> None:
    path = os.environ.get("DREDD_HOOKS_LOG")
    if path:
        with open(path, "a") as log:
            log.write(text + "\n")
    print(text, file=sys.stderr)


def guarded(function):
    """Never lets an exception reach the hook server: the transaction fails with the error instead."""

    def run(transaction):
        try:
            function(transaction)
        except Exception as error:  # noqa: BLE001 - any error must fail this transaction, not the hook server
            _log(f"hook {function.__name__} failed on {transaction.get('name') if isinstance(transaction, dict) else ''}"
                 f":\n{traceback.format_exc()}")
            if isinstance(transaction, dict):
                transaction["fail"] = f"hook {function.__name__}: {type(error).__name__}: {error}"
            else:  # before_all gets the list of transactions; each one fails in before_each instead
                state["setup_error"] = f"{type(error).__name__}: {error}"

    run.__name__ = function.__name__
    return run


# ---------------------------------------------------------------- fixtures


class Client:
    def __init__(self, base_url: str, token: str):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)

    def call(self, method: str, path: str, expect: int, **kw) -> dict:
        response = self.http.request(method, path, **kw)
        if response.status_code != expect:
            raise AssertionError(f"fixture {method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}


def _users_and_tokens() -> None:
    from db import engine, sessions, users
    from tiris import auth, config

    settings = config.use(config.load(dict(os.environ)))
    engine.configure(settings)
    with engine.transaction() as conn:
        made = {name: users.ensure(conn, f"dredd-{name}@example.com", role="admin" if name == "admin" else "user")
                for name in ("user", "admin", "target", "to-disable", "to-enable")}
        # The User example shows the optional `avatar` and a `theme` setting: Dredd requires every key of an example.
        for user in made.values():
            users.update(conn, user["id"], {"avatar": "https://example.com/dredd.png", "settings": {"theme": "dark"}})
        users.set_status(conn, made["to-enable"]["id"], "disabled")
        state["refresh_token"] = sessions.start(conn, made["user"]["id"], "google", 3600).refresh_token
    state["users"] = {name: str(user["id"]) for name, user in made.items()}
    state["admin_username"] = made["admin"]["username"]
    state["user_token"], state["admin_token"] = auth.mint(made["user"]["id"]), auth.mint(made["admin"]["id"])


def _ledger(api: Client) -> None:
    def exchange(name: str) -> str:  # info like the Exchange example's, whose keys Dredd requires
        return api.call("POST", "/v1/exchanges", 201, json={
            "name": name, "type": "binance", "api_key": f"DREDD-{name.upper().replace(' ', '-')}-KEY",
            "api_secret": "dredd-secret", "info": {"testnet": False}})["id"]

    def sub_account(name: str, symbol: str, balance: str | None = None) -> str:
        body = {"exchange_id": state["exchange"], "name": name, "symbol": symbol}
        if balance:
            body["balance"] = balance
        return api.call("POST", "/v1/sub-accounts", 201, json=body)["id"]

    state["exchange"] = exchange("Dredd main")  # has sub-accounts, so deleting it is a 409
    state["exchange_to_patch"] = exchange("Dredd to patch")
    state["exchange_to_delete"] = exchange("Dredd to delete")
    state["eth"] = sub_account("Dredd ETH", "ETH")
    state["usdt"] = sub_account("Dredd USDT", "USDT", "100000")  # pays every trade and withdrawal of the run
    state["poor"] = sub_account("Dredd poor", "USDT")  # stays at 0: withdrawals and trades from it are 422
    state["ledger"] = sub_account("Dredd ledger", "USDT")  # holds exactly one transaction, shaped like the example
    state["to_patch"] = sub_account("Dredd to rename", "USDT")
    state["to_delete"] = sub_account("Dredd to delete", "BTC")  # balance 0, so it can be deleted
    state["transaction"] = api.call("POST", f"/v1/sub-accounts/{state['ledger']}/deposit", 201,
                                    json={"amount": "25", "info": {"note": "initial funding"}})["id"]
    # A key already used for another request (keys are per user): sending it with an example is the 409.
    state["used_key"] = f"dredd-used-{uuid.uuid4()}"
    api.call("POST", f"/v1/sub-accounts/{state['usdt']}/deposit", 201, json={"amount": "1"},
             headers={"Idempotency-Key": state["used_key"]})
    state["trade_log"] = api.call("POST", "/v1/trading-logs", 201, json={  # moved money: deleting it is a 409
        "type": "long", "source": "manual", "message": "Long 1 ETH at 3000", "exchange_id": state["exchange"],
        "trade": {"base_sub_account_id": state["eth"], "quote_sub_account_id": state["usdt"], "symbol": "ETH/USDT",
                  "volume": "1", "price": "3000", "fee": "12"}})["id"]
    state["note_log"] = api.call("POST", "/v1/trading-logs", 201, json={
        "type": "note", "source": "manual", "message": "to be deleted", "exchange_id": state["exchange"]})["id"]
    _reversals(api, sub_account)


def _reversals(api: Client, sub_account) -> None:
    """Rows to reverse (a deposit, a trade), rows reversed already (409), a spent deposit and a note (422)."""
    def deposit(sub_account_id: str, amount: str) -> str:
        return api.call("POST", f"/v1/sub-accounts/{sub_account_id}/deposit", 201, json={"amount": amount})["id"]

    def long(base: str, quote: str) -> str:  # shaped like the TradingLog example: the logs' listing shows it first
        return api.call("POST", "/v1/trading-logs", 201, json={
            "type": "long", "source": "manual", "message": "Long 1 ETH at 3000", "exchange_id": state["exchange"],
            "trade": {"base_sub_account_id": base, "quote_sub_account_id": quote, "symbol": "ETH/USDT",
                      "volume": "1", "price": "3000", "fee": "12"}})["id"]

    reversible = sub_account("Dredd reversible", "USDT")
    state["to_reverse"], state["reversed"] = deposit(reversible, "10"), deposit(reversible, "10")
    api.call("POST", f"/v1/transactions/{state['reversed']}/reversal", 201)
    spent = sub_account("Dredd spent", "USDT")
    state["spent_deposit"] = deposit(spent, "10")  # withdrawn at once: reversing it is INSUFFICIENT_BALANCE
    api.call("POST", f"/v1/sub-accounts/{spent}/withdraw", 201, json={"amount": "10"})
    eth, usdt = sub_account("Dredd reversal ETH", "ETH"), sub_account("Dredd reversal USDT", "USDT", "10000")
    state["log_to_reverse"], state["log_reversed"] = long(eth, usdt), long(eth, usdt)
    api.call("POST", f"/v1/trading-logs/{state['log_reversed']}/reversal", 201)
    state["note_kept"] = api.call("POST", "/v1/trading-logs", 201, json={  # moved nothing: nothing to reverse
        "type": "note", "source": "manual", "message": "kept", "exchange_id": state["exchange"]})["id"]


def _events() -> None:
    """What only the event consumer writes: a dead letter per redrive outcome, counters, a bot's heartbeat."""
    import sqlalchemy as sa

    from consumers.entries import entry_for
    from db import booking, consumer_state, dead_letters, engine, schema
    from generated.models import HeartbeatEvent, OrderEvent

    user, exchange = state["users"]["user"], state["exchange"]

    def heartbeat(event_id: str) -> dict:  # the heartbeat example of asyncapi.yaml, for this user and exchange
        return {"event_id": event_id, "event_type": "heartbeat", "timestamp": "2026-01-15T10:41:00Z",
                "user_id": user, "exchange_id": exchange, "source": "tiris-bot", "schema_version": 1,
                "bot_id": "tiris-bot-1", "status": "running", "version": "1.4.2", "uptime_seconds": 7260}

    def letter(event_id: str, payload: str, seq: int) -> str:
        dead_letters.keep(conn, event_id=event_id, msg_id=event_id, subject=f"trading.heartbeat.{user}",
                          stream_seq=seq, payload=payload, reason="NOT_FOUND: Exchange not found.", attempts=1)
        return str(conn.execute(sa.select(schema.dead_letters.c.id)
                                .where(schema.dead_letters.c.event_id == event_id)).scalar_one())

    order = {"event_id": "dredd-order-0", "event_type": "orders.created", "timestamp": "2026-01-15T10:40:00Z",
             "user_id": user, "exchange_id": exchange, "source": "tiris-bot", "schema_version": 1,
             "order_id": "ord-dredd-1", "symbol": "ETH/USDT", "side": "buy", "order_type": "limit",
             "base_sub_account_id": state["eth"], "quote_sub_account_id": state["usdt"], "amount": "0.5",
             "price": "2"}
    with engine.transaction() as conn:
        beat = heartbeat("dredd-beat-0")
        booking.book_one(conn, entry_for(HeartbeatEvent.model_validate(beat)))
        booking.book_one(conn, entry_for(OrderEvent.model_validate(order)))
        state["order"] = str(conn.execute(sa.select(schema.orders.c.id)).scalar_one())
        consumer_state.add(conn, "tiris-ledger-p0", processed=1, last_stream_seq=1,
                           now=("last_processed_at", "seen_at"))
        state["letter_redrivable"] = letter("dredd-beat-1", json.dumps(heartbeat("dredd-beat-1")), 2)
        state["letter_redriven"] = letter("dredd-beat-2", json.dumps(heartbeat("dredd-beat-2")), 3)
        dead_letters.mark_redriven(conn, state["letter_redriven"])
        state["letter_invalid"] = letter("dredd-junk-1", "{not json", 4)  # re-driving it is still a 422


def _webhooks(api: Client) -> None:
    """Webhooks shaped like the example (a monitor, a description), one with a delivery in its log (made by the
    deliverer's fan-out, through the DB layer: only `tiris deliver` makes deliveries)."""
    from db import engine, webhook_deliveries

    def webhook() -> str:
        return api.call("POST", "/v1/webhooks", 201, json={
            "url": "https://hooks.example.com/dredd", "events": ["transaction.booked"], "description": "Dredd",
            "monitors": [{"sub_account_id": state["usdt"], "threshold": "1000", "direction": "below"}]})["id"]

    state["webhook"], state["webhook_to_patch"], state["webhook_to_delete"] = webhook(), webhook(), webhook()
    api.call("POST", f"/v1/sub-accounts/{state['usdt']}/deposit", 201, json={"amount": "1"})
    with engine.transaction() as conn:
        webhook_deliveries.fan_out(conn)


@hooks.before_all
@guarded
def make_fixtures(transactions):
    _users_and_tokens()
    _ledger(Client(os.environ["TIRIS_URL"], state["user_token"]))
    _events()
    _webhooks(Client(os.environ["TIRIS_URL"], state["user_token"]))


# ---------------------------------------------------------------- per-transaction plans


def _set_path(t: dict, path: str) -> None:
    t["fullPath"] = t["request"]["uri"] = path


def _path(t: dict, **ids: str) -> None:
    """Fills the path template of the transaction with these ids; the example's query string stays."""
    path = t["origin"]["resourceName"]
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    _set_path(t, path + ("?" + t["fullPath"].split("?", 1)[1] if "?" in t["fullPath"] else ""))


def _query(t: dict, query: str) -> None:
    _set_path(t, t["fullPath"].split("?")[0] + "?" + query)


def _body(t: dict, change) -> None:
    body = json.loads(t["request"]["body"])
    change(body)
    t["request"]["body"] = json.dumps(body)


def _auth(t: dict, who: str | None) -> None:
    headers = t["request"]["headers"]
    if who is None:
        headers.pop("Authorization", None)
    else:
        headers["Authorization"] = f"Bearer {state[who + '_token']}"


def _error_without_details(t: dict) -> None:
    """Dredd takes a response's one example as the required structure. `details` is a oneOf in the ErrorResponse
    schema (a list for 400s, an object or absent otherwise), but the shared 422 example shows INSUFFICIENT_BALANCE's
    object; for a 422 with other details this keeps the rest of the example as the expectation. The after_each
    schema check still validates the whole body against ErrorResponse."""
    expected = json.loads(t["expected"]["body"])
    expected["error"].pop("details", None)
    t["expected"]["body"] = json.dumps(expected)


def _login(provider: str, approved: bool) -> dict:
    """A login started on the server: its state, and the code the loopback provider gives when `approved`."""
    from tests.oauth_provider import REDIRECT_URI, approve

    started = httpx.post(f"{os.environ['TIRIS_URL']}/v1/auth/login", timeout=15,
                         json={"provider": provider, "redirect_uri": REDIRECT_URI}).json()
    return approve(started["auth_url"]) if approved else {"state": started["state"]}


def _public_plans() -> dict:
    """The public operations' plans, per (method, path, status): the login flow needs a real state and code."""
    def callback(t, provider: str, code: str | None = None):
        login = _login(provider, approved=code is None)
        _body(t, lambda b: b.update(provider=provider, state=login["state"], code=code or login["code"]))

    return {
        ("POST", "/v1/auth/login", "400"):
            lambda t: _body(t, lambda b: b.update(redirect_uri="https://evil.example/callback")),
        ("POST", "/v1/auth/callback", "200"): lambda t: callback(t, "google"),
        ("POST", "/v1/auth/callback", "400"): lambda t: _body(t, lambda b: b.update(code="")),
        ("POST", "/v1/auth/callback", "401"): lambda t: None,  # the example's state was never issued
        # The loopback WeChat answers a code `errcode-N` with that errcode: an app misconfigured, WeChat busy.
        ("POST", "/v1/auth/callback", "502"): lambda t: callback(t, "wechat", "errcode-40013"),
        ("POST", "/v1/auth/callback", "503"): lambda t: callback(t, "wechat", "errcode-45011"),
        ("POST", "/v1/auth/refresh", "200"):
            lambda t: _body(t, lambda b: b.update(refresh_token=state["refresh_token"])),
        ("POST", "/v1/auth/refresh", "400"): lambda t: _body(t, lambda b: b.update(refresh_token="")),
        ("POST", "/v1/auth/refresh", "401"): lambda t: None,  # the example's token was never issued
    }


def _plan_for(method: str, path: str, status: str):
    """The function that prepares one transaction; it raises LookupError when there is no plan for it."""
    s = state
    security = SPEC["paths"][path][method.lower()].get("security", SPEC["security"])
    who = "admin" if any("adminBearer" in requirement for requirement in security) else "user"

    # Path ids of the success cases; the same row serves the 401 (no token), and an unknown id gives the 404.
    targets = {
        ("GET", "/v1/users/{user_id}"): {"user_id": s["users"]["target"]},
        ("POST", "/v1/users/{user_id}/disable"): {"user_id": s["users"]["to-disable"]},
        ("POST", "/v1/users/{user_id}/enable"): {"user_id": s["users"]["to-enable"]},
        ("GET", "/v1/exchanges/{exchange_id}"): {"exchange_id": s["exchange"]},
        ("PATCH", "/v1/exchanges/{exchange_id}"): {"exchange_id": s["exchange_to_patch"]},
        ("DELETE", "/v1/exchanges/{exchange_id}"): {"exchange_id": s["exchange_to_delete"]},
        ("GET", "/v1/sub-accounts/{sub_account_id}"): {"sub_account_id": s["usdt"]},
        ("PATCH", "/v1/sub-accounts/{sub_account_id}"): {"sub_account_id": s["to_patch"]},
        ("DELETE", "/v1/sub-accounts/{sub_account_id}"): {"sub_account_id": s["to_delete"]},
        ("POST", "/v1/sub-accounts/{sub_account_id}/deposit"): {"sub_account_id": s["usdt"]},
        ("POST", "/v1/sub-accounts/{sub_account_id}/withdraw"): {"sub_account_id": s["usdt"]},
        ("GET", "/v1/sub-accounts/{sub_account_id}/balance-history"): {"sub_account_id": s["ledger"]},
        ("GET", "/v1/sub-accounts/{sub_account_id}/balance"): {"sub_account_id": s["ledger"]},
        ("GET", "/v1/transactions/{transaction_id}"): {"transaction_id": s["transaction"]},
        ("GET", "/v1/orders/{order_id}"): {"order_id": s["order"]},
        ("POST", "/v1/transactions/{transaction_id}/reversal"): {"transaction_id": s["to_reverse"]},
        ("POST", "/v1/trading-logs/{trading_log_id}/reversal"): {"trading_log_id": s["log_to_reverse"]},
        ("GET", "/v1/trading-logs/{trading_log_id}"): {"trading_log_id": s["trade_log"]},
        ("DELETE", "/v1/trading-logs/{trading_log_id}"): {"trading_log_id": s["note_log"]},
        ("POST", "/v1/events/dead-letters/{dead_letter_id}/redrive"): {"dead_letter_id": s["letter_redrivable"]},
        ("GET", "/v1/webhooks/{webhook_id}"): {"webhook_id": s["webhook"]},
        ("PATCH", "/v1/webhooks/{webhook_id}"): {"webhook_id": s["webhook_to_patch"]},
        ("DELETE", "/v1/webhooks/{webhook_id}"): {"webhook_id": s["webhook_to_delete"]},
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {"webhook_id": s["webhook"]},
    }
    # Ids inside the request examples, mapped to the fixtures.
    body_ids = {
        ("POST", "/v1/sub-accounts"): lambda b: b.update(exchange_id=s["exchange"]),
        ("POST", "/v1/trading-logs"): lambda b: (b.update(exchange_id=s["exchange"]), b["trade"].update(
            base_sub_account_id=s["eth"], quote_sub_account_id=s["usdt"])),
        ("POST", "/v1/webhooks"): lambda b: b["monitors"][0].update(sub_account_id=s["usdt"]),
    }
    # The one change that turns the example request into the documented error, per (method, path, status).
    errors = {
        # 400: a field that breaks the schema (the 400 example's `details` lists field errors, and so does the
        # server); for bodiless operations a query parameter out of range.
        ("PATCH", "/v1/users/me", "400"): lambda t: _body(t, lambda b: b.update(username="x")),
        ("POST", "/v1/exchanges", "400"): lambda t: _body(t, lambda b: b.update(type="no-such-exchange")),
        ("PATCH", "/v1/exchanges/{exchange_id}", "400"): lambda t: _body(t, lambda b: b.update(status="paused")),
        ("POST", "/v1/sub-accounts", "400"): lambda t: _body(t, lambda b: b.update(symbol="usdt")),
        ("PATCH", "/v1/sub-accounts/{sub_account_id}", "400"): lambda t: _body(t, lambda b: b.update(name="")),
        ("POST", "/v1/sub-accounts/{sub_account_id}/deposit", "400"):
            lambda t: _body(t, lambda b: b.update(amount="abc")),
        ("POST", "/v1/sub-accounts/{sub_account_id}/withdraw", "400"):
            lambda t: _body(t, lambda b: b.update(amount="abc")),
        ("POST", "/v1/trading-logs", "400"): lambda t: _body(t, lambda b: b["trade"].update(volume="abc")),
        ("POST", "/v1/events/replay", "400"): lambda t: _body(t, lambda b: b.update(start_time="yesterday")),
        ("POST", "/v1/auth/logout", "400"): lambda t: _body(t, lambda b: b.update(everywhere="yes")),
        ("POST", "/v1/transactions/{transaction_id}/reversal", "400"):
            lambda t: _body(t, lambda b: b.update(reason="")),
        ("POST", "/v1/trading-logs/{trading_log_id}/reversal", "400"):
            lambda t: _body(t, lambda b: b.update(reason="")),
        # 404: an id the caller does not have, in the body where the path has none.
        ("POST", "/v1/sub-accounts", "404"): lambda t: _body(t, lambda b: b.update(exchange_id=UNKNOWN_ID)),
        ("POST", "/v1/trading-logs", "404"):
            lambda t: _body(t, lambda b: b["trade"].update(quote_sub_account_id=UNKNOWN_ID)),
        # 409: a name that is taken, a row that may not be deleted, an Idempotency-Key used with another body.
        ("PATCH", "/v1/users/me", "409"): lambda t: _body(t, lambda b: b.update(username=s["admin_username"])),
        ("POST", "/v1/exchanges", "409"): lambda t: _body(t, lambda b: b.update(name="Dredd main")),
        ("PATCH", "/v1/exchanges/{exchange_id}", "409"): lambda t: _body(t, lambda b: b.update(name="Dredd main")),
        ("DELETE", "/v1/exchanges/{exchange_id}", "409"): lambda t: _path(t, exchange_id=s["exchange"]),
        ("POST", "/v1/users/{user_id}/disable", "409"): lambda t: _path(t, user_id=s["users"]["admin"]),  # themself
        ("POST", "/v1/sub-accounts", "409"): lambda t: _body(t, lambda b: b.update(name="Dredd USDT")),
        ("PATCH", "/v1/sub-accounts/{sub_account_id}", "409"):
            lambda t: _body(t, lambda b: b.update(name="Dredd USDT")),
        ("DELETE", "/v1/sub-accounts/{sub_account_id}", "409"): lambda t: _path(t, sub_account_id=s["usdt"]),
        ("POST", "/v1/sub-accounts/{sub_account_id}/deposit", "409"): lambda t: _key(t, s["used_key"]),
        ("POST", "/v1/sub-accounts/{sub_account_id}/withdraw", "409"): lambda t: _key(t, s["used_key"]),
        ("POST", "/v1/trading-logs", "409"): lambda t: _key(t, s["used_key"]),
        ("DELETE", "/v1/trading-logs/{trading_log_id}", "409"): lambda t: _path(t, trading_log_id=s["trade_log"]),
        ("POST", "/v1/transactions/{transaction_id}/reversal", "409"): lambda t: _path(t, transaction_id=s["reversed"]),
        ("POST", "/v1/trading-logs/{trading_log_id}/reversal", "409"):
            lambda t: _path(t, trading_log_id=s["log_reversed"]),
        ("POST", "/v1/events/dead-letters/{dead_letter_id}/redrive", "409"):
            lambda t: _path(t, dead_letter_id=s["letter_redriven"]),
        # 422: a business rule. A credit cannot be short, so the deposit's 422 is the 10^20 ceiling.
        ("POST", "/v1/sub-accounts/{sub_account_id}/deposit", "422"): lambda t: (
            _body(t, lambda b: b.update(amount="99999999999999999999")), _error_without_details(t)),
        ("POST", "/v1/sub-accounts/{sub_account_id}/withdraw", "422"):
            lambda t: _path(t, sub_account_id=s["poor"]),  # INSUFFICIENT_BALANCE, with the example's details
        ("POST", "/v1/trading-logs", "422"):
            lambda t: _body(t, lambda b: b["trade"].update(quote_sub_account_id=s["poor"])),
        ("POST", "/v1/transactions/{transaction_id}/reversal", "422"):
            lambda t: _path(t, transaction_id=s["spent_deposit"]),  # INSUFFICIENT_BALANCE, with the example's details
        ("POST", "/v1/trading-logs/{trading_log_id}/reversal", "422"): lambda t: (
            _path(t, trading_log_id=s["note_kept"]), _error_without_details(t)),  # NOT_REVERSIBLE
        ("POST", "/v1/events/dead-letters/{dead_letter_id}/redrive", "422"): lambda t: (
            _path(t, dead_letter_id=s["letter_invalid"]), _error_without_details(t)),  # STILL_INVALID
        # Portfolio: another user's figures are an admin's to read (403); a quote or bucket out of the schema (400).
        **{("GET", f"/v1/portfolio/{name}", "403"): lambda t: _query(t, f"user_id={s['users']['target']}")
           for name in ("summary", "pnl", "performance")},
        ("GET", "/v1/portfolio/summary", "400"): lambda t: _query(t, "quote=usdt"),
        ("GET", "/v1/portfolio/pnl", "400"): lambda t: _query(t, "bucket=year"),
        ("GET", "/v1/portfolio/performance", "400"): lambda t: _query(t, "quote=usdt"),
        # Webhooks: an event type the feed does not have (400), a private address as the target (422,
        # WEBHOOK_TARGET_REFUSED with the example's details), another user's webhooks to a user (403).
        ("POST", "/v1/webhooks", "400"): lambda t: _body(t, lambda b: b.update(events=["order.placed"])),
        ("PATCH", "/v1/webhooks/{webhook_id}", "400"): lambda t: _body(t, lambda b: b.update(events=["order.placed"])),
        ("POST", "/v1/webhooks", "422"): lambda t: _body(t, lambda b: b.update(url="https://10.0.0.7/hook")),
        ("PATCH", "/v1/webhooks/{webhook_id}", "422"): lambda t: _body(t, lambda b: b.update(url="https://10.0.0.7/h")),
        ("GET", "/v1/webhooks", "403"): lambda t: _query(t, f"user_id={s['users']['target']}"),
    }
    # Listings whose first item must carry every key of the example's first item (Dredd compares them
    # position by position): narrowed to rows shaped like the example.
    list_filters = {
        "/v1/transactions": f"sub_account_id={s['ledger']}",  # the one deposit with info.note
        "/v1/trading-logs": "type=long",  # trades, with `trade`
        "/v1/audit-events": "type=auth.login",  # the login of the callback's 200: a user, an address, a trace id
        "/v1/portfolio/pnl": "start_time=2026-01-14T00:00:00Z&end_time=2026-01-16T00:00:00Z",  # the example's days
    }

    def plan(t: dict) -> None:
        _auth(t, who)
        if "Idempotency-Key" in t["request"]["headers"]:
            # Dredd sends an optional header without an example as an empty string, which the pattern refuses.
            _key(t, f"dredd-{uuid.uuid4()}")
        if (method, path) in targets:
            _path(t, **targets[method, path])
        if (method, path) in body_ids:
            _body(t, body_ids[method, path])
        if status == "200" and path in list_filters and method == "GET":
            _query(t, list_filters[path])
        if status == "401":
            _auth(t, None)
        elif (method, path, status) in errors:
            errors[method, path, status](t)
        elif status == "403":
            _auth(t, "user")
        elif status == "404" and (method, path) in targets:
            _path(t, **{name: UNKNOWN_ID for name in targets[method, path]})
        elif status == "400" and t["request"]["method"] == "GET":
            _query(t, "limit=0")
        elif not status.startswith("2") and status not in ("401", "403", "404"):
            raise LookupError(f"no hook plan for {method} {path} {status}")

    if not security:  # a public operation (login, health): sent without a token
        public = _public_plans().get((method, path, status))
        if public is None and not status.startswith("2"):
            raise LookupError(f"no hook plan for {method} {path} {status}")
        return lambda t: (_auth(t, None), public and public(t))
    return plan


def _key(t: dict, key: str) -> None:
    t["request"]["headers"]["Idempotency-Key"] = key


def _is_default(t: dict) -> bool:
    """The transaction Dredd made of a `default` response: status 200 with the ErrorResponse example as its body."""
    if not t["expected"].get("statusCode", "").startswith("2"):
        return False
    try:
        return "error" in json.loads(t["expected"].get("body") or "{}")
    except ValueError:
        return False


def _key_of(t: dict) -> tuple[str, str, str]:
    status = "default" if _is_default(t) else t["expected"]["statusCode"]
    return t["request"]["method"], t["origin"]["resourceName"], status


@hooks.before_each
@guarded
def plan_transaction(t):
    method, path, status = key = _key_of(t)
    reason = SKIPPED.get(key) or SKIPPED.get(("*", "*", status))
    if reason:
        t["skip"] = True
        report.append({"name": t["name"], "key": list(key), "skipped": reason})
        return
    if "setup_error" in state:
        t["fail"] = f"the fixtures could not be made: {state['setup_error']}"
        return
    _plan_for(method, path, status)(t)


# ---------------------------------------------------------------- the schema check after each response


def _resolve(node):
    if isinstance(node, dict):
        if "$ref" in node:
            target = SPEC
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return _resolve(target)
        return {key: _resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    return node


def _response_schema(method: str, path: str, status: str) -> dict | None:
    responses = SPEC["paths"][path][method.lower()]["responses"]
    response = _resolve(responses.get(status) or responses["default"])
    return response.get("content", {}).get("application/json", {}).get("schema")


@hooks.after_each
@guarded
def check_schema(t):
    if t.get("skip"):
        return
    method, path, status = _key_of(t)
    entry = {"name": t["name"], "key": [method, path, status], "request": f"{method} {t['fullPath']}",
             "status": (t.get("real") or {}).get("statusCode"), "result": (t.get("test") or {}).get("status")}
    report.append(entry)
    real = t.get("real") or {}
    schema = _response_schema(method, path, str(real.get("statusCode")) if real else status)
    if schema is None or not real.get("body"):
        return
    from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker

    validator = OAS30ReadValidator(schema, format_checker=oas30_format_checker)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
              for e in validator.iter_errors(json.loads(real["body"]))]
    if errors:
        entry["schema_errors"] = errors
        t["fail"] = "the body does not match the response schema of openapi.yaml: " + "; ".join(errors)


@hooks.after_all
@guarded
def write_report(transactions):
    path = os.environ.get("DREDD_REPORT")
    if path:
        Path(path).write_text(json.dumps({"setup_error": state.get("setup_error"), "transactions": report},
                                         indent=1))
