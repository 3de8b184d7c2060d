"""Partitions computed by NATS deliver each event once, and a change of layout loses and doubles nothing.

Events of both subject shapes (`trading.<a>.<b>.<user>` and `trading.<a>.<user>`) are published by the simulated
bot; some are handled under the old layout and some are not when `tiris consume` starts under the new one. In the
end every event took effect once (each balance is its opening plus the fills' sums, no event was handled twice,
none was dead-lettered), and each user's events were applied in the order they were published.
"""

import asyncio
import subprocess
import sys
from collections import Counter

import nats
import pytest
import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig, StreamSource

from consumers import batch as batches
from consumers import admin, fetched, streams
from consumers.contract import load_channels
from consumers.migration import legacy_partition
from consumers.streams import LEDGER, TRADING, consumer_name, partition_subjects
from db import engine
from db.errors import Unavailable
from tests.jetstream import after_deletion, jetstream, start_consumer, wait_for  # noqa: F401
from tests import simulated_events as sim

async def _consumers(url: str, stream: str) -> dict[str, str]:
    nc = await nats.connect(url)
    try:
        return {info.name: info.config.filter_subject for info in await nc.jetstream().consumers_info(stream)}
    finally:
        await nc.close()


def test_each_event_is_delivered_to_one_partition_and_a_users_events_share_it(service_env, settings, jetstream,
                                                                              start_consumer, monkeypatch):
    plan = sim.plan(service_env, settings, monkeypatch, 16)
    events = sim.events(plan, 800, seed=1)
    sim.publish(jetstream, events)
    consumer = start_consumer()
    wait_for(lambda: sim.handled() == len(events), what="every event", log=consumer.log)

    async def inspect():
        nc = await nats.connect(jetstream)
        js = nc.jetstream()
        try:
            delivered = [(await js.consumer_info(LEDGER, consumer_name(p))).delivered.consumer_seq for p in range(4)]
            last = (await js.stream_info(LEDGER)).state.last_seq
            subjects = [(await js.get_msg(LEDGER, seq)).subject for seq in range(1, last + 1)]
            return delivered, subjects
        finally:
            await nc.close()

    delivered, subjects = asyncio.run(inspect())
    stored = Counter(int(subject.split(".")[2]) for subject in subjects)  # ledger.<N>.<partition>.…
    assert sum(delivered) == len(events)  # once each
    assert delivered == [stored[p] for p in range(4)]  # each partition's consumer had exactly its own messages
    partitions = {}
    for subject in subjects:
        partitions.setdefault(subject.rpartition(".")[2], set()).add(subject.split(".")[2])
    assert len(partitions) == 16 and all(len(found) == 1 for found in partitions.values())
    assert {len(subject.split(".")) for subject in subjects} == {5, 6}  # both shapes took a partition
    sim.assert_each_event_took_effect_once(plan, events)


def test_changing_the_number_of_partitions_drains_the_old_ones_then_starts_the_new(
        service_env, settings, jetstream, start_consumer, monkeypatch):
    plan = sim.plan(service_env, settings, monkeypatch, 12)
    consumed, waiting, later = sim.events(plan, 500, 1), sim.events(plan, 500, 2), sim.events(plan, 300, 3)
    first = start_consumer()
    sim.publish(jetstream, consumed)
    wait_for(lambda: sim.handled() == len(consumed), what="the first events", log=first.log)
    first.stop()
    sim.publish(jetstream, waiting)  # stored under 4 partitions, handled by nobody yet

    second = start_consumer(CONSUMER_PARTITIONS="3")
    wait_for(lambda: asyncio.run(_consumers(jetstream, LEDGER)) == {
        consumer_name(p): partition_subjects(3, p) for p in range(3)}, what="the three new consumers", log=second.log)
    sim.publish(jetstream, later)
    everything = consumed + waiting + later
    wait_for(lambda: sim.handled() == len(everything), what="every event", log=second.log)
    assert "tiris-ledger-p3 on LEDGER drained and deleted" in second.log()
    sim.assert_each_event_took_effect_once(plan, everything)


def _legacy_layout(url: str) -> None:
    """TRADING and its consumers as they were before LEDGER: each partition's consumer reads the whole stream."""

    async def run():
        nc = await nats.connect(url)
        js = nc.jetstream()
        for stream in (LEDGER, TRADING):
            await js.delete_stream(stream)
        await after_deletion(lambda: js.add_stream(StreamConfig(name=TRADING, subjects=["trading.>"],
                                                                duplicate_window=120.0)))
        for partition in range(4):
            await js.add_consumer(TRADING, ConsumerConfig(
                durable_name=consumer_name(partition), ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL, filter_subject="trading.>", ack_wait=30, max_deliver=-1,
                max_ack_pending=500))
        await nc.close()

    asyncio.run(run())


def _legacy_consume(url: str, partition: int, count: int) -> None:
    """What a whole-stream consumer did with the next `count` messages: applied its users', acknowledged all."""

    async def run():
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe_bind(durable=consumer_name(partition), stream=TRADING)
        channels, left = load_channels(), count
        while left:
            msgs = await sub.fetch(min(left, 100), timeout=5)
            mine = [fetched.incoming(m) for m in msgs if legacy_partition(m.subject, 4) == partition]
            if mine:
                batches.process(mine, channels, consumer_name(partition))
            for msg in msgs:
                await msg.ack_sync()
            left -= len(msgs)
        await nc.close()

    asyncio.run(run())


def test_the_first_start_over_the_whole_stream_layout_finishes_its_consumers_then_reads_ledger(
        service_env, settings, jetstream, start_consumer, monkeypatch):
    plan = sim.plan(service_env, settings, monkeypatch, 12)
    before, before_unread, after = sim.events(plan, 600, 1), sim.events(plan, 300, 2), sim.events(plan, 300, 3)
    _legacy_layout(jetstream)
    sim.publish(jetstream, before)
    for partition, count in ((0, 600), (1, 600), (2, 250)):  # p2 part-way, p3 nothing
        _legacy_consume(jetstream, partition, count)
    assert 0 < sim.handled() < len(before)
    sim.publish(jetstream, before_unread)

    consumer = start_consumer()
    wait_for(lambda: asyncio.run(_consumers(jetstream, TRADING)) == {}, what="the old consumers drained",
             log=consumer.log)
    sim.publish(jetstream, after)
    everything = before + before_unread + after
    wait_for(lambda: sim.handled() == len(everything), what="every event", log=consumer.log)
    assert asyncio.run(_consumers(jetstream, LEDGER)) == {consumer_name(p): partition_subjects(4, p)
                                                          for p in range(4)}
    with engine.reading() as conn:  # LEDGER numbers on from TRADING: the old and new sequences are one order
        assert conn.execute(sa.text("SELECT min(stream_seq) FROM processed_events WHERE event_id = ANY(:ids)"),
                            {"ids": [e.headers["Nats-Msg-Id"] for e in after]}).scalar() == len(before) + len(
            before_unread) + 1
    sim.assert_each_event_took_effect_once(plan, everything)


def test_a_ledger_stream_without_its_layout_is_refused_plainly_by_consume_and_by_replay(service_env, settings,
                                                                                       jetstream):
    """A NATS server older than 2.10 accepts LEDGER but drops its metadata and subject transforms (Debian 12's
    2.9.10 does): such a stream is named as the cause, never read as a layout."""
    async def as_an_older_server_leaves_it():
        nc = await nats.connect(jetstream)
        js = nc.jetstream()
        await js.delete_stream(LEDGER)
        await after_deletion(lambda: js.add_stream(StreamConfig(name=LEDGER, sources=[StreamSource(name=TRADING)])))
        try:
            with pytest.raises(streams.Unsupported, match="NATS 2.10 or newer is needed"):
                await streams.ensure_streams(js, 4)
        finally:
            await nc.close()

    asyncio.run(as_an_older_server_leaves_it())
    with pytest.raises(Unavailable, match="NATS 2.10 or newer is needed"):
        admin.replay(jetstream, 4, 100, start_sequence=1)
    consume = subprocess.run([sys.executable, "-m", "tools.cli", "consume"], env={**service_env, "NATS_URL": jetstream},
                             capture_output=True, text=True, timeout=60)
    assert consume.returncode == 1, consume.stderr
    assert consume.stderr.strip().splitlines()[-1].startswith("tiris consume: stream LEDGER carries no partition")
