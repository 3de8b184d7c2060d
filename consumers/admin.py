"""Admin operations on the event door, called by handlers/events.py: re-drive a dead letter, replay the stream."""

import asyncio
import datetime as dt
import socket
from urllib.parse import urlparse

import nats
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from consumers import batch, runner
from consumers.contract import load_channels
from db import engine, event_status, events
from tiris.errors import ApiError, Conflict, ServiceUnavailable, Unprocessable

_channels = None


def redrive(dead_letter_id: str) -> dict:
    """Applies a dead letter through the same validation and effects as the stream; 422 if it still cannot."""
    global _channels
    _channels = _channels or load_channels()
    with engine.transaction() as conn:
        letter = event_status.dead_letter(conn, dead_letter_id, lock=True)
        if letter["redriven_at"] is not None:
            raise Conflict("This dead letter was re-driven already.", code="ALREADY_REDRIVEN")
        incoming = batch.Incoming(subject=letter["subject"], data=letter["payload"].encode(), msg_id=None,
                                  stream_seq=letter["stream_seq"], delivered=letter["attempts"], pending=0)
        event, reason = batch.parse(incoming, _channels)
        if reason:
            raise Unprocessable(f"It still cannot take effect: {reason}", code="STILL_INVALID")
        if events.claim(conn, event, letter["subject"], letter["stream_seq"]):
            try:
                events.apply(conn, event)
            except ApiError as refused:
                if refused.status >= 500:
                    raise
                raise Unprocessable(f"It still cannot take effect: {refused.code}: {refused.message}",
                                    code="STILL_REFUSED") from None
        return event_status.mark_redriven(conn, letter["id"])


def nats_reachable(nats_url: str) -> bool:
    url = urlparse(nats_url)
    try:
        socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=1).close()
        return True
    except OSError:
        return False


def replay(nats_url: str, partitions: int, batch_size: int, *, start_time: str | None = None,
           start_sequence: int | None = None) -> list[str]:
    """Moves every partition's consumer back to the start point. Safe: applied event ids change nothing."""

    async def run() -> list[str]:
        try:
            nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
        except Exception as error:  # noqa: BLE001 - any failure to connect is the same answer to the client
            raise ServiceUnavailable("NATS is unreachable.") from error
        js = nc.jetstream()
        names = []
        start = ({"deliver_policy": DeliverPolicy.BY_START_TIME,
                  "opt_start_time": dt.datetime.fromisoformat(start_time)} if start_time else
                 {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_sequence})
        try:
            await runner.ensure_stream(js)
            for partition in range(partitions):
                name = runner.consumer_name(partition)
                try:
                    await js.delete_consumer(runner.STREAM, name)
                except NotFoundError:
                    pass
                await js.add_consumer(runner.STREAM, runner.consumer_config(name, batch_size).evolve(**start))
                names.append(name)
        finally:
            await nc.close()
        return names

    return asyncio.run(run())
