"""Event figures: fills/s publish -> commit through `tiris consume`, p99 publish -> commit latency at half that rate,
and two ceilings: the same rows written by batched inserts straight from Python, and by SQL alone (the database's own
limit).

Commit times are observed, not inferred: a watcher polls processed_events for rows that became visible. It reads
only rows claimed since shortly before the oldest transaction open at its previous poll (processed_at is the
claiming transaction's start, and pg_stat_activity says the oldest open one), so each poll is small and no commit
is missed; and it reads them only when a consumer's progress row (written by every batch in its transaction) has
moved, so it costs the database little beside what it measures. Its resolution is the poll interval (10 ms).
"""

import asyncio
import concurrent.futures
import datetime as dt
import json
import threading
import time
import uuid
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from db.commands import Trade
from db.legs import trade_legs
from generated.models import TradeType
from tools import simulate_bot

POLL = 0.01
# A backend stamps its transaction's start a moment before pg_stat_activity shows it: the next poll reads from a
# little earlier than the oldest open transaction, so a transaction caught in that moment is not missed.
OLDEST_OPEN = ("SELECT least(clock_timestamp(), min(xact_start)) - interval '100 milliseconds' FROM pg_stat_activity "
               "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")


PROGRESS = "SELECT sum(last_stream_seq) FROM consumer_state"


class CommitWatcher(threading.Thread):
    """Records when each event id is first seen committed in processed_events (time.time())."""

    def __init__(self, conninfo: str):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.low = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]
        self.seen: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        progress = None
        while not self.halt.is_set():
            # Each batch moves its consumer's row in its own transaction: until one moves, nothing new committed.
            now_at = self.conn.execute(PROGRESS).fetchone()[0]
            if now_at == progress:
                time.sleep(POLL)
                continue
            progress = now_at
            next_low = self.conn.execute(OLDEST_OPEN).fetchone()[0]
            rows = self.conn.execute("SELECT event_id FROM processed_events WHERE processed_at >= %s",
                                     (self.low,)).fetchall()
            now = time.time()
            for (event_id,) in rows:
                self.seen.setdefault(event_id, now)
            self.low = next_low
            time.sleep(POLL)

    def wait_for(self, ids: set[str], timeout: float) -> float:
        """Blocks until every id is seen; returns the last one's commit time."""
        deadline = time.monotonic() + timeout
        while not ids.issubset(self.seen.keys()):
            if time.monotonic() > deadline:
                missing = len(ids - self.seen.keys())
                raise TimeoutError(f"{missing} of {len(ids)} events not committed within {timeout:.0f} s")
            time.sleep(0.05)
        return max(self.seen[i] for i in ids)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.conn.close()


def fills(plan: list[dict], count: int, seed: int) -> list[simulate_bot.Event]:
    return simulate_bot.build_events(plan, count=count, mix={"orders.filled": 1}, seed=seed)


async def _publish(nats_url: str, events: list[simulate_bot.Event], rate: float) -> dict[str, float]:
    """Publishes in order at `rate`/s (0: unpaced); returns event id -> publish time (time.time())."""
    import nats

    nc = await nats.connect(nats_url)
    js, futures, sent = nc.jetstream(), [], {}
    started = time.monotonic()
    try:
        for i, event in enumerate(events):
            if rate > 0 and (ahead := started + i / rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            sent[event.headers["Nats-Msg-Id"]] = time.time()
            futures.append(await js.publish_async(event.subject, event.data, headers=dict(event.headers)))
        await asyncio.gather(*futures)
    finally:
        await nc.close()
    return sent


def throughput(nats_url: str, watcher: CommitWatcher, events, timeout: float) -> dict:
    """All events published unpaced; fills/s from the first publish to the last commit."""
    sent = asyncio.run(_publish(nats_url, events, 0))
    published_at = max(sent.values())
    last_commit = watcher.wait_for(set(sent), timeout)
    first = min(sent.values())
    return {"events": len(events), "fills_per_s": len(events) / (last_commit - first),
            "publish_per_s": len(events) / max(published_at - first, 1e-9), "seconds": last_commit - first}


def latency(nats_url: str, watcher: CommitWatcher, events, rate: float, timeout: float) -> dict:
    sent = asyncio.run(_publish(nats_url, events, rate))
    watcher.wait_for(set(sent), timeout)
    delays = sorted((watcher.seen[i] - t) * 1000 for i, t in sent.items())
    return {"events": len(events), "rate": rate, "p50_ms": delays[len(delays) // 2],
            "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))], "max_ms": delays[-1]}


def _rows(batch: list[dict], balances: dict[uuid.UUID, Decimal], symbols: dict[uuid.UUID, str], stream_seq: int):
    """The rows the consumer writes for these fills: claims, logs, legs, balance changes."""
    claims, logs, legs = [], [], []
    now = dt.datetime.now(dt.timezone.utc)
    for n, e in enumerate(batch):
        buy = e["side"] == "buy"
        base, quote = uuid.UUID(e["base_sub_account_id"]), uuid.UUID(e["quote_sub_account_id"])
        log_id = uuid.uuid4()
        trade = Trade(TradeType.long if buy else TradeType.short, uuid.UUID(e["exchange_id"]), base, quote,
                      volume=Decimal(e["amount"]), price=Decimal(e["price"]), fee=Decimal(e["fee"]))
        tx_ids = []
        for leg in trade_legs(trade, symbols[quote]):
            balances[leg.sub_account_id] += leg.delta
            tx_ids.append(uuid.uuid4())
            legs.append((tx_ids[-1], now, e["user_id"], e["exchange_id"], leg.sub_account_id, leg.direction,
                         leg.reason, leg.amount, balances[leg.sub_account_id], leg.price, leg.quote_symbol, log_id,
                         e["event_id"], Jsonb({})))
        claims.append((e["event_id"], e["event_type"], e["user_id"], f"trading.orders.filled.{e['user_id']}",
                       stream_seq + n))
        logs.append((log_id, now, e["timestamp"], e["user_id"], e["exchange_id"], trade.kind.value, "bot",
                     f"{e['side']} {e['amount']} {e['symbol']} order {e['order_id']} filled",
                     Jsonb({"base_sub_account_id": e["base_sub_account_id"], "symbol": e["symbol"],
                            "quote_sub_account_id": e["quote_sub_account_id"], "volume": e["amount"],
                            "price": e["price"], "fee": e["fee"]}), tx_ids,
                     Jsonb({"order_id": e["order_id"], "trade_id": e["trade_id"], "fee_asset": e["fee_asset"]})))
    return claims, logs, legs


def ceiling(conninfo: str, events, batch_size: int) -> dict:
    """The same rows as the consumer writes, by batched inserts in one process: the most the database gives."""
    payloads = [json.loads(event.data) for event in events]
    started = time.monotonic()
    with psycopg.connect(conninfo) as conn:
        for start in range(0, len(payloads), batch_size):
            batch = payloads[start:start + batch_size]
            with conn.transaction():
                ids = sorted({uuid.UUID(e[k]) for e in batch for k in ("base_sub_account_id", "quote_sub_account_id")})
                locked = conn.execute("SELECT id, balance, symbol FROM sub_accounts WHERE id = ANY(%s) ORDER BY id "
                                      "FOR UPDATE", (ids,)).fetchall()
                balances = {row[0]: row[1] for row in locked}
                opening = dict(balances)
                claims, logs, legs = _rows(batch, balances, {row[0]: row[2] for row in locked}, start)
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO processed_events (event_id, event_type, user_id, subject, stream_seq)"
                                    " VALUES (%s, %s, %s, %s, %s)", claims)
                    cur.execute("UPDATE sub_accounts AS s SET balance = s.balance + d.delta, updated_at = now() "
                                "FROM unnest(%s::uuid[], %s::numeric[]) AS d(id, delta) WHERE s.id = d.id",
                                (list(balances), [balances[i] - opening[i] for i in balances]))
                    cur.executemany("INSERT INTO trading_logs (id, timestamp, event_time, user_id, exchange_id, type,"
                                    " source, message, trade, transaction_ids, info) VALUES "
                                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", logs)
                    cur.executemany("INSERT INTO transactions (id, timestamp, user_id, exchange_id, sub_account_id, "
                                    "direction, reason, amount, closing_balance, price, quote_symbol, trading_log_id,"
                                    " event_id, info) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                    legs)
    seconds = time.monotonic() - started
    return {"events": len(payloads), "fills_per_s": len(payloads) / seconds, "seconds": seconds}


# The database's own limit: fills booked by SQL alone, n per transaction, the plan's users in turn. Each statement
# writes what a fill writes in the ceiling above (a claim, a trading log, two legs with their closing balances, two
# balance updates), with the arithmetic done by PostgreSQL's NUMERIC; Python only sends the statement.
SERVER_SIDE_BATCH = """
WITH fill AS (
    SELECT gen_random_uuid() AS log_id, gen_random_uuid()::text AS event_id, g, u.*,
           (1 + g %% 10) / 1000.0 AS volume, 3000 + g %% 97 AS price
    FROM generate_series(0, %(n)s - 1) AS g
    JOIN unnest(%(users)s::uuid[], %(exchanges)s::uuid[], %(bases)s::uuid[], %(quotes)s::uuid[])
         WITH ORDINALITY AS u(user_id, exchange_id, base, quote, i) ON u.i = (%(start)s + g) %% %(count)s + 1
), leg AS (
    SELECT gen_random_uuid() AS id, fill.*, l.*
    FROM fill, LATERAL (VALUES (1, base, 'credit', volume), (2, quote, 'debit', round(volume * price * 1.001, 8)))
         AS l(n, account, direction, amount)
), moved AS (
    SELECT account, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS delta FROM leg GROUP BY account
), balance AS (
    UPDATE sub_accounts AS s SET balance = s.balance + moved.delta, updated_at = now() FROM moved
    WHERE s.id = moved.account RETURNING s.id, s.balance - moved.delta AS opening
), claim AS (
    INSERT INTO processed_events (event_id, event_type, user_id, subject, stream_seq)
    SELECT event_id, 'orders.filled', user_id, 'trading.orders.filled.' || user_id, %(start)s + g FROM fill
), log AS (
    INSERT INTO trading_logs (id, event_time, user_id, exchange_id, type, source, message, trade, transaction_ids,
                              info)
    SELECT log_id, now(), user_id, exchange_id, 'long', 'bot', 'buy ' || volume || ' ETH/USDT order filled',
           jsonb_build_object('base_sub_account_id', base, 'quote_sub_account_id', quote, 'symbol', 'ETH/USDT',
                              'volume', volume::text, 'price', price::text),
           array_agg(id ORDER BY n), jsonb_build_object('order_id', 'o-' || g)
    FROM leg GROUP BY log_id, event_id, g, user_id, exchange_id, base, quote, volume, price
)
INSERT INTO transactions (id, user_id, exchange_id, sub_account_id, direction, reason, amount, closing_balance, price,
                          quote_symbol, trading_log_id, event_id, info)
SELECT leg.id, user_id, exchange_id, account, direction, 'long', amount,
       balance.opening + sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END)
                         OVER (PARTITION BY account ORDER BY g, n),
       price, 'USDT', log_id, event_id, '{}'
FROM leg JOIN balance ON balance.id = leg.account
"""


def database_limit(conninfo: str, plan: list[dict], count: int, per_transaction: int = 100, clients: int = 2) -> dict:
    """Fills/s with the whole batch computed and written by one statement, `clients` connections at once; each
    client books its own half of the users, so the clients never wait on each other's rows."""
    columns = {name: [user[key] for user in plan] for name, key in (
        ("users", "user_id"), ("exchanges", "exchange_id"), ("bases", "base_sub_account_id"),
        ("quotes", "quote_sub_account_id"))}
    share = len(plan) // clients
    per_transaction = min(per_transaction, share)

    def book(client: int) -> None:
        users = {name: values[client * share:(client + 1) * share] for name, values in columns.items()}
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for start in range(0, count // clients, per_transaction):
                conn.execute(SERVER_SIDE_BATCH, {**users, "n": per_transaction, "start": start, "count": share})

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(book, client) for client in range(clients)]:
            done.result()  # a failed statement fails the run, not a figure
    seconds = time.monotonic() - started
    booked = clients * len(range(0, count // clients, per_transaction)) * per_transaction
    return {"events": booked, "fills_per_s": booked / seconds, "seconds": seconds, "clients": clients,
            "per_transaction": per_transaction}
