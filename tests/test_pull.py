"""A partition's pull (consumers/pull.py) against a real JetStream server: what is there comes at once, a quiet
stream's first message is not held back to fill a batch, nothing is lost or reordered between fetches, and what
arrived but was never handed over goes back at once."""

import asyncio
import time

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from consumers.pull import Pull
from tests.jetstream import after_deletion

STREAM, SUBJECT, DURABLE = "PULLTEST", "pulltest.x", "puller"


async def _fresh(url: str, ack_wait: float = 30):
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    await after_deletion(lambda: js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT])))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=ack_wait, max_ack_pending=500))
    return nc, js


async def _publish(js, first: int, count: int) -> None:
    for n in range(first, first + count):
        await js.publish(SUBJECT, str(n).encode())


def _numbers(msgs) -> list[int]:
    return [int(m.data) for m in msgs]


def test_a_fetch_hands_over_what_the_consumer_has_at_once_in_order_up_to_the_batch(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        await _publish(js, 0, 7)
        async with Pull(nc, STREAM, DURABLE) as pull:
            started = time.monotonic()
            first = await pull.fetch(5, expires=5)
            second = await pull.fetch(5, expires=5)
            took = time.monotonic() - started
        await nc.close()
        return _numbers(first), _numbers(second), took

    first, second, took = asyncio.run(run())
    assert (first, second) == ([0, 1, 2, 3, 4], [5, 6])
    assert took < 2  # neither waited for its request to expire


def test_on_a_quiet_stream_the_first_message_is_handed_over_without_waiting_for_the_batch_to_fill(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        async with Pull(nc, STREAM, DURABLE) as pull:
            fetch = asyncio.create_task(pull.fetch(500, expires=10))
            await asyncio.sleep(0.3)  # the fetch now waits on a request for 500
            await _publish(js, 0, 1)
            published = time.monotonic()
            msgs = await fetch
            waited = time.monotonic() - published
            for msg in msgs:
                await msg.ack()
        await nc.close()
        return _numbers(msgs), waited

    msgs, waited = asyncio.run(run())
    assert msgs == [0]
    assert waited < 2  # not the 10 s the request stays open for


def test_messages_arriving_while_a_batch_is_in_hand_are_the_next_fetch_none_lost_none_reordered(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        seen = []
        async with Pull(nc, STREAM, DURABLE) as pull:
            fetch = asyncio.create_task(pull.fetch(500, expires=10))
            await asyncio.sleep(0.3)
            await _publish(js, 0, 1)
            batch = await fetch
            await _publish(js, 1, 30)  # delivered on the open request while the first batch is "booked"
            await asyncio.sleep(0.3)
            while len(seen) + len(batch) < 31:
                seen += _numbers(batch)
                for msg in batch:
                    await msg.ack()
                batch = await pull.fetch(500, expires=2)
            seen += _numbers(batch)
        await nc.close()
        return seen

    assert asyncio.run(run()) == list(range(31))


def _fetch_from(url: str, durable: str) -> tuple[list, float]:
    """One fetch (expires 0.5 s) on a fresh, empty stream: what it returned and how long it took."""
    async def run():
        nc, _ = await _fresh(url)
        async with Pull(nc, STREAM, durable) as pull:
            started = time.monotonic()
            msgs = await pull.fetch(10, expires=0.5)
            took = time.monotonic() - started
        await nc.close()
        return msgs, took

    return asyncio.run(run())


def test_a_fetch_with_nothing_to_deliver_returns_empty_after_expires(nats_server):
    msgs, took = _fetch_from(nats_server, DURABLE)
    assert msgs == []
    assert 0.45 <= took < 3


def test_a_refused_request_is_not_retried_in_a_tight_loop(nats_server):
    msgs, took = _fetch_from(nats_server, "no-such-consumer")  # JetStream answers at once: no such consumer
    assert msgs == []
    assert took >= 0.45


def test_a_stopping_pull_asks_for_nothing_more_and_hands_over_what_its_open_request_brought(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        async with Pull(nc, STREAM, DURABLE) as pull:
            fetch = asyncio.create_task(pull.fetch(500, expires=4))  # open long enough for the five below
            await asyncio.sleep(0.3)
            await _publish(js, 0, 1)
            [first] = await fetch
            await first.ack()
            await _publish(js, 1, 5)  # delivered on the open request while the first is "booked"
            drained, rest = pull.drained(), []
            while not pull.drained():
                rest += await pull.fetch(500, expires=1, ask=False)
            for msg in rest:
                await msg.ack()
        await _publish(js, 6, 1)
        await asyncio.sleep(0.3)  # it would have been delivered by now, had anything asked for it
        info = await js.consumer_info(STREAM, DURABLE)
        await nc.close()
        return drained, _numbers(rest), info.num_ack_pending, info.delivered.stream_seq

    drained, rest, in_hand, last_delivered = asyncio.run(run())
    assert not drained
    assert rest == [1, 2, 3, 4, 5]
    assert in_hand == 0  # nothing left delivered and unacknowledged
    assert last_delivered == 6  # the sixth message (5); the one published after the pull ended was not asked for


@pytest.fixture(autouse=True)
def _drop_stream(nats_server):
    yield

    async def drop():
        nc = await nats.connect(nats_server)
        try:
            await nc.jetstream().delete_stream(STREAM)
        except nats.js.errors.NotFoundError:
            pass
        await nc.close()

    asyncio.run(drop())
