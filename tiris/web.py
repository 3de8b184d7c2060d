"""ASGI middleware around every response: the request's log line and metrics, a time limit, security headers."""

import asyncio
import datetime as dt
import json
import logging

from tiris import jsonify, logs, metrics

log = logging.getLogger("tiris.request")

HSTS = "max-age=31536000; includeSubDomains"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI is one page of inline script and style that shows data: images and fetches the spec from here.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'")
DOCS_PREFIX = "/v1/ui"


class RequestObserver:
    """One JSON log line and the HTTP metrics per request; a 503 when the answer takes longer than the limit.

    Sits outside Connexion's exception handling, so it sees every response, errors included. The inner layers
    copy the scope, but share its `extensions` dict, where routing leaves the operation, security the user, and
    the rate limiter its headers.
    """

    def __init__(self, app, operations: dict, timeout: float):
        self.app = app
        self.operations = operations
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extensions = scope.setdefault("extensions", {})
        shared = extensions.setdefault("tiris", {})
        trace_token = logs.trace_id.set(dict(scope["headers"]).get(b"x-request-id", b"").decode())
        timer = metrics.Timer()
        status = 500
        started = False

        async def send_observed(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                extra = [(k.lower().encode(), v.encode()) for k, v in shared.get("rate_limit", {}).items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await asyncio.wait_for(self.app(scope, receive, send_observed), self.timeout)
        except asyncio.TimeoutError:
            if started:
                raise
            status = 503
            await send_observed(_timeout_response_start())
            await send_observed(_timeout_response_body(logs.trace_id.get(), self.timeout))
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            operation = self.operations.get(extensions.get("connexion_routing", {}).get("operation_id"))
            route = operation.route if operation else ("/v1/ui" if scope["path"].startswith(DOCS_PREFIX)
                                                       else "unmatched")
            seconds = timer.seconds()
            metrics.HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.HTTP_DURATION.labels(route, scope["method"]).observe(seconds)
            log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                "user_id": extensions.get("connexion_context", {}).get("user"), "route": route, "path": scope["path"],
                "method": scope["method"], "status": status, "duration_ms": round(seconds * 1000, 2)})
            logs.trace_id.reset(trace_token)


def _timeout_response_start() -> dict:
    return {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]}


def _timeout_response_body(trace_id: str | None, timeout: float) -> dict:
    body = {"error": {"code": "REQUEST_TIMEOUT", "message": f"The request took longer than {timeout:g} s.",
                      "trace_id": trace_id, "timestamp": jsonify.rfc3339(dt.datetime.now(dt.timezone.utc))}}
    return {"type": "http.response.body", "body": json.dumps(body).encode()}


class SecurityHeaders:
    """HSTS, nosniff, frame denial, referrer policy and a CSP on every response; the CSP is relaxed for the docs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PREFIX) else API_CSP
        added = [(b"strict-transport-security", HSTS.encode()), (b"x-content-type-options", b"nosniff"),
                 (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                 (b"content-security-policy", csp.encode())]

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_secured)
