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


def test_a_request_that_expires_under_a_waiting_fetch_does_not_hold_back_what_comes_next(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        async with Pull(nc, STREAM, DURABLE) as pull:
            fetch = asyncio.create_task(pull.fetch(500, expires=4))
            await asyncio.sleep(0.3)
            await _publish(js, 0, 1)
            [first] = await fetch  # its request stays open, owing 499, until 4 s after it was made
            await first.ack()
            await asyncio.sleep(2.7)
            fetch = asyncio.create_task(pull.fetch(500, expires=4))  # waits on that request, which expires in 1 s
            await asyncio.sleep(1.5)
            await _publish(js, 1, 1)
            published, msgs = time.monotonic(), await fetch
            while not msgs:
                msgs = await pull.fetch(500, expires=4)
            waited = time.monotonic() - published
        await nc.close()
        return _numbers(msgs), waited

    msgs, waited = asyncio.run(run())
    assert msgs == [1]
    assert waited < 1.2  # not held until 4 s after the waiting fetch began, 2.5 s after the publish


def test_the_end_status_of_an_earlier_request_does_not_end_the_open_one(nats_server):
    async def run():
        nc, js = await _fresh(nats_server)
        async with Pull(nc, STREAM, DURABLE) as pull:
            fetch = asyncio.create_task(pull.fetch(500, expires=4))  # a no_wait request (1), then a waiting one (2)
            await asyncio.sleep(0.3)
            # What JetStream sends when it ends request 1 late (an expired request it cleans up):
            await nc.publish(f"{pull._inbox}.1", b"", headers={"Status": "408", "Description": "Request Timeout"})
            await asyncio.sleep(0.3)
            await _publish(js, 0, 1)
            published, msgs = time.monotonic(), await fetch
            waited = time.monotonic() - published
        await nc.close()
        return _numbers(msgs), waited

    msgs, waited = asyncio.run(run())
    assert msgs == [0]
    assert waited < 2  # handed over as it came, not after the 4 s of a request taken for ended


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
