from consumers import admin
from db import engine, event_status, health
from generated.models import Health
from tiris import config

CONSUMER_SILENCE = 30  # seconds: a consumer writes a sign of life every few seconds, busy or idle


def get_liveness():
    return Health(status="ok", checks={})


def get_readiness():
    """Ready when the database is reachable and migrated and NATS answers; the consumer's state is reported."""
    checks = health.database_checks()
    checks["nats"] = "ok" if admin.nats_reachable(config.current().nats_url) else "unreachable"
    ready = all(value == "ok" for value in checks.values())
    checks["consumer"] = _consumer() if checks["database"] == "ok" and checks["migrations"] == "ok" else "unknown"
    return Health(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


def _consumer() -> str:
    with engine.reading() as conn:
        seen = event_status.consumer_seen_within(conn, CONSUMER_SILENCE)
    return {True: "ok", False: "silent", None: "never started"}[seen]
