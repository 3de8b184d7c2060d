"""The streams of one user share their reads of the feed (tiris/stream.py: Hub.read), in one process on a real
database: one read for every stream woken by the same commit, each stream still sent exactly its own events in order
(its types, from its own cursor), a read cut at READ_BATCH carried on from each stream's cursor, and an idle stream's
heartbeats and hang-up."""

import asyncio
import dataclasses
import time
import uuid
from decimal import Decimal

from prometheus_client import REGISTRY

from db import booking, engine, feed
from db.access import Caller
from db.commands import Entry, Transfer
from tests.helpers import create_exchange, create_sub_account
from tiris import stream


class Collected(stream.Channel):
    """What one stream was sent: (id, type) of each event, and how many heartbeats."""

    def __init__(self):
        self.events: list[tuple[int, str]] = []
        self.heartbeats = 0

    async def event(self, event: feed.Event) -> None:
        self.events.append((event.id, event.type))

    async def notice(self, kind: str, data: dict) -> None:
        raise AssertionError(f"unexpected notice {kind}: {data}")

    async def heartbeat(self) -> None:
        self.heartbeats += 1


def _account(api) -> uuid.UUID:
    return uuid.UUID(create_sub_account(api, create_exchange(api)["id"], "USDT")["id"])


def _deposit(user_id, account: uuid.UUID, count: int = 1) -> None:
    with engine.transaction() as conn:  # one commit, one notification, however many entries
        booking.book(conn, [Entry(user_id, Transfer(account, "credit", Decimal(n + 1), "deposit"))
                            for n in range(count)])


def _all_events(user_id) -> list[tuple[int, str]]:
    with engine.reading() as conn:
        return [(event.id, event.type) for event in feed.read(conn, user_id, 0, 100_000)]


def _expected(everything, specs) -> list[list[tuple[int, str]]]:
    """Per stream, the events after its cursor, of its types, in order."""
    return [[(i, kind) for i, kind in everything if i > cursor and (not types or kind in types)]
            for cursor, types in specs]


def _reads() -> float:
    return REGISTRY.get_sample_value("tiris_stream_reads_total") or 0.0


async def _until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def _streams(settings, user_id, specs: list[tuple[int, tuple[str, ...] | None]]):
    """Opens one stream per (cursor, types) for the user; returns the subscribers, their channels and tasks."""
    hub = stream.hub()
    subscribers = [stream.Subscriber(Caller(id=user_id, role="user"), cursor, types) for cursor, types in specs]
    channels = [Collected() for _ in specs]
    for subscriber in subscribers:
        hub.join(subscriber, settings)
    tasks = [asyncio.create_task(stream.run(subscriber, channel, settings))
             for subscriber, channel in zip(subscribers, channels)]
    await _until(hub.listening.is_set)
    return subscribers, channels, tasks


async def _close(subscribers, tasks) -> None:
    for subscriber in subscribers:
        subscriber.hang_up()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    for subscriber in subscribers:
        stream.hub().leave(subscriber)


def test_the_streams_of_a_user_woken_by_one_commit_share_one_read_and_each_gets_exactly_its_own_events(api, settings):
    user, account = api.user["id"], _account(api)
    _deposit(user, account, 2)
    head = _all_events(user)[-1][0]
    specs = [(head, None), (head, ("transaction.booked",)), (0, None), (head, ("balance.changed",))]

    async def main():
        subscribers, channels, tasks = await _streams(settings, user, specs)
        await _until(lambda: len(channels[2].events) == head)  # the resumed one has caught up
        await asyncio.sleep(0.2)  # every stream is waiting for a wake
        before = _reads()
        await asyncio.to_thread(_deposit, user, account, 3)
        expected = _expected(_all_events(user), specs)
        await _until(lambda: all(len(channel.events) >= len(want) for channel, want in zip(channels, expected)))
        await asyncio.sleep(0.2)  # nothing more arrives
        shared = _reads() - before
        await _close(subscribers, tasks)
        return channels, expected, shared

    channels, expected, shared = asyncio.run(main())
    assert shared == 1
    assert [channel.events for channel in channels] == expected
    assert [kind for _, kind in channels[1].events] == ["transaction.booked"] * 3


def test_a_read_cut_at_the_batch_limit_goes_on_from_each_streams_own_cursor(api, settings, monkeypatch):
    monkeypatch.setattr(stream, "READ_BATCH", 3)
    user, account = api.user["id"], _account(api)
    for _ in range(10):
        _deposit(user, account)
    everything = _all_events(user)
    specs = [(0, None), (7, ("transaction.booked",)), (0, ("balance.changed",)), (len(everything) - 1, None)]

    async def main():
        subscribers, channels, tasks = await _streams(settings, user, specs)
        expected = _expected(everything, specs)
        await _until(lambda: all(len(channel.events) >= len(want) for channel, want in zip(channels, expected)))
        await asyncio.sleep(0.2)  # nothing more arrives
        await _close(subscribers, tasks)
        return channels, expected, subscribers

    channels, expected, subscribers = asyncio.run(main())
    for channel, want, subscriber in zip(channels, expected, subscribers):
        assert channel.events == want
        assert subscriber.cursor == everything[-1][0]  # a filtered stream moved past the others' events too


def test_an_idle_stream_gets_a_heartbeat_each_interval_and_ends_as_soon_as_its_client_hangs_up(api, settings):
    settings = dataclasses.replace(settings, stream_heartbeat=1)
    user = api.user["id"]

    async def main():
        subscribers, channels, tasks = await _streams(settings, user, [(0, None)])
        await asyncio.sleep(2.5)
        hung_up = time.monotonic()
        await _close(subscribers, tasks)
        return channels[0], time.monotonic() - hung_up

    channel, ended_after = asyncio.run(main())
    assert channel.heartbeats == 2
    assert ended_after < 0.5
