"""A batch fetched from a partition's durable consumer, applied in one transaction with retries in place."""

import asyncio
import logging

from consumers import batch as batches
from consumers.parse import Incoming
from consumers.streams import LEDGER, published_subject
from tiris import metrics

log = logging.getLogger("tiris.consumer")


def incoming(msg) -> Incoming:
    meta = msg.metadata
    subject = published_subject(msg.subject) if meta.stream == LEDGER else msg.subject
    return Incoming(subject=subject, data=msg.data, msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
                    stream_seq=meta.sequence.stream, delivered=meta.num_delivered)


async def apply(msgs, name: str, channels, stop: asyncio.Event) -> bool:
    """Applies a partition's batch, retrying in place with backoff; False if stopped before it committed."""
    batch = [incoming(m) for m in msgs]
    attempt = 1
    while True:
        timer = metrics.Timer()
        try:
            stats = await asyncio.to_thread(batches.process, batch, channels, name, attempt)
            _observe(name, len(batch), stats, msgs[-1].metadata.num_pending, timer.seconds())
            return True
        except Exception as error:  # nothing was committed
            metrics.CONSUMER_FAILED.labels(name).inc()
            delay = batches.backoff(attempt)
            log.warning("batch of %d on %s failed (%s); retrying with backoff in %.1fs", len(msgs), name,
                        type(error).__name__, delay, exc_info=error)
            await asyncio.to_thread(batches.record_failure, name)
            for msg in msgs:
                await msg.in_progress()  # we still hold them: no redelivery elsewhere meanwhile
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return False
            except asyncio.TimeoutError:
                attempt += 1


def _observe(name: str, count: int, stats, pending: int, seconds: float) -> None:
    metrics.CONSUMER_PROCESSED.labels(name).inc(stats.get("processed", 0))
    metrics.CONSUMER_DEAD_LETTERED.labels(name).inc(stats.get("dead_lettered", 0))
    metrics.BALANCE_DRIFTS.labels(name).inc(stats.get("balance_drifts", 0))
    metrics.CONSUMER_LAG.labels(name).set(pending)
    metrics.CONSUMER_BATCH_SECONDS.labels(name).observe(seconds)
    log.info("batch applied", extra={"consumer": name, "events": count, **stats, "pending": pending,
                                     "duration_ms": round(seconds * 1000, 2)})
