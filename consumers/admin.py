"""Admin operations on the event door, called by handlers/events.py: re-drive a dead letter, replay the stream."""

import asyncio
import datetime as dt

import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from consumers import applier, runner, streams
from consumers.contract import load_channels
from consumers.parse import Incoming, parse
from db import dead_letters, engine
from db.errors import Invalid, Refused, Unavailable

_channels = None


def redrive(dead_letter_id: str) -> dict:
    """Handles a dead letter again through the same applier as the stream (the only way a refused event is retried);
    422 if it still cannot take effect, and then nothing changes."""
    global _channels
    _channels = _channels or load_channels()
    with engine.transaction() as conn:
        letter = dead_letters.take_for_redrive(conn, dead_letter_id)
        # The header is not checked again: the payload is what is re-driven.
        message = Incoming(subject=letter["subject"], data=letter["payload"].encode(), msg_id=None,
                           stream_seq=letter["stream_seq"], delivered=letter["attempts"])
        parsed = parse(message, _channels)
        if parsed.event is None:
            raise Refused(f"It still cannot take effect: {parsed.reason}", code="STILL_INVALID")
        [result] = applier.handle(conn, [parsed], letter["attempts"], redrive=True)
        if result.outcome == "refused":
            raise Refused(f"It still cannot take effect: {result.reason}", code="STILL_REFUSED")
        return dead_letters.mark_redriven(conn, letter["id"])


def replay(nats_url: str, partitions: int, batch_size: int, *, start_time: dt.datetime | None = None,
           start_sequence: int | None = None, replicas: int = 1) -> list[str]:
    """Moves every partition's consumer back to the start point. Safe: handled events (refused ones included) are
    recognised by their id and change nothing. A start beyond the stream's end is refused: it would skip
    everything published until the stream got there. Sequences are LEDGER's; a start before the partition count
    last changed replays from there only what was written under the current count (consumers/streams.py)."""

    async def run() -> list[str]:
        try:
            nc = await nats.connect(runner.servers(nats_url), connect_timeout=2, max_reconnect_attempts=0,
                                    allow_reconnect=False)
        except Exception as error:  # noqa: BLE001 - any failure to connect is the same answer to the client
            raise Unavailable("NATS is unreachable.") from error
        js = nc.jetstream()
        names = []
        try:
            try:
                layout = await streams.ensure_streams(js, partitions, replicas)
            except streams.Unsupported as error:
                raise Unavailable(str(error)) from error
            state = (await js.stream_info(streams.LEDGER)).state
            if start_sequence is not None and start_sequence > state.last_seq:
                raise Invalid(f"start_sequence {start_sequence} is beyond the stream's last sequence "
                              f"({state.last_seq}).", code="REPLAY_BEYOND_END",
                              details=[{"field": "start_sequence", "issue": f"at most {state.last_seq}"}])
            if start_time is not None and start_time > dt.datetime.now(dt.timezone.utc):
                raise Invalid("start_time is in the future.", code="REPLAY_BEYOND_END",
                              details=[{"field": "start_time", "issue": "not after now"}])
            start = ({"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": start_time,
                      "opt_start_seq": None}
                     if start_time else
                     {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_sequence})
            for partition in range(layout.partitions):
                name = streams.consumer_name(partition)
                try:
                    await js.delete_consumer(streams.LEDGER, name)
                except NotFoundError:
                    pass
                await js.add_consumer(streams.LEDGER,
                                      streams.consumer_config(partition, layout, batch_size).evolve(**start))
                names.append(name)
        finally:
            await nc.close()
        return names

    return asyncio.run(run())
