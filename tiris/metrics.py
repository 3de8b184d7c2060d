"""Prometheus metrics of the API workers and of the consumer.

Under `tiris serve` every gunicorn worker is its own process: prometheus_client's multiprocess mode keeps each
worker's values in files under PROMETHEUS_MULTIPROC_DIR (emptied by `tiris serve` at start; a dead worker's live
gauges are dropped by the gunicorn config), and /metrics, answered by any worker, adds them all up. The variable
must be set before prometheus_client is imported, which is why `tiris serve` sets it and this module is imported
only after. Without it (tests in one process, `tiris consume`) the process's own registry is exposed.
"""

import os
import time

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY, multiprocess

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# HTTP: labelled by the OpenAPI route template, never by the concrete path (ids would explode the series).
HTTP_REQUESTS = Counter("tiris_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_DURATION = Histogram("tiris_http_request_duration_seconds", "Time to answer an HTTP request", ["route", "method"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
HTTP_IN_FLIGHT = Gauge("tiris_http_requests_in_flight", "HTTP requests being answered", multiprocess_mode="livesum")

# Database pool, summed over the live worker processes.
DB_POOL_SIZE = Gauge("tiris_db_pool_size", "Connections the pool keeps open (DB_POOL_SIZE)", multiprocess_mode="livesum")
DB_POOL_IN_USE = Gauge("tiris_db_pool_in_use", "Connections checked out of the pool", multiprocess_mode="livesum")
DB_POOL_WAITS = Counter("tiris_db_pool_waits_total",
                        "Checkouts that found every pooled connection busy (an overflow connection or a wait)")
# Reads a replica may serve (db/replica.py): the server that answered, and why (`fresh` on the replica; on the
# primary `own_write`, `lag`, `not_standby`, `replica_failed`, `replica_down`).
DB_READS = Counter("tiris_db_reads_total", "Replica-eligible reads by the server that answered them",
                   ["server", "reason"])

# Consumer (`tiris consume`).
CONSUMER_PROCESSED = Counter("tiris_consumer_events_processed_total", "Events applied to the ledger", ["consumer"])
CONSUMER_FAILED = Counter("tiris_consumer_batches_failed_total", "Batch attempts that failed and were retried",
                          ["consumer"])
CONSUMER_DEAD_LETTERED = Counter("tiris_consumer_events_dead_lettered_total", "Events dead-lettered", ["consumer"])
CONSUMER_LAG = Gauge("tiris_consumer_lag_events", "Events in the stream not yet delivered to the consumer",
                     ["consumer"], multiprocess_mode="livemax")
CONSUMER_BATCH_SECONDS = Histogram("tiris_consumer_batch_duration_seconds", "Time to apply and commit one batch",
                                   ["consumer"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# Live feed (tiris/stream.py): the streams of one user woken together share one read.
STREAM_READS = Counter("tiris_stream_reads_total", "Reads of a user's live feed by the streams it wakes")

# Caches (tiris.cache).
CACHE_LOOKUPS = Counter("tiris_cache_lookups_total", "Cache lookups by result", ["cache", "result"])

# Business.
TRADES = Counter("tiris_trades_total", "Trades recorded through the API (trading logs of a trade type)")
DEPOSITS = Counter("tiris_deposits_total", "Deposits to sub-accounts through the API")
BALANCE_DRIFTS = Counter("tiris_balance_drift_total",
                         "balance.updated events whose previous balance differed from the ledger's", ["consumer"])


def watch_pool(engine: sa.Engine, size: int) -> None:
    DB_POOL_SIZE.set(size)

    @sa.event.listens_for(engine, "checkout")
    def checkout(dbapi_connection, record, proxy):
        DB_POOL_IN_USE.inc()
        if engine.pool.checkedout() > size:
            DB_POOL_WAITS.inc()

    @sa.event.listens_for(engine, "checkin")
    def checkin(dbapi_connection, record):
        DB_POOL_IN_USE.dec()


def exposition() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
