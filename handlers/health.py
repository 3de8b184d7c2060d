from consumers import progress
from db import consumer_state, engine, health, replica
from generated.models import Health
from tiris import config

CONSUMER_SILENCE = 30  # seconds: a consumer writes a sign of life every few seconds, busy or idle


def get_liveness():
    return Health(status="ok", checks={})


def get_readiness():
    """Ready when the database is reachable and migrated and NATS answers; the consumer's state is reported."""
    checks = health.database_checks()
    checks["nats"] = "ok" if progress.nats_reachable(config.current().nats_url) else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    checks["consumer"] = _consumer() if checks["database"] == "ok" and checks["migrations"] == "ok" else "unknown"
    replica_state = replica.status()  # reported, never deciding: reads fall back to the primary
    if replica_state is not None:
        checks["replica"] = replica_state
    return Health(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


def _consumer() -> str:
    """ok, or what is wrong: no consumer process alive, or a partition not advancing while messages wait."""
    with engine.reading() as conn:
        seen = consumer_state.seen_within(conn, CONSUMER_SILENCE)
    if not seen:
        return {False: "silent", None: "never started"}[seen]
    settings = config.current()
    live = progress.read(settings.nats_url, settings.consumer_partitions, settings.consumer_stall_after)
    if live is None:
        return "unknown"
    stalled = sorted(name for name, each in live.items() if each.stalled)
    return f"stalled: {', '.join(stalled)}" if stalled else "ok"
