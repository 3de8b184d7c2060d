"""The real service (two gunicorn workers, each with its own connection pool) under concurrent clients.

Guarded behaviour:
- Money stays consistent when eight clients book deposits, withdrawals and long/short/stop_loss trades on the same
  sub-accounts at once: every balance equals credits - debits of its ledger, no balance goes negative, each
  account's closing balances chain without gaps, the ledger holds exactly the legs the successful responses
  reported (plus the opening credits), and a refused operation writes nothing.
- A refusal is a 422 in the documented error format, never a 5xx.
- An exchange's api_secret never leaves the service: not in a response (body or header, success or error), not in
  its log, and not in plaintext in the database.
"""

import concurrent.futures
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Context, Decimal, Inexact, localcontext

import httpx
import psycopg
import pytest

from db import engine as db_engine
from db import crypto, users
from db.urls import psycopg_kwargs
from tests.server import live_server  # noqa: F401  (a fixture, used by name)
from tiris import auth

CLIENTS = 8
OPERATIONS_PER_CLIENT = 50
RUN_TIMEOUT = 180.0  # the whole concurrent phase; it takes a few seconds, this only stops a hung run
REQUEST_TIMEOUT = 30.0  # above the service's 15 s statement timeout, so a slow answer is seen, not a client timeout
MAX_PAGES = 50
QUANTUM = Decimal("1e-18")
# Sums of NUMERIC(38,18) values need up to 38+ digits; the default context (28) would round them silently, so
# the checks add in this one, where any rounding at all raises.
EXACT = Context(prec=80, traps=[Inexact])
# The 422 codes openapi.yaml documents (components/responses/Unprocessable).
DOCUMENTED_422_CODES = {"INSUFFICIENT_BALANCE", "SYMBOL_MISMATCH", "AMOUNT_OUT_OF_RANGE"}

# Opening balances; SOL opens empty, so it has no opening credit and is only funded by what the clients book.
OPENING = {"USDT": "250000.123456", "ETH": "30.5", "BTC": "2.25", "SOL": "0"}
# base, quote, price range, base volume range, decimal places of volume and price. The places add up to more
# than 18, so price*volume needs rounding and the direction of that rounding (debits up, credits down) is checked.
PAIRS = [
    ("ETH", "USDT", ("1500", "2500"), ("0.001", "0.6"), 12, 9),
    ("BTC", "USDT", ("20000", "40000"), ("0.0001", "0.05"), 12, 8),
    ("SOL", "USDT", ("10", "40"), ("0.01", "20"), 10, 10),
    ("ETH", "BTC", ("0.04", "0.08"), ("0.001", "0.5"), 12, 12),
]
# Far above anything an account can hold here (even if all 400 operations credited USDT their largest amount it
# would stay below 3*10^6), so an operation this big is refused whatever the interleaving: that makes "some
# refusals happened" deterministic.
OVERSIZED = "1000000000.5"


def _money(rng: random.Random, low: str, high: str, places: int) -> str:
    """A random decimal string with exactly `places` decimals, drawn without floats."""
    scale = 10 ** places
    units = rng.randint(int(Decimal(low) * scale), int(Decimal(high) * scale))
    return format(Decimal(units).scaleb(-places), "f")


def _ceil18(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_CEILING)


def _floor18(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_FLOOR)


@dataclass
class Operation:
    kind: str  # deposit | withdraw (their own endpoints), log_deposit | log_withdraw, long | short | stop_loss
    method: str
    path: str
    body: dict
    request_id: str
    oversized: bool = False
    status: int | None = None
    response: dict | None = None
    headers: dict = field(default_factory=dict)

    @property
    def moves_money_out(self) -> bool:
        """Whether the operation debits anything, i.e. whether a short balance may refuse it."""
        return self.kind not in ("deposit", "log_deposit")

    def booked_transaction_ids(self) -> list[str]:
        if self.kind in ("deposit", "withdraw"):  # the sub-account endpoints answer with the one transaction
            return [self.response["id"]]
        return list(self.response["transaction_ids"])


def _plan(rng: random.Random, client: int, exchange_id: str, accounts: dict[str, str]) -> list[Operation]:
    """One client's operations. Drawn up front, so the sequence depends only on the seed, not on the answers."""
    operations = []
    for number in range(OPERATIONS_PER_CLIENT):
        request_id = f"c{client}-op{number}"
        kind = rng.choices(["deposit", "withdraw", "log_deposit", "log_withdraw", "long", "short", "stop_loss"],
                           weights=[15, 15, 5, 5, 25, 25, 10])[0]
        oversized = kind not in ("deposit", "log_deposit") and rng.random() < 0.12
        if kind in ("deposit", "withdraw", "log_deposit", "log_withdraw"):
            symbol = rng.choice(list(accounts))
            low, high = {"USDT": ("1", "5000"), "ETH": ("0.001", "3"), "BTC": ("0.0001", "0.2"),
                         "SOL": ("0.01", "50")}[symbol]
            amount = OVERSIZED if oversized else _money(rng, low, high, 8)
            if kind in ("deposit", "withdraw"):
                operations.append(Operation(kind, "POST", f"/v1/sub-accounts/{accounts[symbol]}/{kind}",
                                            {"amount": amount, "info": {"by": request_id}}, request_id, oversized))
            else:
                log_type = kind.removeprefix("log_")
                operations.append(Operation(kind, "POST", "/v1/trading-logs", {
                    "type": log_type, "source": "api", "message": f"{log_type} {amount} {symbol}",
                    "exchange_id": exchange_id, "sub_account_id": accounts[symbol], "amount": amount},
                    request_id, oversized))
            continue
        base, quote, (price_low, price_high), (volume_low, volume_high), volume_places, price_places = \
            rng.choice(PAIRS)
        price = _money(rng, price_low, price_high, price_places)
        volume = OVERSIZED if oversized else _money(rng, volume_low, volume_high, volume_places)
        # A fee of at most 0.2% of the notional: never more than a sell's proceeds, so the only refusal a
        # well-formed trade here can meet is a short balance.
        with localcontext(prec=80):
            fee = (Decimal(price) * Decimal(volume) * rng.randint(0, 20) / 10000).quantize(
                Decimal("1e-8"), rounding=ROUND_DOWN)
        trade = {"base_sub_account_id": accounts[base], "quote_sub_account_id": accounts[quote],
                 "volume": volume, "price": price, "fee": format(fee, "f")}
        if rng.random() < 0.5:  # optional; when present it must match, so both forms are exercised
            trade["symbol"] = f"{base}/{quote}"
        operations.append(Operation(kind, "POST", "/v1/trading-logs", {
            "type": kind, "source": "bot", "message": f"{kind} {volume} {base} at {price} {quote}",
            "exchange_id": exchange_id, "trade": trade}, request_id, oversized))
    return operations


def _run_client(base_url: str, token: str, operations: list[Operation], start: threading.Barrier) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        start.wait()  # all clients begin together, so their requests really overlap
        for op in operations:
            response = client.request(op.method, op.path, json=op.body, headers={"X-Request-ID": op.request_id})
            op.status, op.headers = response.status_code, dict(response.headers)
            op.response = response.json() if response.content else None


def _user_token(email: str) -> str:
    with db_engine.transaction() as conn:
        user = users.ensure(conn, email, role="user")
    return auth.mint(user["id"])


def _all_transactions(client: httpx.Client, sub_account_id: str) -> list[dict]:
    rows, cursor = [], None
    for _ in range(MAX_PAGES):
        params = {"sub_account_id": sub_account_id, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/transactions", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return rows
    pytest.fail(f"more than {MAX_PAGES} pages of transactions for {sub_account_id}: the cursor does not advance")


def _expected_legs(op: Operation) -> list[tuple[str, str, Decimal]]:
    """(sub-account id, direction, amount) of each leg, from the contract's rules, in Decimal."""
    body = op.body
    if op.kind in ("deposit", "withdraw"):
        return [(op.path.split("/")[3], "credit" if op.kind == "deposit" else "debit", Decimal(body["amount"]))]
    if op.kind in ("log_deposit", "log_withdraw"):
        return [(body["sub_account_id"], "credit" if op.kind == "log_deposit" else "debit", Decimal(body["amount"]))]
    trade = body["trade"]
    volume, price, fee = Decimal(trade["volume"]), Decimal(trade["price"]), Decimal(trade["fee"])
    with localcontext(prec=80):  # exact up to the rounding to 18 places, which is the point of the check
        if op.kind == "long":  # debits round up, credits down: rounding never favours the user
            return [(trade["base_sub_account_id"], "credit", volume),
                    (trade["quote_sub_account_id"], "debit", _ceil18(price * volume + fee))]
        return [(trade["base_sub_account_id"], "debit", volume),
                (trade["quote_sub_account_id"], "credit", _floor18(price * volume - fee))]


def _check_ledger(symbol: str, balance: Decimal, rows: list[dict]) -> None:
    with localcontext(EXACT):
        credits = sum((Decimal(r["amount"]) for r in rows if r["direction"] == "credit"), Decimal(0))
        debits = sum((Decimal(r["amount"]) for r in rows if r["direction"] == "debit"), Decimal(0))
        assert balance == credits - debits, (symbol, balance, credits, debits)
        assert balance >= 0, (symbol, balance)
        # Booked one at a time under the row lock, so in time order each row starts where the previous one ended;
        # a lost update or a stale read shows up here even when the totals happen to agree.
        running = Decimal(0)
        for row in sorted(rows, key=lambda r: (r["timestamp"], r["id"])):
            running += Decimal(row["amount"]) if row["direction"] == "credit" else -Decimal(row["amount"])
            assert Decimal(row["closing_balance"]) == running, (symbol, row, running)
            assert running >= 0, (symbol, row)
        assert running == balance, (symbol, running, balance)


def test_concurrent_clients_keep_every_balance_equal_to_its_ledger(live_server, settings, service_env):  # noqa: F811
    token = _user_token("concurrent@example.com")
    api = httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"},
                       timeout=REQUEST_TIMEOUT)
    with api:
        response = api.post("/v1/exchanges", json={"name": "Shared", "type": "simulator",
                                                   "api_key": "AKIACONCURRENT000001", "api_secret": "unused-1"})
        assert response.status_code == 201, response.text
        exchange_id = response.json()["id"]
        accounts = {}
        for symbol, opening in OPENING.items():
            response = api.post("/v1/sub-accounts", json={"exchange_id": exchange_id, "name": f"{symbol} wallet",
                                                          "symbol": symbol, "balance": opening})
            assert response.status_code == 201, response.text
            assert Decimal(response.json()["balance"]) == Decimal(opening)
            accounts[symbol] = response.json()["id"]
        opening_credits = sum(1 for value in OPENING.values() if Decimal(value) > 0)

        plans = [_plan(random.Random(1000 + client), client, exchange_id, accounts) for client in range(CLIENTS)]
        start = threading.Barrier(CLIENTS, timeout=30)
        began = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS)
        try:
            futures = [pool.submit(_run_client, live_server.url, token, plan, start) for plan in plans]
            done, pending = concurrent.futures.wait(futures, timeout=RUN_TIMEOUT)
        finally:
            # Not `with`: its exit waits for hung clients. These unblock when the fixture stops the server.
            pool.shutdown(wait=False, cancel_futures=True)
        assert not pending, f"the clients did not finish within {RUN_TIMEOUT:.0f} s"
        for future in done:
            future.result()  # a client's own exception (a transport error) fails the test here
        elapsed = time.monotonic() - began
        operations = [op for plan in plans for op in plan]
        assert len(operations) == CLIENTS * OPERATIONS_PER_CLIENT

        # Every answer is a success or a documented refusal.
        server_errors = [(op.request_id, op.status, op.response) for op in operations if op.status >= 500]
        assert not server_errors, f"5xx answers: {server_errors[:5]}"
        succeeded = [op for op in operations if 200 <= op.status < 300]
        refused = [op for op in operations if not 200 <= op.status < 300]
        for op in succeeded:
            assert op.status == 201, (op.request_id, op.status, op.response)
        for op in refused:
            assert op.status == 422, (op.request_id, op.body, op.status, op.response)
            error = op.response["error"]
            assert set(error) >= {"code", "message", "trace_id", "timestamp"}, error
            assert error["code"] in DOCUMENTED_422_CODES, error
            # The only refusal these well-formed operations can meet is a short balance on a debit.
            assert error["code"] == "INSUFFICIENT_BALANCE" and op.moves_money_out, (op.kind, op.body, error)
            assert error["trace_id"] == op.request_id == op.headers.get("x-request-id"), error
        booked_oversized = [op.request_id for op in operations if op.oversized and op.status < 300]
        assert not booked_oversized, f"debits larger than any balance were booked: {booked_oversized}"
        assert refused and succeeded, (len(refused), len(succeeded))
        assert any(op.kind in ("long", "short", "stop_loss") for op in succeeded), "no trade was ever booked"

        # The ledger, as the API shows it.
        ledger: dict[str, list[dict]] = {}
        for symbol, sub_account_id in accounts.items():
            response = api.get(f"/v1/sub-accounts/{sub_account_id}")
            assert response.status_code == 200, response.text
            ledger[sub_account_id] = _all_transactions(api, sub_account_id)
            _check_ledger(symbol, Decimal(response.json()["balance"]), ledger[sub_account_id])

        by_id = {row["id"]: row for rows in ledger.values() for row in rows}
        assert len(by_id) == sum(len(rows) for rows in ledger.values()), "a transaction listed twice"
        openings = [row for row in by_id.values() if row["reason"] == "opening_balance"]
        assert len(openings) == opening_credits, openings
        reported = [tid for op in succeeded for tid in op.booked_transaction_ids()]
        assert len(reported) == len(set(reported)), "two responses report the same transaction"
        assert len(by_id) == len(reported) + opening_credits, (len(by_id), len(reported), opening_credits)
        assert set(by_id) == set(reported) | {row["id"] for row in openings}

        # Each success booked exactly the legs the contract's rules give, with its rounding.
        for op in succeeded:
            booked = [by_id[tid] for tid in op.booked_transaction_ids()]
            assert [(r["sub_account_id"], r["direction"], Decimal(r["amount"])) for r in booked] == \
                _expected_legs(op), (op.kind, op.body, booked)
            reason = op.kind.removeprefix("log_")
            assert all(r["reason"] == reason for r in booked), (op.kind, booked)

    # The same invariants straight from PostgreSQL, past the API's serialisation and pagination.
    trading_log_ids = {op.response["id"] for op in succeeded if op.path == "/v1/trading-logs"}
    with psycopg.connect(**psycopg_kwargs(service_env["DATABASE_URL"])) as conn:
        for symbol, sub_account_id in accounts.items():
            balance, credits, debits, count = conn.execute(
                "SELECT s.balance,"
                " COALESCE(SUM(t.amount) FILTER (WHERE t.direction = 'credit'), 0),"
                " COALESCE(SUM(t.amount) FILTER (WHERE t.direction = 'debit'), 0), COUNT(t.id)"
                " FROM sub_accounts s LEFT JOIN transactions t ON t.sub_account_id = s.id"
                " WHERE s.id = %s GROUP BY s.id, s.balance", (sub_account_id,)).fetchone()
            assert isinstance(balance, Decimal) and isinstance(credits, Decimal)
            assert balance == credits - debits, (symbol, balance, credits, debits)
            assert balance >= 0, (symbol, balance)
            assert count == len(ledger[sub_account_id]), (symbol, count)
            last = conn.execute("SELECT closing_balance FROM transactions WHERE sub_account_id = %s"
                                " ORDER BY timestamp DESC, id DESC LIMIT 1", (sub_account_id,)).fetchone()
            assert (last[0] if last else Decimal(0)) == balance, (symbol, last, balance)
        assert conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == len(by_id)
        # A refused operation writes nothing: no log row without its money, no money without its log row.
        stored_logs = {str(row[0]) for row in conn.execute("SELECT id FROM trading_logs")}
        assert stored_logs == trading_log_ids, (len(stored_logs), len(trading_log_ids))

    print(f"{len(operations)} operations by {CLIENTS} clients in {elapsed:.1f} s: {len(succeeded)} booked, "
          f"{len(refused)} refused")


def test_no_response_or_log_line_contains_an_api_secret(live_server, settings, service_env):  # noqa: F811
    token = _user_token("secrets@example.com")
    run = uuid.uuid4().hex
    secrets = [f"SECRET-{uuid.uuid4()}" for _ in range(4)]
    responses: list[httpx.Response] = []

    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=REQUEST_TIMEOUT) as api:
        def call(method: str, path: str, expected: int, **kwargs) -> httpx.Response:
            response = api.request(method, path, **kwargs)
            responses.append(response)
            assert response.status_code == expected, (method, path, response.status_code, response.text)
            return response

        first = call("POST", "/v1/exchanges", 201, json={
            "name": "First", "type": "binance", "api_key": f"AKIA{run}A", "api_secret": secrets[0]}).json()
        second = call("POST", "/v1/exchanges", 201, json={
            "name": "Second", "type": "okx", "api_key": f"AKIA{run}B", "api_secret": secrets[1],
            "info": {"testnet": True}}).json()
        for exchange in (first, second):
            assert {"api_key", "api_secret"}.isdisjoint(exchange), exchange  # writeOnly in the contract
            call("GET", f"/v1/exchanges/{exchange['id']}", 200)
        call("GET", "/v1/exchanges", 200)
        call("PATCH", f"/v1/exchanges/{first['id']}", 200, json={"name": "First renamed", "status": "inactive"})
        call("PATCH", f"/v1/exchanges/{first['id']}", 200, json={"api_secret": secrets[2]})
        call("PATCH", f"/v1/exchanges/{second['id']}", 200, json={"api_key": f"AKIA{run}C",
                                                                  "api_secret": secrets[3]})
        call("GET", f"/v1/exchanges/{first['id']}", 200)
        call("GET", "/v1/exchanges", 200, params={"limit": 1})

        # Refused requests carrying a secret: validation errors describe the offending value, a conflict
        # describes the clash; neither may quote the secret back.
        call("POST", "/v1/exchanges", 400, json={
            "name": "Bad type", "type": "not-an-exchange", "api_key": f"AKIA{run}D", "api_secret": secrets[0]})
        call("POST", "/v1/exchanges", 400, json={
            "name": "Extra", "type": "binance", "api_key": f"AKIA{run}E", "api_secret": secrets[0],
            "unexpected": True})
        call("POST", "/v1/exchanges", 400, json={
            "name": "Too long", "type": "binance", "api_key": f"AKIA{run}F", "api_secret": secrets[0] + "x" * 500})
        call("PATCH", f"/v1/exchanges/{first['id']}", 400, json={"api_secret": {"value": secrets[1]}})
        call("PATCH", f"/v1/exchanges/{first['id']}", 400, json={"api_secret": [secrets[1]], "name": ""})
        call("POST", "/v1/exchanges", 400, headers={"Content-Type": "application/json"},
             content=('{"name": "Broken", "type": "binance", "api_secret": "' + secrets[2] + '"').encode())
        call("POST", "/v1/exchanges", 409, json={
            "name": "Second", "type": "binance", "api_key": f"AKIA{run}G", "api_secret": secrets[3]})
        call("PATCH", f"/v1/exchanges/{uuid.uuid4()}", 404, json={"api_secret": secrets[3]})

    # Every leaking exchange is collected before failing, so one run shows them all.
    leaks = [f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text}" for r in responses
             if any(secret in r.text + json.dumps(r.headers.multi_items()) for secret in secrets)]
    assert not leaks, "responses quoting an api_secret:\n" + "\n".join(leaks)

    # Stopped first, so everything the workers will ever write (access log included) is in the file.
    live_server.stop()
    log = live_server.log_text()
    assert f"PATCH /v1/exchanges/{first['id']}" in log, "the access log is not in the log file: nothing checked"
    for secret in secrets:
        assert secret not in log, f"{secret} is in {live_server.log_path}"

    with psycopg.connect(**psycopg_kwargs(service_env["DATABASE_URL"])) as conn:
        cursor = conn.execute("SELECT * FROM exchanges")
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor]
        for row in rows:
            for name, value in row.items():
                raw = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                for secret in secrets:
                    assert secret.encode() not in raw, f"exchanges.{name} holds {secret} in plaintext"
        # Nothing else in the database holds a secret either (a bytea column prints as hex in ::text).
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            dump = "\n".join(text for (text,) in conn.execute(f'SELECT t::text FROM "{table}" t'))
            for secret in secrets:
                assert secret not in dump and secret.encode().hex() not in dump, f"{table} holds {secret}"

    # Not vacuous: the sealed values are the secrets the PATCHes last set.
    stored = {str(row["id"]): row for row in rows}
    for exchange, secret in ((first, secrets[2]), (second, secrets[3])):
        row = stored[exchange["id"]]
        assert crypto.open_sealed(bytes(row["api_secret_ciphertext"]), row["key_id"], row["user_id"],
                                  "api_secret") == secret
