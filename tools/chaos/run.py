"""`make chaos`: a seeded fault run on loopback, then the invariants; one summary line on stdout.

  python -m tools.chaos [--seconds 120] [--seed 7] [--event-rate 100] [--rest-rate 20] [--keep]

Exit status 0 when every invariant holds, 1 otherwise (the problems are listed on stderr above the summary).
"""

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from tools import simulate_bot
from tools.chaos import faults as fault_plan
from tools.chaos import invariants, load
from tools.chaos.cluster import Cluster

DRAIN_TIMEOUT = 300.0  # seconds the consumers get to handle what is left once the load has stopped
RETRY_WINDOW = 60.0  # seconds after the load a write or publish without an answer is still retried
SERVER_ERROR_GRACE = 15.0  # seconds after PostgreSQL is back in which a 503 is still expected


def say(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


def service_env() -> dict:
    """Fresh secrets, limits no load here reaches, small pools (four API workers and two consumers share one
    PostgreSQL), and nothing inherited that would point a process elsewhere."""
    inherited = {k: v for k, v in os.environ.items() if k not in (
        "DATABASE_URL", "DATABASE_REPLICA_URL", "NATS_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR",
        "CONSUMER_METRICS_PORT", "PORT", "HOST", "WEB_CONCURRENCY")}
    return {**inherited, "JWT_SECRET": secrets.token_urlsafe(48),
            "ENCRYPTION_KEYS": "chaos:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "API_KEY_HASH_KEY": base64.b64encode(secrets.token_bytes(32)).decode(), "LOG_LEVEL": "WARNING",
            "DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "4", "CONSUMER_BATCH": "200",
            **{f"RATE_LIMIT_{kind}": "1000000/s" for kind in ("API", "TRADING", "AUTH")}}


async def _ensure_streams(nats_url: str, partitions: int) -> None:
    """The streams as `tiris consume` creates them, so the bot can publish before a consumer got there."""
    import nats

    from consumers import streams

    nc = await nats.connect(nats_url)
    await streams.ensure_streams(nc.jetstream(), partitions)
    await nc.close()


async def _lag(nats_url: str, partitions: int) -> int:
    """Messages not yet acknowledged by every partition's consumer (not delivered, or delivered and in hand)."""
    import nats

    from consumers import streams

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js, lag = nc.jetstream(), 0
        for partition in range(partitions):
            info = await js.consumer_info(streams.LEDGER, streams.consumer_name(partition))
            lag += info.num_pending + info.num_ack_pending
        return lag
    finally:
        await nc.close()


def drain(cluster: Cluster, expected: invariants.Expected, partitions: int) -> bool:
    """Waits until JetStream has nothing left for any partition and the database shows every event handled."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with cluster.postgres.connect() as conn:
                applied = conn.execute("SELECT count(*) FROM processed_events WHERE outcome = 'applied'").fetchone()[0]
                dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            handled = applied >= len(expected.applied_events) and dead >= len(expected.poison)
            if handled and asyncio.run(_lag(cluster.jetstream.url, partitions)) == 0:
                return True
        except Exception:  # noqa: BLE001 - a server still recovering: ask again
            pass
        time.sleep(1)
    return False


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", 120)),
                        help="seconds of load and faults (CHAOS_SECONDS; default %(default)s)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", 7)),
                        help="draws the events, the REST operations and the fault schedule (CHAOS_SEED)")
    parser.add_argument("--event-rate", type=float, default=100, help="bot events per second")
    parser.add_argument("--rest-rate", type=float, default=20, help="REST requests per second, all workers")
    parser.add_argument("--bot-users", type=int, default=20)
    parser.add_argument("--rest-users", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (kept anyway on a failure)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tiris-chaos-"))
    env = service_env()
    cluster = Cluster(root, env)
    schedule = fault_plan.schedule(args.seed, args.seconds)
    say(f"seed {args.seed}, {args.seconds:g}s, in {root}; faults: " + ", ".join(map(str, schedule)))
    ok = False
    try:
        cluster.start()
        os.environ.update({k: cluster.env[k] for k in ("JWT_SECRET", "ENCRYPTION_KEYS", "API_KEY_HASH_KEY",
                                                      "DATABASE_URL", "NATS_URL")})
        from db import crypto, engine
        from tiris import config

        settings = config.use(config.load(cluster.env))
        engine.configure(settings)
        crypto.configure(settings)
        plan = simulate_bot.setup(args.bot_users)
        engine.configure(settings)  # setup() configured an engine of its own
        accounts = load.create_rest_accounts(args.rest_users, token_ttl=int(args.seconds + DRAIN_TIMEOUT + 900))
        engine.engine().dispose()  # the driver's own pool must not hold connections across the faults
        asyncio.run(_ensure_streams(cluster.jetstream.url, settings.consumer_partitions))

        events = load.bot_events(plan, int(args.event_rate * args.seconds), args.seed)
        expected = invariants.Expected()
        invariants.expect_events(expected, plan, events)
        say(f"cluster up: {len(cluster.replicas)} replicas, {len(cluster.consumers)} consumers; "
            f"{len(events)} events for {len(plan)} bot users, REST for {len(accounts)} users")

        started = time.monotonic()
        until, give_up = started + args.seconds, started + args.seconds + RETRY_WINDOW
        bot = load.BotLoad(cluster.jetstream.url, events, until, give_up)
        rest = load.RestLoad([r.url for r in cluster.replicas], accounts, args.seed, args.rest_rate, until, give_up)
        injector = fault_plan.Injector(cluster, schedule, log=lambda line: print(line, file=sys.stderr, flush=True))
        faults = threading.Thread(target=injector.run, args=(started,), name="chaos-faults", daemon=True)
        bot.thread.start()
        rest.start()
        faults.start()
        faults.join()
        rest.join()
        bot.thread.join()
        say(f"load done after {time.monotonic() - started:.0f}s; waiting for the consumers to drain")

        opening = {}
        for account in accounts:
            opening[account.base_id], opening[account.quote_id] = load.REST_FUNDING["ETH"], load.REST_FUNDING["USDT"]
        invariants.expect_writes(expected, rest.operations, opening)
        drained = drain(cluster, expected, settings.consumer_partitions)
        with cluster.postgres.connect() as conn:
            results = invariants.check(conn, expected)
        results["no 500"] = invariants.server_errors(rest.server_errors, injector.pg_down, SERVER_ERROR_GRACE)
        if not drained:
            results["events once"].insert(0, f"not drained within {DRAIN_TIMEOUT:.0f}s")
        if bot.unacknowledged:
            results["events once"].insert(0, f"{len(bot.unacknowledged)} events never acknowledged by JetStream")
        for name, problems in results.items():
            for problem in problems:
                say(f"{name}: {problem}")
        ok = not any(results.values())
        print(summary(args, events, bot, rest, schedule, cluster, results), flush=True)
    finally:
        cluster.stop()
        if ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"logs and data kept in {root}")
    return 0 if ok else 1


def summary(args, events, bot, rest, schedule, cluster, results) -> str:
    kinds = Counter(event.kind for event in events)
    outcomes = Counter(op.outcome for op in rest.operations)
    done = Counter(fault.kind for fault in schedule if fault.ended is not None)
    server_errors = Counter(status for _, status, _ in rest.server_errors)
    parts = [
        f"chaos seed={args.seed} duration={args.seconds:g}s",
        f"events={len(events)} valid={kinds['valid']} duplicates={kinds['duplicate']} poison={kinds['invalid']}"
        f" publish_retries={bot.counts['publish_retries']}",
        f"rest_writes={len(rest.operations)} rest_ok={outcomes['acknowledged']} rest_refused={outcomes['refused']}"
        f" rest_unresolved={len(rest.operations) - outcomes['acknowledged'] - outcomes['refused']}"
        f" rest_retried={rest.counts['retried']} connection_errors={rest.counts['connection_errors']}"
        f" reads={rest.counts['reads']}"
        + "".join(f" http_{status}={n}" for status, n in sorted(server_errors.items())),
        "faults: " + " ".join(f"{kind}={done[kind]}" for kind in fault_plan.KINDS)
        + " restarted_after_exit=" + (",".join(f"{name}:{n}" for name, n in sorted(cluster.unplanned_exits.items()))
                                      or "0"),
        "invariants: " + ", ".join(f"{name} {'ok' if not results[name] else 'FAILED'}"
                                   for name in invariants.NAMES),
    ]
    return " ".join(parts)
