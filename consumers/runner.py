"""`tiris consume`: the JetStream pull loop.

One durable pull consumer over the TRADING stream, with at most one batch unacknowledged at a time
(max_ack_pending = batch size). That is what keeps each user's events in publish order, also when several
`tiris consume` processes share the consumer: a process gets the next batch only after the previous one was
committed and acknowledged. Throughput comes from the batch: hundreds of events per database transaction.
"""

import asyncio
import logging
import signal

import nats
from nats.errors import ConnectionClosedError, NoServersError, TimeoutError as FetchTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from consumers import batch as batches
from consumers.contract import load_channels

log = logging.getLogger("tiris.consumer")
STREAM = "TRADING"
SUBJECTS = ["trading.>"]
CONSUMER = "tiris-ledger"
DUPLICATE_WINDOW = 120.0  # seconds in which JetStream drops a re-published Nats-Msg-Id by itself


async def ensure_topology(js, batch_size: int) -> None:
    """Creates or updates the stream and the durable consumer, explicitly, before any fetch."""
    config = StreamConfig(name=STREAM, subjects=SUBJECTS, duplicate_window=DUPLICATE_WINDOW)
    try:
        await js.stream_info(STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
    await js.add_consumer(STREAM, ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        filter_subject=SUBJECTS[0], ack_wait=60, max_deliver=-1, max_ack_pending=batch_size))


def _incoming(msg) -> batches.Incoming:
    meta = msg.metadata
    return batches.Incoming(subject=msg.subject, data=msg.data, msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
                            stream_seq=meta.sequence.stream, delivered=meta.num_delivered, pending=meta.num_pending)


async def consume(nats_url: str, *, batch_size: int = 500, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    channels = load_channels()
    # Reconnect forever: a consumer that gives up after a two-minute outage is a silent outage of its own.
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=10,
                            name="tiris-consume")
    js = nc.jetstream()
    await ensure_topology(js, batch_size)
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    log.info("consuming %s from %s", STREAM, nats_url)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch_size, timeout=1)
        except FetchTimeout:
            continue
        except (ConnectionClosedError, NoServersError, ServiceUnavailableError) as error:
            log.warning("NATS unavailable (%s); retrying", type(error).__name__)
            await asyncio.sleep(1)
            continue
        incoming = [_incoming(m) for m in msgs]
        try:
            decisions = await asyncio.to_thread(batches.process, incoming, channels, CONSUMER)
        except Exception as error:  # transient: nothing was committed; redeliver later, in order
            log.warning("batch of %d failed (%s); retrying with backoff", len(msgs), type(error).__name__,
                        exc_info=error)
            decisions = [batches.backoff(m.delivered) for m in incoming]
        for msg, delay in zip(msgs, decisions):
            if delay is None:
                await msg.ack()
            else:
                await msg.nak(delay=delay)
    await nc.drain()


def run(nats_url: str, batch_size: int) -> None:
    """Runs until SIGTERM/SIGINT; the batch in hand is finished and acknowledged before exiting."""

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await consume(nats_url, batch_size=batch_size, stop=stop)

    asyncio.run(main())
