"""`tiris consume`: the JetStream pull loops.

Users are spread over CONSUMER_PARTITIONS partitions by a hash of the user id (the subject's last token). Each
partition has its own durable pull consumer over the whole TRADING stream and takes only its users' events, in
stream order, acknowledging the rest. A partition is worked by one process at a time: the owner holds a
PostgreSQL advisory lock for it, so several `tiris consume` processes split the partitions between them and a
standby takes over a dead process's partitions. Order per user holds because a partition's batch is retried in
place (never overtaken) and max_ack_pending equals the batch size, so a crashed process's batch is redelivered
before anything newer. Throughput comes from the batch: hundreds of events per database transaction.
"""

import asyncio
import datetime as dt
import logging
import signal
import time
import zlib

import nats
import psycopg
from nats.errors import ConnectionClosedError, NoServersError, TimeoutError as FetchTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from consumers import batch as batches
from consumers import expiry
from consumers.contract import load_channels
from consumers.parse import Incoming
from db import consumer_state, engine
from db.urls import psycopg_kwargs
from tiris import metrics

log = logging.getLogger("tiris.consumer")
STREAM = "TRADING"
SUBJECTS = ["trading.>"]
CONSUMER = "tiris-ledger"
DUPLICATE_WINDOW = 120.0  # seconds in which JetStream drops a re-published Nats-Msg-Id by itself
LEASE_LOCK = 727275  # advisory lock namespace of the partition leases
TRIM_EVERY = 60.0  # seconds between two trims of the live feed past its retention


def partition_of(subject: str, partitions: int) -> int:
    return zlib.crc32(subject.rpartition(".")[2].encode()) % partitions


def consumer_name(partition: int) -> str:
    return f"{CONSUMER}-p{partition}"


async def ensure_stream(js) -> None:
    config = StreamConfig(name=STREAM, subjects=SUBJECTS, duplicate_window=DUPLICATE_WINDOW)
    try:
        await js.stream_info(STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)


def consumer_config(name: str, batch_size: int) -> ConsumerConfig:
    return ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                          filter_subject=SUBJECTS[0], ack_wait=30, max_deliver=-1, max_ack_pending=batch_size)


async def ensure_consumer(js, name: str, batch_size: int) -> None:
    """Creates the durable consumer explicitly; an existing one keeps its position (a replay may have moved it)."""
    try:
        existing = (await js.consumer_info(STREAM, name)).config
    except NotFoundError:
        await js.add_consumer(STREAM, consumer_config(name, batch_size))
        return
    if existing.max_ack_pending != batch_size:  # the flow limit follows the batch size; the position stays
        await js.add_consumer(STREAM, existing.evolve(max_ack_pending=batch_size))


def _incoming(msg) -> Incoming:
    meta = msg.metadata
    return Incoming(subject=msg.subject, data=msg.data, msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
                    stream_seq=meta.sequence.stream, delivered=meta.num_delivered)


async def _apply(msgs, name: str, channels, stop: asyncio.Event) -> bool:
    """Applies a partition's batch, retrying in place with backoff; False if stopped before it committed."""
    incoming = [_incoming(m) for m in msgs]
    attempt = 1
    while True:
        timer = metrics.Timer()
        try:
            stats = await asyncio.to_thread(batches.process, incoming, channels, name, attempt)
            _observe(name, len(incoming), stats, msgs[-1].metadata.num_pending, timer.seconds())
            return True
        except Exception as error:  # nothing was committed
            metrics.CONSUMER_FAILED.labels(name).inc()
            delay = batches.backoff(attempt)
            log.warning("batch of %d on %s failed (%s); retrying with backoff in %.1fs", len(msgs), name,
                        type(error).__name__, delay, exc_info=error)
            await asyncio.to_thread(batches.record_failure, name)
            for msg in msgs:
                await msg.in_progress()  # we still hold them: no redelivery elsewhere meanwhile
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return False
            except asyncio.TimeoutError:
                attempt += 1


def _observe(name: str, count: int, stats, pending: int, seconds: float) -> None:
    metrics.CONSUMER_PROCESSED.labels(name).inc(stats.get("processed", 0))
    metrics.CONSUMER_DEAD_LETTERED.labels(name).inc(stats.get("dead_lettered", 0))
    metrics.BALANCE_DRIFTS.labels(name).inc(stats.get("balance_drifts", 0))
    metrics.CONSUMER_LAG.labels(name).set(pending)
    metrics.CONSUMER_BATCH_SECONDS.labels(name).observe(seconds)
    log.info("batch applied", extra={"consumer": name, "events": count, **stats, "pending": pending,
                                     "duration_ms": round(seconds * 1000, 2)})


async def consume_partition(js, partition: int, partitions: int, channels, batch_size: int,
                            stop: asyncio.Event) -> None:
    name = consumer_name(partition)
    await ensure_consumer(js, name, batch_size)
    sub = await js.pull_subscribe_bind(durable=name, stream=STREAM)
    log.info("working partition %d of %d", partition, partitions)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch_size, timeout=1)
        except (FetchTimeout, asyncio.TimeoutError):  # nats-py raises either when nothing arrived in time
            continue
        except (ConnectionClosedError, NoServersError, ServiceUnavailableError) as error:
            log.warning("NATS unavailable (%s); retrying", type(error).__name__)
            await asyncio.sleep(1)
            continue
        mine = [m for m in msgs if partition_of(m.subject, partitions) == partition]
        if mine and not await _apply(mine, name, channels, stop):
            return  # stopping mid-retry: unacknowledged, so redelivered in order later
        for msg in msgs:
            await msg.ack()


async def consume(nats_url: str, database_url: str, *, batch_size: int = 500, partitions: int = 4,
                  stop: asyncio.Event | None = None, feed_retention: dt.timedelta | None = None) -> None:
    stop = stop or asyncio.Event()
    next_trim = 0.0
    channels = load_channels()
    # Reconnect forever: a consumer that gives up after a two-minute outage is a silent outage of its own.
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=10,
                            name="tiris-consume")
    js = nc.jetstream()
    await ensure_stream(js)
    leases = await psycopg.AsyncConnection.connect(**psycopg_kwargs(database_url, autocommit=True))
    owned: dict[int, asyncio.Task] = {}
    while not stop.is_set():
        if failed := [task for task in owned.values() if task.done() and task.exception()]:
            # Holding a lease on a partition nobody works would stall its users: let the supervisor restart us.
            stop.set()
            raise failed[0].exception()
        for partition in range(partitions):
            if partition in owned:
                continue
            cursor = await leases.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_LOCK, partition))
            if (await cursor.fetchone())[0]:
                owned[partition] = asyncio.create_task(
                    consume_partition(js, partition, partitions, channels, batch_size, stop))
        if owned:
            await asyncio.to_thread(_heartbeat, [consumer_name(p) for p in owned])
            await asyncio.to_thread(expiry.release_expired)
            if feed_retention is not None and time.monotonic() >= next_trim:
                await asyncio.to_thread(expiry.trim_feed, feed_retention)
                next_trim = time.monotonic() + TRIM_EVERY
        try:
            await asyncio.wait_for(stop.wait(), timeout=5)  # standbys look for released partitions this often
        except asyncio.TimeoutError:
            pass
    await asyncio.gather(*owned.values(), return_exceptions=True)
    await leases.close()
    # Acks are plain publishes: flush them out, then close. (drain() waits out its 30 s timeout on a pull
    # subscription with nats-py 2.16.)
    await nc.flush(timeout=5)
    await nc.close()


def _heartbeat(names: list[str]) -> None:
    try:
        with engine.transaction() as conn:
            consumer_state.alive(conn, names)
    except Exception:  # noqa: BLE001 - a missed sign of life is reported by readiness, not fatal here
        log.warning("could not record the consumer's sign of life", exc_info=True)


def run(nats_url: str, database_url: str, batch_size: int, partitions: int,
        feed_retention: dt.timedelta | None = None) -> None:
    """Runs until SIGTERM/SIGINT; batches in hand are finished and acknowledged before exiting."""

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await consume(nats_url, database_url, batch_size=batch_size, partitions=partitions, stop=stop,
                      feed_retention=feed_retention)

    asyncio.run(main())
