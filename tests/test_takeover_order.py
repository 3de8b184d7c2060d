"""A partition taken over from a process that died holding part of a batch: what it held comes again, in order,
before anything newer (not after the 30 s acknowledgement wait, behind the user's later events)."""

import asyncio
import json
import time
import uuid

import nats

from consumers import streams
from consumers.pull import Pull
from tests.jetstream import jetstream  # noqa: F401

BATCH = 10


async def _partition_of(js, layout: streams.Layout) -> int:
    """The partition whose consumer has the messages (NATS computes it from the user token as it copies them)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for partition in range(layout.partitions):
            info = await js.consumer_info(streams.LEDGER, streams.consumer_name(partition))
            if info.num_pending:
                return partition
        await asyncio.sleep(0.1)
    raise AssertionError("no partition has the messages")


def _numbers(msgs) -> list[int]:
    return [json.loads(m.data)["n"] for m in msgs]


def test_a_taken_over_partition_gets_what_the_dead_process_held_again_before_anything_newer(jetstream):
    async def run():
        nc = await nats.connect(jetstream)
        js = nc.jetstream()
        user = uuid.uuid4()

        async def publish(numbers):
            for n in numbers:
                await js.publish(f"trading.orders.filled.{user}", json.dumps({"n": n}).encode())

        layout = await streams.ensure_streams(js, 4)
        for partition in range(layout.partitions):
            await streams.ensure_consumer(js, partition, layout, BATCH)
        await publish(range(1, 6))
        partition = await _partition_of(js, layout)
        name = streams.consumer_name(partition)

        dead = await nats.connect(jetstream)  # the process that dies holding 1..3, unacknowledged
        async with Pull(dead, streams.LEDGER, name) as pull:
            held = await pull.fetch(3, expires=1)
        await dead.close()
        await publish(range(6, 9))

        await streams.ensure_consumer(js, partition, layout, BATCH)  # what the next owner does before it pulls
        seen = []
        async with Pull(nc, streams.LEDGER, name) as pull:
            deadline = time.monotonic() + 10  # far less than the 30 s after which JetStream redelivers by itself
            while len(seen) < 8 and time.monotonic() < deadline:
                msgs = await pull.fetch(BATCH, expires=1)
                seen += _numbers(msgs)
                for msg in msgs:
                    await msg.ack()
        await nc.close()
        return _numbers(held), seen

    held, seen = asyncio.run(run())
    assert held == [1, 2, 3]
    assert seen == list(range(1, 9))
