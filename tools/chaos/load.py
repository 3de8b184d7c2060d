"""The steady load of a chaos run, both doors at once, each bounded in time and reproducible from the seed:

- the bot: `tools/simulate_bot.py`'s events (fills, order notes, signals, heartbeats, duplicates, poison) published
  at a steady rate; a publish that fails (JetStream restarting) is sent again with the same Nats-Msg-Id until the
  stream acknowledges it;
- REST: deposits, withdrawals (some refused: 422 INSUFFICIENT_BALANCE), long and short trading logs and reads, each
  write with an Idempotency-Key; a write whose connection died or that got a 503 is sent again with the same key
  and body, to the other replica, until it has an answer.

The bot's users and the REST users are distinct, so a REST withdrawal can never make a bot event a dead letter: the
dead letters are exactly the poison.
"""

import asyncio
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from tools import simulate_bot

REST_FUNDING = {"ETH": Decimal("5"), "USDT": Decimal("20000")}
RETRY_PAUSE = 0.2  # seconds before a write is sent again (503s: at most 1 s of their Retry-After)


# --- the bot --------------------------------------------------------------------------------------------------------

def bot_events(plan: list[dict], count: int, seed: int, *, duplicates: float = 0.04,
               poison: float = 0.01) -> list[simulate_bot.Event]:
    """The simulator's events. Half the duplicates keep their Nats-Msg-Id, and JetStream drops them within its
    de-duplication window; the other half go without one, so the stream keeps them (as it would a re-send after
    the window) and only the consumer's record of handled event ids stops them."""
    rng = random.Random(f"{seed}:duplicates")
    events = simulate_bot.build_events(plan, count=count, duplicate_ratio=duplicates, invalid_ratio=poison,
                                       seed=seed)
    for i, event in enumerate(events):
        if event.kind == "duplicate" and rng.random() < 0.5:
            events[i] = event._replace(headers={})
    return events


class BotLoad:
    """Publishes `events` evenly until `until` (monotonic), then whatever is left as fast as it can, until
    `give_up` (monotonic); `unacknowledged` holds those the stream never acknowledged."""

    def __init__(self, nats_url: str, events: list[simulate_bot.Event], until: float, give_up: float):
        self.nats_url, self.events, self.until, self.give_up = nats_url, events, until, give_up
        self.counts: Counter = Counter()
        self.unacknowledged: list[simulate_bot.Event] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._publish()), name="chaos-bot", daemon=True)

    async def _publish(self) -> None:
        import nats

        async def quiet(error: Exception) -> None:  # the restarts are on purpose: no tracebacks
            self.counts["nats_client_errors"] += 1

        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
                                error_cb=quiet)
        js = nc.jetstream()
        started = time.monotonic()
        spacing = (self.until - started) / max(len(self.events), 1)
        try:
            for i, event in enumerate(self.events):
                if (ahead := started + i * spacing - time.monotonic()) > 0:
                    await asyncio.sleep(ahead)
                await self._send(js, event)
        finally:
            await nc.close()

    async def _send(self, js, event: simulate_bot.Event) -> None:
        while True:
            try:
                ack = await js.publish(event.subject, event.data, timeout=5, headers=dict(event.headers) or None)
                self.counts["acknowledged"] += 1
                self.counts["dropped_as_duplicate"] += bool(ack.duplicate)
                return
            except Exception:  # noqa: BLE001 - down, restarting, no responders yet: the same message again
                self.counts["publish_retries"] += 1
                if time.monotonic() > self.give_up:
                    self.unacknowledged.append(event)
                    return
                await asyncio.sleep(0.5)


# --- REST ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RestAccount:
    token: str
    user_id: str
    exchange_id: str
    base_id: str  # ETH
    quote_id: str  # USDT


@dataclass
class Operation:
    key: str
    kind: str  # deposit | withdraw | long | short
    account: RestAccount
    amount: Decimal  # deposit/withdraw: USDT; long/short: ETH volume
    price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    outcome: str = "pending"  # acknowledged | refused | unresolved | unexpected <status>
    ids: list[str] = field(default_factory=list)  # the transaction or trading log the 201 named
    attempts: int = 0

    def effects(self) -> dict[str, Decimal]:
        """What the write does to each balance once booked."""
        if self.kind == "deposit":
            return {self.account.quote_id: self.amount}
        if self.kind == "withdraw":
            return {self.account.quote_id: -self.amount}
        notional = self.price * self.amount
        if self.kind == "long":
            return {self.account.base_id: self.amount, self.account.quote_id: -(notional + self.fee)}
        return {self.account.base_id: -self.amount, self.account.quote_id: notional - self.fee}

    def request(self) -> tuple[str, dict]:
        info = {"chaos": self.key}
        if self.kind in ("deposit", "withdraw"):
            return f"/v1/sub-accounts/{self.account.quote_id}/{self.kind}", {"amount": str(self.amount), "info": info}
        return "/v1/trading-logs", {
            "type": self.kind, "source": "api", "message": f"chaos {self.kind}", "exchange_id": self.account.exchange_id,
            "trade": {"base_sub_account_id": self.account.base_id, "quote_sub_account_id": self.account.quote_id,
                      "symbol": "ETH/USDT", "volume": str(self.amount), "price": str(self.price), "fee": str(self.fee)},
            "info": info}


def create_rest_accounts(count: int, token_ttl: int) -> list[RestAccount]:
    """Users with an exchange and a funded ETH and USDT sub-account each, through the db layer (configured by the
    caller), and a token for each."""
    from db import engine, exchanges, sub_accounts, users
    from db.access import Caller
    from tiris import auth

    tag, found = secrets.token_hex(3), []
    for n in range(count):
        with engine.transaction() as conn:
            user = users.ensure(conn, f"chaos-{tag}-{n}@example.com")
            caller = Caller(id=user["id"], role="user")
            exchange = exchanges.create(conn, caller, name="chaos", type_="simulator", api_key=uuid.uuid4().hex,
                                        api_secret=secrets.token_hex(16))
            accounts = {symbol: sub_accounts.create(conn, caller, exchange_id=exchange["id"], name=symbol,
                                                    symbol=symbol, opening_balance=amount, info={})
                        for symbol, amount in REST_FUNDING.items()}
        found.append(RestAccount(auth.mint(user["id"], ttl=token_ttl), str(user["id"]), str(exchange["id"]),
                                 str(accounts["ETH"]["id"]), str(accounts["USDT"]["id"])))
    return found


class RestLoad:
    """`workers` threads, together about `rate` requests a second until `until`; a write still unanswered then is
    retried until `give_up`. Every answer's status is counted; every 5xx is kept with its time."""

    def __init__(self, urls: list[str], accounts: list[RestAccount], seed: int, rate: float, until: float,
                 give_up: float, workers: int = 4):
        self.urls, self.accounts, self.seed, self.rate = urls, accounts, seed, rate
        self.until, self.give_up, self.workers = until, give_up, workers
        self.operations: list[Operation] = []
        self.statuses: Counter = Counter()
        self.counts: Counter = Counter()
        self.server_errors: list[tuple[float, int, str]] = []  # (monotonic time, status, error code)
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, args=(n,), name=f"chaos-rest-{n}", daemon=True)
                        for n in range(workers)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def _next(self, rng: random.Random, worker: int, n: int) -> Operation | RestAccount:
        """The worker's n-th request, from its own seeded generator: a write (Operation) or a read (RestAccount)."""
        account = rng.choice(self.accounts)
        kind = rng.choices(["deposit", "withdraw", "long", "short", "read"], [30, 25, 15, 15, 15])[0]
        if kind == "read":
            return account
        key = f"chaos-{self.seed}-{worker}-{n}"
        if kind in ("deposit", "withdraw"):
            return Operation(key, kind, account, Decimal(rng.randint(1, 2500)))
        return Operation(key, kind, account, Decimal(rng.randint(1, 150)) / 100, Decimal(rng.randint(2900, 3100)),
                         Decimal(rng.randint(0, 300)) / 100)

    def _work(self, worker: int) -> None:
        rng, spacing = random.Random(f"{self.seed}:rest:{worker}"), self.workers / self.rate
        next_at, n = time.monotonic(), 0
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < self.until:
                if (ahead := next_at - time.monotonic()) > 0:
                    time.sleep(ahead)
                next_at += spacing
                request = self._next(rng, worker, n)
                if isinstance(request, Operation):
                    with self._lock:
                        self.operations.append(request)
                    self._write(client, request, first=worker + n)
                else:
                    self._read(client, request, replica=worker + n)
                n += 1

    def _answer(self, response: httpx.Response) -> str:
        code = ""
        if response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
        with self._lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append((time.monotonic(), response.status_code, code))
        return code

    def _read(self, client: httpx.Client, account: RestAccount, replica: int) -> None:
        with self._lock:
            self.counts["reads"] += 1
        try:
            response = client.get(f"{self.urls[replica % len(self.urls)]}/v1/sub-accounts/{account.quote_id}",
                                  headers={"Authorization": f"Bearer {account.token}"})
        except httpx.TransportError:
            with self._lock:
                self.counts["read_connection_errors"] += 1
            return
        self._answer(response)

    def _write(self, client: httpx.Client, op: Operation, first: int) -> None:
        path, body = op.request()
        headers = {"Authorization": f"Bearer {op.account.token}", "Idempotency-Key": op.key}
        while True:
            url = self.urls[(first + op.attempts) % len(self.urls)]  # a retry goes to the other replica
            op.attempts += 1
            pause = RETRY_PAUSE
            try:
                response = client.post(url + path, json=body, headers=headers)
            except httpx.TransportError:  # refused (replica down) or cut (worker killed): answer unknown
                with self._lock:
                    self.counts["connection_errors"] += 1
            else:
                code = self._answer(response)
                if response.status_code == 201:
                    payload = response.json()
                    op.outcome, op.ids = "acknowledged", [payload["id"]]
                    break
                if response.status_code == 422 and code == "INSUFFICIENT_BALANCE":
                    op.outcome = "refused"
                    break
                if response.status_code != 503:
                    op.outcome = f"unexpected {response.status_code} {code}"
                    break
                pause = min(float(response.headers.get("Retry-After", 1)), 1.0)
            if time.monotonic() > self.give_up:
                op.outcome = "unresolved"
                break
            time.sleep(pause)
        if op.attempts > 1:
            with self._lock:
                self.counts["retried"] += 1
