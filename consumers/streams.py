"""The event door's two JetStream streams, and the partition every stored message carries in its subject.

The bot publishes `trading.<a>.<b>.<user_id>` (orders, balances) and `trading.<a>.<user_id>` (errors, signals,
heartbeats) into TRADING, which keeps them with a duplicate window (a re-published Nats-Msg-Id is dropped there).
The ledger reads LEDGER, a stream that sources TRADING and stores each message under a subject naming its
partition, computed by NATS with `{{partition(N, <the user token's wildcard>)}}`:

    trading.orders.filled.<user_id>  ->  ledger.4.2.orders.filled.<user_id>   (4 partitions; this user's is 2)
    trading.heartbeat.<user_id>      ->  ledger.4.2.heartbeat.<user_id>

Partition k's durable consumer is filtered on `ledger.4.k.>`, so JetStream delivers each message to one consumer
only. LEDGER's first sequence is the first TRADING sequence it copies, and it copies every message, so a message
normally has the same sequence in both (the one the bot's publish acknowledgement names). The hash reads the user
token alone (FNV-1a of the id, modulo N), so all of a user's events share a partition whatever their subject's
shape, and sourcing copies TRADING in its order: a user's events reach their partition in the order they were
published.

Why a second stream. A transform reads tokens through the `*` wildcards of its source pattern, and the user id is
the 4th token of some subjects and the 3rd of others, so two patterns are needed. A stream's own
`subject_transform` is a single pattern; account mappings would need the server's configuration file; a consumer's
filter (even the plural `filter_subjects`) selects subjects but cannot hash them. A stream source takes a list of
`subject_transforms`, so a stream sourcing TRADING partitions both shapes, with nothing but the stream
configuration that `tiris consume` writes, and the bot's subjects and stream stay as they are. The price is that
every message is stored twice (once in each stream). Subjects of no other shape (no channel has them) are copied
to partition 0, which dead-letters them like any subject without a channel: the ledger sees every message.

The partition count is part of the subject, so messages written under two counts never match one filter. The
count in force and the first LEDGER sequence written under it are kept in LEDGER's metadata. Changing the count
(`relayout`) stops the copying, so that every message of the old layout is stored, then copies on, from the next
TRADING message, under the new one; consumers/migration.py drains the old layout's consumers before the new ones
start.
"""

import asyncio
from dataclasses import dataclass

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig, StreamSource, SubjectTransform
from nats.js.errors import NotFoundError

TRADING = "TRADING"  # where the bot publishes
LEDGER = "LEDGER"  # what the ledger's consumers read
SUBJECTS = ["trading.>"]
PREFIX = "ledger"
DUPLICATE_WINDOW = 120.0  # seconds in which JetStream drops a re-published Nats-Msg-Id by itself
CONSUMER = "tiris-ledger"
PARTITIONS_KEY, SINCE_KEY = "tiris.partitions", "tiris.partitions_since"


@dataclass(frozen=True)
class Layout:
    partitions: int
    since: int  # the first LEDGER sequence stored under this partition count


def consumer_name(partition: int) -> str:
    return f"{CONSUMER}-p{partition}"


def partition_of_consumer(name: str) -> int | None:
    """k for `tiris-ledger-p<k>`; None for any other consumer."""
    prefix = CONSUMER + "-p"
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def partition_subjects(partitions: int, partition: int) -> str:
    return f"{PREFIX}.{partitions}.{partition}.>"


def published_subject(stored: str) -> str:
    """The subject the bot published on, from LEDGER's (`ledger.<N>.<k>.` in front of its tokens after `trading.`)."""
    return "trading." + stored.split(".", 3)[3]


def transforms(partitions: int) -> list[SubjectTransform]:
    def tokens(count: int) -> str:
        return ".".join(f"{{{{wildcard({i})}}}}" for i in range(1, count + 1))

    def to(partition: str, count: int) -> str:
        return f"{PREFIX}.{partitions}.{partition}.{tokens(count)}"

    return [SubjectTransform(src="trading.*.*.*", dest=to(f"{{{{partition({partitions},3)}}}}", 3)),
            SubjectTransform(src="trading.*.*", dest=to(f"{{{{partition({partitions},2)}}}}", 2)),
            SubjectTransform(src="trading.*", dest=to("0", 1)),
            SubjectTransform(src="trading.*.*.*.*.>", dest=to("0", 4) + ".>")]


class Unsupported(RuntimeError):
    """The NATS server cannot hold the layout: stream metadata and subject transforms in a stream's sources came
    with JetStream 2.10, and an older server (Debian 12 packages 2.9) accepts the stream and drops both."""


def layout_of(config: StreamConfig) -> Layout:
    metadata = config.metadata or {}
    if PARTITIONS_KEY not in metadata or SINCE_KEY not in metadata:
        raise Unsupported(f"stream {LEDGER} carries no partition layout: this NATS server dropped the stream's "
                          f"metadata and subject transforms; NATS 2.10 or newer is needed (delete a {LEDGER} stream "
                          "an older server made before starting again)")
    return Layout(int(metadata[PARTITIONS_KEY]), int(metadata[SINCE_KEY]))


def _trading_config(replicas: int) -> StreamConfig:
    return StreamConfig(name=TRADING, subjects=SUBJECTS, duplicate_window=DUPLICATE_WINDOW, num_replicas=replicas)


def _ledger_config(layout: Layout, copy_from: int, replicas: int, first_seq: int) -> StreamConfig:
    source = StreamSource(name=TRADING, opt_start_seq=copy_from if copy_from > 1 else None,
                          subject_transforms=transforms(layout.partitions))
    return StreamConfig(name=LEDGER, sources=[source], first_seq=first_seq if first_seq > 1 else None,
                        duplicate_window=DUPLICATE_WINDOW, num_replicas=replicas,
                        metadata={PARTITIONS_KEY: str(layout.partitions), SINCE_KEY: str(layout.since)})


async def legacy_consumers(js) -> list:
    """TRADING's durable consumers from before LEDGER: each read the whole stream and took its partition's users."""
    return [info for info in await js.consumers_info(TRADING) if partition_of_consumer(info.name) is not None]


async def ensure_streams(js, partitions: int, replicas: int = 1) -> Layout:
    """Creates what is missing and sets the replicas; returns LEDGER's layout, which only `relayout` changes.

    On the first start over a TRADING stream that the whole-stream consumers read, LEDGER starts after TRADING's
    last message (numbered on from it): the old consumers own everything up to there (consumers/migration.py).
    """
    try:
        trading = await js.stream_info(TRADING)
        if trading.config.num_replicas != replicas or trading.config.subjects != SUBJECTS:
            await js.update_stream(_trading_config(replicas))
        cut = trading.state.last_seq
    except NotFoundError:
        await js.add_stream(_trading_config(replicas))
        cut = 0
    try:
        ledger = (await js.stream_info(LEDGER)).config
    except NotFoundError:
        if cut and not await legacy_consumers(js):
            cut = 0  # nobody read those messages: the ledger takes them all
        made = await js.add_stream(_ledger_config(Layout(partitions, cut + 1), cut + 1, replicas, cut + 1))
        try:
            return layout_of(made.config)
        except Unsupported:
            await js.delete_stream(LEDGER)  # an older server: nothing is left behind that a newer one would trip on
            raise
    if ledger.num_replicas != replicas:
        await js.update_stream(ledger.evolve(num_replicas=replicas))
    return layout_of(ledger)


async def cut(js) -> int:
    """TRADING's last message that the whole-stream consumers own: the one before LEDGER's first."""
    return ((await js.stream_info(LEDGER)).config.first_seq or 1) - 1


async def relayout(js, partitions: int) -> Layout:
    """Copies TRADING on under `partitions`, from the first message not yet copied; returns the new layout.

    The copying stops first, so when the new layout starts every message of the old one is stored. (A source whose
    transforms change is a new source to JetStream, which would copy from its start again: hence the explicit
    position.)"""
    info = await js.stream_info(LEDGER)
    if info.config.sources:
        await js.update_stream(info.config.evolve(sources=None))
        info = await js.stream_info(LEDGER)
    first_seq = info.config.first_seq or 1
    copied = first_seq - 1
    if info.state.messages:
        last = await js.get_msg(LEDGER, info.state.last_seq)
        copied = int(last.headers["Nats-Stream-Source"].split(" ")[1])  # "TRADING <its sequence> ..."
    layout = Layout(partitions, info.state.last_seq + 1)
    await js.update_stream(_ledger_config(layout, copied + 1, info.config.num_replicas, first_seq))
    return layout


def consumer_config(partition: int, layout: Layout, batch_size: int) -> ConsumerConfig:
    """Partition `partition`'s durable consumer, from the first message of its layout."""
    start = ({"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": layout.since} if layout.since > 1
             else {"deliver_policy": DeliverPolicy.ALL})
    return ConsumerConfig(durable_name=consumer_name(partition), ack_policy=AckPolicy.EXPLICIT,
                          filter_subject=partition_subjects(layout.partitions, partition), ack_wait=30,
                          max_deliver=-1, max_ack_pending=batch_size, **start)


async def ensure_consumer(js, partition: int, layout: Layout, batch_size: int) -> None:
    """Creates the durable consumer explicitly; an existing one keeps its position (a replay may have moved it).

    Called by a partition's new owner before it pulls. Messages still delivered and unacknowledged were held by an
    owner that stopped first (killed, or cut off from the database): JetStream would deliver them again only after
    the acknowledgement wait, and newer ones meanwhile, so a user's later events would go first. The consumer is then
    made again from its acknowledgement floor: they come again at once, in order, before anything newer (those that
    were booked after all are recognised by their ids and change nothing)."""
    name = consumer_name(partition)
    try:
        info = await js.consumer_info(LEDGER, name)
    except NotFoundError:
        await js.add_consumer(LEDGER, consumer_config(partition, layout, batch_size))
        return
    config = info.config.evolve(max_ack_pending=batch_size)  # the flow limit follows the batch size
    if info.num_ack_pending:
        floor = info.ack_floor.stream_seq  # 0: nothing acknowledged yet, so from the consumer's own start again
        if floor:
            config = config.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1,
                                   opt_start_time=None)
        await js.delete_consumer(LEDGER, name)
        await _add_again(js, config)
    elif info.config.max_ack_pending != batch_size:
        await js.add_consumer(LEDGER, config)


async def _add_again(js, config: ConsumerConfig, attempts: int = 10) -> None:
    """Adds the consumer just deleted, trying for a while: a consumer found missing is created from its layout's
    start, which would hand the partition's whole history over again (harmless, every event is recognised, but long)."""
    for attempt in range(1, attempts + 1):
        try:
            await js.add_consumer(LEDGER, config)
            return
        except Exception:  # noqa: BLE001 - NATS unavailable for a moment, or a leader election: try again
            if attempt == attempts:
                raise
            await asyncio.sleep(1)
