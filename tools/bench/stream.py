"""Live-feed figures: the streams one API worker holds (with its RSS), and commit -> client latency at a steady
booking rate.

One `tiris serve --workers 1` with the feed on. The clients are plain asyncio SSE readers (a socket each, no HTTP
library, so the client side stays cheap): `streams` of them, STREAM_MAX_PER_USER for each user. The worker's RSS is
read from /proc before the first stream opens and once all of them are open. Then another process books deposits
(one per transaction, through the db layer, as the REST door books them) at `rate`/s, round-robin over the users,
for `seconds`, noting when each commit returned; every client notes when each `transaction.booked` of its user
arrives. Latency is arrival minus commit, over every (booking, stream) pair.
"""

import asyncio
import json
import multiprocessing
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

PER_USER = 5  # STREAM_MAX_PER_USER's default
BOOKERS = 4  # threads that book, each in its own transactions: one alone falls behind 500/s here


class Client:
    """One SSE stream: the `transaction.booked` ids it received and when (time.time())."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.arrivals: dict[str, float] = {}
        self.opened = asyncio.Event()
        self.status = None

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /v1/stream?types=transaction.booked HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        self.status = int((await reader.readline()).split()[1])
        chunked = False
        while (header := await reader.readline()) not in (b"\r\n", b""):
            chunked |= header.lower().startswith(b"transfer-encoding: chunked")
        self.opened.set()
        buffer = b""
        try:
            while True:
                if chunked:
                    size = int((await reader.readline()).strip() or b"0", 16)
                    if size == 0:
                        return
                    data = await reader.readexactly(size + 2)
                    buffer += data[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buffer += data
                *lines, buffer = buffer.split(b"\n")
                now = time.time()
                for line in lines:
                    if line.startswith(b"data: "):
                        self.arrivals.setdefault(json.loads(line[6:])["id"], now)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _book(database_url: str, env: dict, accounts: list[tuple[str, str]], rate: float, seconds: float, out) -> None:
    """In its own process: deposits at `rate`/s; sends back {transaction id: commit returned at}."""
    import os
    import uuid as uuid_module
    from decimal import Decimal

    os.environ.update(env)
    from db import booking, engine, feed
    from db.commands import Entry, Transfer
    from tiris import config

    settings = config.use(config.load())
    engine.configure(settings)
    feed.configure(settings.feed_enabled)
    committed, start = {}, time.monotonic()

    def deposits(lane: int) -> None:  # lane k books the k-th of every BOOKERS bookings
        n = lane
        while (elapsed := time.monotonic() - start) < seconds:
            while n < int(elapsed * rate) + 1:
                user_id, account_id = accounts[n % len(accounts)]
                with engine.transaction() as conn:
                    booked = booking.book_one(conn, Entry(uuid_module.UUID(user_id), Transfer(
                        uuid_module.UUID(account_id), "credit", Decimal("0.01"), "deposit")))
                committed[str(booked.transactions[0]["id"])] = time.time()
                n += BOOKERS
            time.sleep(0.001)

    lanes = [threading.Thread(target=deposits, args=(lane,)) for lane in range(BOOKERS)]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    out.put(committed)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(port: int, worker: int, users: list[tuple[str, str, str]], streams: int, book,
                   cpu_seconds) -> dict:
    idle_mb = _rss_mb(worker)
    clients = [Client(port, token) for token, _, _ in users for _ in range(PER_USER)][:streams]
    tasks = [asyncio.create_task(client.run()) for client in clients]
    await asyncio.wait_for(asyncio.gather(*(client.opened.wait() for client in clients)), timeout=120)
    refused = sum(client.status != 200 for client in clients)
    await asyncio.sleep(2)  # settled: every stream past its first read
    held_mb = _rss_mb(worker)
    cpu_before = cpu_seconds(worker)
    committed = await asyncio.to_thread(book)
    await asyncio.sleep(2)  # the last ones in flight
    worker_cpu = cpu_seconds(worker) - cpu_before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [(client.arrivals[tid] - at) * 1000 for client in clients for tid, at in committed.items()
                 if tid in client.arrivals]
    expected = len(committed) * PER_USER  # each booking reaches every stream of its user
    return {"streams": streams - refused, "refused": refused, "idle_rss_mb": idle_mb, "held_rss_mb": held_mb,
            "bookings": len(committed), "deliveries": len(latencies), "expected_deliveries": expected,
            "worker_cpu_ms_per_booking": worker_cpu * 1000 / max(len(committed), 1),
            "p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": _percentile(latencies, 0.99) if latencies else float("nan")}


def measure(port: int, worker: int, users: list[tuple[str, str, str]], streams: int, rate: float, seconds: float,
            env: dict, cpu_seconds) -> dict:
    """`users`: (token, user id, sub-account id); `cpu_seconds(pid)`: the CPU time a process has used. Returns the
    figures."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    accounts = [(user_id, account_id) for _, user_id, account_id in users[:streams // PER_USER]]

    def book() -> dict:
        process = context.Process(target=_book, args=(env["DATABASE_URL"], env, accounts, rate, seconds, out))
        process.start()
        while True:
            try:
                committed = out.get(timeout=1)
                break
            except queue.Empty:
                if process.exitcode is not None:
                    raise SystemExit(f"the booking process exited with {process.exitcode}") from None
        process.join(timeout=30)
        return committed

    figures = asyncio.run(_measure(port, worker, users, streams, book, cpu_seconds))
    figures.update(rate=rate, seconds=seconds)
    return figures


if __name__ == "__main__":
    sys.exit("run through tools.bench.run")
