"""Before a `tiris consume` works any partition: the consumers of an earlier layout finish their messages.

Two earlier layouts can leave consumers behind:
- the whole-stream layout: `tiris-ledger-p<k>` on TRADING, each reading every message (filter `trading.>`) and
  taking those whose user id hashes (CRC-32) to k. LEDGER starts right after TRADING's last message of that time
  (streams.ensure_streams), so each of them applies its users' messages up to that sequence and is deleted;
- LEDGER under another partition count: streams.relayout stops copying under the old count and goes on under the
  new one, so each old consumer (its filter names the old count) applies what is left to it and is deleted.

The new layout's consumers are created only afterwards (by the partition loops), from the new layout's first
message: no message is applied twice, none is skipped, and a user's events stay in order though the user may move
to another partition. processed_events would still recognise a redelivered event. One process migrates at a time
(an advisory lock); it drains partition k only while holding k's lease, so a process still working k under the
old layout is waited for, never raced.
"""

import asyncio
import logging
import zlib

import psycopg
from nats.errors import NoRespondersError, TimeoutError as FetchTimeout
from nats.js.errors import ServiceUnavailableError

from consumers import fetched, streams
from consumers.streams import LEDGER, TRADING, Layout

log = logging.getLogger("tiris.consumer")
LEASE_LOCK = 727275  # advisory lock namespace of the partition leases
MIGRATION = -1  # the key of the migration lock in that namespace


def legacy_partition(subject: str, partitions: int) -> int:
    """The whole-stream layout's partition of a message: CRC-32 of the subject's last token (the user id)."""
    return zlib.crc32(subject.rpartition(".")[2].encode()) % partitions


async def migrate(js, leases: psycopg.AsyncConnection, partitions: int, replicas: int, channels, batch_size: int,
                  stop: asyncio.Event) -> Layout | None:
    """Brings the streams to `partitions` and drains every consumer of an earlier layout; None if stopped first."""
    if not await _lock(leases, MIGRATION, stop, "another process's migration"):
        return None
    try:
        while (layout := await _answered(streams.ensure_streams(js, partitions, replicas))) is None:
            log.warning("JetStream does not answer yet (a cluster electing its leaders?); retrying")
            try:
                await asyncio.wait_for(stop.wait(), timeout=1)
                return None
            except asyncio.TimeoutError:
                pass
        if legacy := await streams.legacy_consumers(js):
            upto = await streams.cut(js)
            count = max(streams.partition_of_consumer(info.name) for info in legacy) + 1  # the old partition count
            log.info("draining %d whole-stream consumers up to TRADING sequence %d", len(legacy), upto)
            for info in legacy:
                partition = streams.partition_of_consumer(info.name)

                def mine(msg, partition=partition) -> bool:
                    return legacy_partition(msg.subject, count) == partition

                if not await _drain(js, leases, TRADING, info.name, mine, upto, channels, batch_size, stop):
                    return None
        if layout.partitions != partitions:
            for partition in range(layout.partitions):  # the old layout's messages are drained even where no
                await streams.ensure_consumer(js, partition, layout, batch_size)  # consumer was ever created
            layout = await streams.relayout(js, partitions)
            log.info("partitions: %d from LEDGER sequence %d", layout.partitions, layout.since)
        for info in await js.consumers_info(LEDGER):
            partition = streams.partition_of_consumer(info.name)
            current = partition is not None and partition < partitions and (
                info.config.filter_subject == streams.partition_subjects(partitions, partition))
            if partition is None or current:  # not ours, or of the layout in force
                continue
            log.info("draining %s (%s)", info.name, info.config.filter_subject)
            if not await _drain(js, leases, LEDGER, info.name, lambda msg: True, None, channels, batch_size, stop):
                return None
        return layout
    finally:
        await leases.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASE_LOCK, MIGRATION))


async def _answered(request):
    """What `request` returns; None if JetStream cannot answer for now."""
    try:
        return await request
    except (FetchTimeout, NoRespondersError, ServiceUnavailableError):
        return None


async def _drain(js, leases, stream: str, name: str, mine, upto: int | None, channels, batch_size: int,
                 stop: asyncio.Event) -> bool:
    """Applies what `name` has left (up to stream sequence `upto`, or all) that `mine` keeps, acknowledging all of
    it, then deletes the consumer; False if stopped first."""
    partition = streams.partition_of_consumer(name)
    if not await _lock(leases, partition, stop, f"the process working partition {partition} to stop"):
        return False
    try:
        sub = await js.pull_subscribe_bind(durable=name, stream=stream)
        while True:
            info = await js.consumer_info(stream, name)
            if (info.ack_floor.stream_seq >= upto) if upto is not None else (
                    info.num_pending == 0 and info.num_ack_pending == 0):
                break
            if stop.is_set():
                return False
            try:
                msgs = await sub.fetch(batch_size, timeout=1)
            except (FetchTimeout, asyncio.TimeoutError):
                continue
            # Later messages (past `upto`) are left unacknowledged: they are LEDGER's.
            inside = [msg for msg in msgs if upto is None or msg.metadata.sequence.stream <= upto]
            if (taken := [msg for msg in inside if mine(msg)]) and not await fetched.apply(taken, name, channels,
                                                                                          stop):
                return False
            for msg in inside[:-1]:
                await msg.ack()
            if inside:
                await inside[-1].ack_sync()  # after the others, on one connection: the floor read next has them all
        await sub.unsubscribe()
        await js.delete_consumer(stream, name)
        log.info("%s on %s drained and deleted", name, stream)
        return True
    finally:
        await leases.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASE_LOCK, partition))


async def _lock(leases, key: int, stop: asyncio.Event, waiting_for: str) -> bool:
    """Takes the advisory lock (LEASE_LOCK, key), waiting as long as it takes; False if stopped first."""
    logged = False
    while not stop.is_set():
        cursor = await leases.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_LOCK, key))
        if (await cursor.fetchone())[0]:
            return True
        if not logged:
            log.warning("waiting for %s", waiting_for)
            logged = True
        try:
            await asyncio.wait_for(stop.wait(), timeout=1)
        except asyncio.TimeoutError:
            pass
    return False
