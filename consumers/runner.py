"""`tiris consume`: the JetStream pull loops.

Users are spread over CONSUMER_PARTITIONS partitions by a hash of the user id (the subject's last token), which
NATS computes as it copies each message into the LEDGER stream (consumers/streams.py): partition k's durable pull
consumer is filtered on its own subjects, so each message is delivered to one consumer. A partition is worked by
one process at a time: the owner holds a PostgreSQL advisory lock for it. Several `tiris consume` processes split
the partitions evenly: each counts the live processes (their lease connections) and works at most its share,
handing the partitions beyond it over (after their batch in hand is acknowledged), and a standby takes over a dead
process's partitions. Before any partition is
worked, the consumers of an earlier layout finish their messages (consumers/migration.py). Order per user holds
because a partition's batch is retried in place (never overtaken), and a partition taken over from a process that
stopped holding unacknowledged messages starts again from its acknowledgement floor (streams.ensure_consumer).
Throughput comes from the batch: hundreds of events per database transaction.
"""

import asyncio
import datetime as dt
import gc
import logging
import signal
import time
from collections.abc import Callable

import nats
import psycopg
from nats.errors import ConnectionClosedError, NoServersError
from sqlalchemy import exc as sa_exc

from consumers import expiry, fetched, migration, streams
from consumers.contract import load_channels
from consumers.pull import Pull
from consumers.streams import LEDGER, Layout, consumer_name
from db import consumer_state, engine
from db.urls import psycopg_kwargs

log = logging.getLogger("tiris.consumer")
LEASES = "tiris-consume leases"  # the application_name of each process's lease connection: how processes count
# Who holds which share, for whoever watches: (backend pid, partitions it holds) on the current database.
LEASE_HOLDERS = ("SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = "
                 f"{migration.LEASE_LOCK} AND objid < 64 AND database = (SELECT oid FROM pg_database WHERE "
                 "datname = current_database()) GROUP BY pid")
TRIM_EVERY = 60.0  # seconds between two trims of the live feed past its retention
DATABASE_RETRY = 2.0  # seconds between two attempts to take the partitions again after the database was lost


def servers(nats_url: str) -> list[str]:
    """NATS_URL names one server, or several separated by commas (a cluster's)."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


async def consume_partition(nc, partition: int, layout: Layout, channels, batch_size: int,
                            stop: asyncio.Event) -> None:
    name = consumer_name(partition)
    await streams.ensure_consumer(nc.jetstream(), partition, layout, batch_size)
    log.info("working partition %d of %d", partition, layout.partitions)
    async with Pull(nc, LEDGER, name) as pull:
        while not (stop.is_set() and pull.drained()):  # a stopping partition books what was delivered to it
            try:
                msgs = await pull.fetch(batch_size, expires=1, ask=not stop.is_set())
            except (ConnectionClosedError, NoServersError) as error:
                log.warning("NATS unavailable (%s); retrying", type(error).__name__)
                await asyncio.sleep(1)
                continue
            if msgs and not await fetched.apply(msgs, name, channels, stop):
                return  # stopping mid-retry: unacknowledged, so redelivered in order later
            for msg in msgs:
                await msg.ack()


async def consume(nats_url: str, database_url: str, *, batch_size: int = 500, partitions: int = 4,
                  replicas: int = 1, stop: asyncio.Event | None = None,
                  feed_retention: dt.timedelta | None = None) -> None:
    stop = stop or asyncio.Event()
    channels = load_channels()
    # Reconnect forever: a consumer that gives up after a two-minute outage is a silent outage of its own.
    nc = await nats.connect(servers(nats_url), max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=10,
                            name="tiris-consume")
    while not stop.is_set():
        try:
            await _session(nc, database_url, partitions, replicas, channels, batch_size, stop, feed_retention)
        except (psycopg.OperationalError, sa_exc.OperationalError) as error:
            # The leases went with the connection: the partitions are free for any process, this one included.
            log.warning("PostgreSQL unavailable (%s); partitions released, taking them again in %.0f s",
                        str(error).splitlines()[0] if str(error) else type(error).__name__, DATABASE_RETRY)
            try:
                await asyncio.wait_for(stop.wait(), timeout=DATABASE_RETRY)
            except asyncio.TimeoutError:
                pass
    # Acks are plain publishes: flush them out, then close. (drain() waits out its 30 s timeout on a pull
    # subscription with nats-py 2.16.)
    await nc.flush(timeout=5)
    await nc.close()


async def _session(nc, database_url: str, partitions: int, replicas: int, channels, batch_size: int,
                   stop: asyncio.Event, feed_retention: dt.timedelta | None) -> None:
    """Holds the leases of the partitions it works, on one connection, until `stop`. If that connection (or the
    database) is lost, the partitions are stopped first, their batches in hand left unacknowledged (so redelivered
    in order), before the error is raised: another process may own them as soon as the leases are gone."""
    owned: dict[int, tuple[asyncio.Task, asyncio.Event]] = {}  # partition -> its loop and the loop's own stop

    def halt_all() -> None:
        for _, halt in owned.values():
            halt.set()

    forward = asyncio.create_task(_when(stop, halt_all))
    leases = None
    try:
        leases = await psycopg.AsyncConnection.connect(**psycopg_kwargs(database_url, autocommit=True,
                                                                        application_name=LEASES))
        layout = await migration.migrate(nc.jetstream(), leases, partitions, replicas, channels, batch_size, stop)
        next_trim = 0.0
        while layout and not stop.is_set():
            if failed := [task for task, _ in owned.values() if task.done() and task.exception()]:
                # Holding a lease on a partition nobody works would stall its users: let the supervisor restart us.
                stop.set()
                raise RuntimeError("a partition's task failed") from failed[0].exception()
            share = -(-partitions // await _processes(leases))
            for partition in sorted(owned)[share:]:  # beyond our share: finish its batch in hand, then let go
                task, halt = owned.pop(partition)
                halt.set()
                await asyncio.gather(task, return_exceptions=True)
                await leases.execute("SELECT pg_advisory_unlock(%s, %s)", (migration.LEASE_LOCK, partition))
                log.info("handed partition %d over (a share is %d)", partition, share)
            for partition in range(partitions):
                if partition in owned or len(owned) >= share:
                    continue
                cursor = await leases.execute("SELECT pg_try_advisory_lock(%s, %s)", (migration.LEASE_LOCK, partition))
                if (await cursor.fetchone())[0]:
                    halt = asyncio.Event()
                    owned[partition] = (asyncio.create_task(
                        consume_partition(nc, partition, layout, channels, batch_size, halt)), halt)
            if owned:
                await asyncio.to_thread(_heartbeat, [consumer_name(p) for p in owned])
                await asyncio.to_thread(expiry.release_expired)
                if feed_retention is not None and time.monotonic() >= next_trim:
                    await asyncio.to_thread(expiry.trim_feed, feed_retention)
                    next_trim = time.monotonic() + TRIM_EVERY
            await leases.execute("SELECT 1")  # the leases still stand (a lost connection raises here)
            try:
                await asyncio.wait_for(stop.wait(), timeout=5)  # standbys look for released partitions this often
            except asyncio.TimeoutError:
                pass
    finally:
        halt_all()
        forward.cancel()
        await asyncio.gather(*(task for task, _ in owned.values()), return_exceptions=True)
        if leases is not None:
            await leases.close()


async def _when(event: asyncio.Event, then: Callable[[], None]) -> None:
    await event.wait()
    then()


async def _processes(leases: psycopg.AsyncConnection) -> int:
    """How many `tiris consume` processes are alive on this database, this one included."""
    cursor = await leases.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name = %s", (LEASES,))
    return max((await cursor.fetchone())[0], 1)


def _heartbeat(names: list[str]) -> None:
    try:
        with engine.transaction() as conn:
            consumer_state.alive(conn, names)
    except Exception:  # noqa: BLE001 - a missed sign of life is reported by readiness, not fatal here
        log.warning("could not record the consumer's sign of life", exc_info=True)


def quieter_collector() -> None:
    """A batch allocates a few hundred thousand short-lived objects (models, rows, Decimals), nearly all freed by
    their reference counts. With the default thresholds the cyclic collector still ran hundreds of times a batch,
    its older passes walking every long-lived object (modules, schemas, compiled statements): 15-20 % of a batch's
    CPU. What is alive at start is moved out of its reach, and it runs a thirtieth as often."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def run(nats_url: str, database_url: str, batch_size: int, partitions: int, replicas: int = 1,
        feed_retention: dt.timedelta | None = None) -> None:
    """Runs until SIGTERM/SIGINT; batches in hand are finished and acknowledged before exiting."""
    quieter_collector()

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await consume(nats_url, database_url, batch_size=batch_size, partitions=partitions, replicas=replicas,
                      stop=stop, feed_retention=feed_retention)

    try:
        asyncio.run(main())
    except streams.Unsupported as error:  # no retry cures it: said once, plainly, and the process ends
        raise SystemExit(f"tiris consume: {error}") from None
