"""`tiris consume` processes against the run's private JetStream server (conftest's nats_server), each test
starting from an empty TRADING stream."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa

from consumers import streams

ROOT = Path(__file__).resolve().parent.parent


async def _reset_stream(url: str) -> None:
    """Empty TRADING and LEDGER streams, as `tiris consume` would create them (4 partitions), so events can be
    published before it runs."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for stream in (streams.LEDGER, streams.TRADING):
        try:
            await js.delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
    await after_deletion(lambda: streams.ensure_streams(js, 4))
    await nc.close()


async def after_deletion(create, timeout: float = 15):
    """Awaits `create()`, a stream made again under a name just deleted. A loaded server may still be removing the
    old stream's files and answer 10049 "error creating store for stream"; that answer is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await create()
        except nats.js.errors.APIError as error:
            if error.err_code != 10049 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


@pytest.fixture
def jetstream(nats_server):
    asyncio.run(_reset_stream(nats_server))
    return nats_server


def publish(url: str, events: list[tuple[str, dict | bytes, str | None]]) -> None:
    """Publishes (subject, payload, Nats-Msg-Id) in order, each acknowledged by the stream."""

    async def run():
        nc = await nats.connect(url)
        js = nc.jetstream()
        for subject, payload, msg_id in events:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None)
        await nc.close()

    asyncio.run(run())


class Consumer:
    """A `tiris consume` process; its log is kept for the assertion messages."""

    def __init__(self, env: dict, log_path: Path):
        self.env, self.log_path, self.process = env, log_path, None

    def start(self) -> "Consumer":
        log = self.log_path.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "tools.cli", "consume"], cwd=ROOT,
                                        env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def start_consumer(jetstream, service_env, tmp_path):
    started = []

    def start(**env) -> Consumer:
        consumer = Consumer({**service_env, "NATS_URL": jetstream, **env},
                            tmp_path / f"consumer-{len(started)}.log").start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.stop()


def wait_for(condition, *, timeout: float = 60, what: str = "condition", log=lambda: ""):
    """Polls `condition` until it is truthy; fails with `what` and the consumer's log after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log()[-3000:]}")
        time.sleep(0.2)


def settled(conn_factory, expected: int):
    """True once `expected` events were either processed, found duplicate, or dead-lettered."""

    def check():
        with conn_factory() as conn:
            row = conn.execute(sa.text(
                "SELECT COALESCE(SUM(processed + duplicates + dead_lettered), 0) FROM consumer_state")).scalar()
        return row >= expected

    return check
