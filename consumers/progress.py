"""How far each partition consumer is, as JetStream sees it now: the live lag, and whether it is stalled.

Read by the status API and readiness on each request (a short-lived connection), never from the counters the
consumer last wrote, which stand still exactly when something is wrong.
"""

import asyncio
import datetime as dt
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import nats
from nats.js.errors import NotFoundError

from consumers import runner, streams


@dataclass(frozen=True)
class Progress:
    name: str
    pending: int  # messages waiting for it: not yet delivered, or delivered and not acknowledged
    stalled: bool  # messages wait and it has neither delivered nor acknowledged for `stall_after`, or is past the end


def nats_reachable(nats_url: str) -> bool:
    """True if any of the servers NATS_URL names accepts a connection."""
    for server in runner.servers(nats_url):
        url = urlparse(server)
        try:
            socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=1).close()
            return True
        except OSError:
            continue
    return False


def names(partitions: int) -> list[str]:
    return [streams.consumer_name(partition) for partition in range(partitions)]


def read(nats_url: str, partitions: int, stall_after: float) -> dict[str, Progress] | None:
    """Each partition consumer's progress; None when JetStream cannot be asked."""
    try:
        return asyncio.run(_read(nats_url, partitions, stall_after))
    except Exception:  # noqa: BLE001 - unreachable, no stream yet, timed out: the same answer, "unknown"
        return None


async def _read(nats_url: str, partitions: int, stall_after: float) -> dict[str, Progress]:
    nc = await nats.connect(runner.servers(nats_url), connect_timeout=2, max_reconnect_attempts=0,
                            allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2)
        last_seq = (await js.stream_info(streams.LEDGER)).state.last_seq
        found = {}
        for name in names(partitions):
            try:
                info = await js.consumer_info(streams.LEDGER, name)
            except NotFoundError:
                continue
            found[name] = _progress(info, last_seq, stall_after)
        return found
    finally:
        await nc.close()


def _progress(info, last_seq: int, stall_after: float) -> Progress:
    pending = info.num_pending + info.num_ack_pending
    # Advancing means delivering or acknowledging: a consumer that was idle and has just been fetching is not stalled.
    moved = max(t for t in (info.created, info.delivered.last_active, info.ack_floor.last_active) if t)
    quiet_for = (dt.datetime.now(dt.timezone.utc) - moved).total_seconds()
    # A consumer positioned beyond the stream's end skips everything published until the stream catches up.
    beyond_end = (info.config.opt_start_seq or 0) > last_seq + 1
    return Progress(info.name, pending, beyond_end or (pending > 0 and quiet_for > stall_after))
