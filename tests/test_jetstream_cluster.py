"""With the streams at 3 replicas on a three-node JetStream cluster, `kill -9` of the node leading LEDGER while the
bot publishes and `tiris consume` applies loses and doubles nothing."""

import asyncio
import time

import nats
import pytest
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from consumers.streams import LEDGER, TRADING
from tests import simulated_events as sim
from tests.conftest import free_port
from tests.jetstream import jetstream, start_consumer, wait_for  # noqa: F401
from tools import localnats


@pytest.fixture
def cluster(tmp_path):
    """Three nodes on loopback: {server name: (client URL, process)}."""
    nodes = [(f"n{i}", free_port(), free_port()) for i in range(1, 4)]
    processes = localnats.start_cluster(nodes, tmp_path / "cluster")
    urls = [f"nats://127.0.0.1:{port}" for _, port, _ in nodes]
    wait_for(lambda: asyncio.run(_answers(urls)), timeout=30, what="the cluster's JetStream")
    yield {name: (url, process) for (name, _, _), url, process in zip(nodes, urls, processes)}
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


UNAVAILABLE = (NatsTimeout, NoRespondersError, NoStreamResponseError, APIError)  # while a leader is elected


async def _connect(urls: list[str]):
    return await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)


async def _answers(urls: list[str]) -> bool:
    nc = await _connect(urls)
    try:
        await nc.jetstream(timeout=2).account_info()
        return True
    except UNAVAILABLE:
        return False
    finally:
        await nc.close()


async def _stream(urls: list[str], name: str):
    nc = await _connect(urls)
    try:
        return await nc.jetstream(timeout=2).stream_info(name)
    except (NotFoundError, *UNAVAILABLE):
        return None
    finally:
        await nc.close()


async def _publish_killing_the_leader(urls: list[str], events, kill_after: int, kill) -> str:
    """Publishes as the bot does, connected to every node: each event until the stream acknowledges it, with its
    Nats-Msg-Id (a retry of an event stored after all is dropped by the duplicate window). After `kill_after`
    events, `kill`s the node leading LEDGER; returns its name."""
    nc = await _connect(urls)
    js = nc.jetstream(timeout=2)
    deadline, leader = time.monotonic() + 180, None

    async def until_answered(request):
        while True:
            try:
                return await request()
            except UNAVAILABLE:
                assert time.monotonic() < deadline, "the cluster did not answer again in time"
                await asyncio.sleep(0.1)

    try:
        for i, event in enumerate(events):
            if i == kill_after:
                leader = (await until_answered(lambda: js.stream_info(LEDGER))).cluster.leader
                kill(leader)
            await until_answered(lambda: js.publish(event.subject, event.data, headers=dict(event.headers)))
    finally:
        await nc.close()
    return leader


def test_killing_the_ledger_streams_leader_mid_run_loses_and_doubles_no_event(
        service_env, settings, cluster, start_consumer, monkeypatch):
    urls = [url for url, _ in cluster.values()]
    plan = sim.plan(service_env, settings, monkeypatch, 12)
    events = sim.events(plan, 3000, 1)
    consumer = start_consumer(NATS_URL=",".join(urls), NATS_STREAM_REPLICAS="3")
    wait_for(lambda: all((info := asyncio.run(_stream(urls, name))) and info.config.num_replicas == 3
                         for name in (TRADING, LEDGER)), what="both streams at 3 replicas", log=consumer.log)

    def kill(name: str) -> None:
        wait_for(lambda: sim.handled() > 0, what="the first events applied (the kill is mid-run)", log=consumer.log)
        cluster[name][1].kill()  # SIGKILL
        cluster[name][1].wait(timeout=10)

    leader = asyncio.run(_publish_killing_the_leader(urls, events, 1500, kill))

    wait_for(lambda: sim.handled() == len(events), timeout=180, what="every event", log=consumer.log)
    info = asyncio.run(_stream(urls, LEDGER))
    assert info.cluster.leader != leader and info.state.messages == len(events)
    sim.assert_each_event_took_effect_once(plan, events, redelivered=True)
