from db import health
from generated.models import Health


def get_liveness():
    return Health(status="ok", checks={})


def get_readiness():
    checks = health.database_checks()
    ready = all(value == "ok" for value in checks.values())
    return Health(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503
