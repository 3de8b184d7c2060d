"""Every ASGI middleware of the service, and the one helper that adds headers to a response.

Outermost first: RequestId -> SecurityHeaders -> RequestObserver (log line, metrics, time limit) -> CORS ->
Connexion's exception handling -> RequestGuard (path, body size, media type) -> routing, security, rate limits,
validation -> the handler. Errors raised inside Connexion's exception handling are rendered by
tiris.error_handlers; the time-out answer, outside it, goes through the same renderer.
"""

import asyncio
import logging
import re
import uuid
from typing import Callable

from tiris import error_handlers, logs, metrics
from db.errors import NotFound
from tiris.errors import PayloadTooLarge, UnsupportedMediaType

log = logging.getLogger("tiris.request")

HSTS = "max-age=31536000; includeSubDomains"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI is one page of inline script and style that shows data: images and fetches the spec from here.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'")
DOCS_PREFIX = "/v1/ui"
STREAM_PATH = "/v1/stream"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
Headers = list[tuple[bytes, bytes]]


def adding_headers(send, headers: Callable[[dict], Headers]):
    """A `send` that appends `headers(start_message)` to the response's start message."""
    async def sending(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers(message)]}
        await send(message)
    return sending


class RequestIdMiddleware:
    """Gives every request a trace id (the client's X-Request-ID when sane) and echoes it on the response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given if _REQUEST_ID.match(given) else str(uuid.uuid4()).encode()
        scope = {**scope, "headers": [*headers, (b"x-request-id", request_id)]}
        await self.app(scope, receive, adding_headers(send, lambda _: [(b"x-request-id", request_id)]))


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
        await self.app(scope, receive, adding_headers(send, lambda _: added))


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

        def observed(message) -> Headers:
            nonlocal status, started
            status, started = message["status"], True
            return [(k.lower().encode(), v.encode()) for k, v in shared.get("rate_limit", {}).items()]

        send_observed = adding_headers(send, observed)
        metrics.HTTP_IN_FLIGHT.inc()
        try:
            # A stream of the live feed lasts as long as its client wants: no time limit there.
            timeout = None if scope["path"] == STREAM_PATH else self.timeout
            await asyncio.wait_for(self.app(scope, receive, send_observed), timeout)
        except asyncio.TimeoutError:
            if started:
                raise
            headers, body = error_handlers.asgi_error(
                503, "REQUEST_TIMEOUT", f"The request took longer than {self.timeout:g} s.", logs.trace_id.get())
            await send_observed({"type": "http.response.start", "status": 503, "headers": headers})
            await send_observed({"type": "http.response.body", "body": body})
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


class RequestGuard:
    """What must hold before a request is routed, authenticated or parsed; each refusal is rendered as an error.

    - A path with control characters (e.g. an encoded newline in an id) is a 404: Connexion's router does not
      match it but Flask's does, and would call the operation without Connexion's context (a 500).
    - A body is at most `max_body` bytes (413), counted as it arrives, so a lying or absent Content-Length
      cannot make the service buffer more. It is read here and passed on with its Content-Length: Connexion
      takes a body without one (chunked) for no body at all.
    - A body is JSON: its media type (case-insensitive, RFC 9110) must be application/json, else a 415. The
      header is rewritten to the lower-case form, because Connexion picks the body's schema and validator by an
      exact, case-sensitive match and would skip validation for `application/JSON`.
    """

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in scope["path"]):
            raise NotFound("No such resource.")
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        if (length.isdigit() and int(length) > 0) or b"transfer-encoding" in headers:
            media_type = self._media_type(headers.get(b"content-type"))
            body = await self._read(receive)
            kept = [(k, v) for k, v in scope["headers"]
                    if k not in (b"content-type", b"content-length", b"transfer-encoding")]
            scope = {**scope, "headers": [*kept, (b"content-type", media_type),
                                          (b"content-length", str(len(body)).encode())]}
            receive = self._replay(body, receive)
        await self.app(scope, receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than {self.max_body} bytes.",
                               details={"max_bytes": self.max_body})

    @staticmethod
    def _media_type(given: bytes | None) -> bytes:
        if given is None:
            raise UnsupportedMediaType("A request body needs Content-Type: application/json.")
        media_type, _, parameters = given.decode("latin-1").partition(";")
        charset = dict(p.strip().lower().partition("=")[::2] for p in parameters.split(";") if "=" in p).get(
            "charset", "utf-8").strip('"')
        if media_type.strip().lower() != "application/json" or charset != "utf-8":
            raise UnsupportedMediaType()
        return b"application/json"

    async def _read(self, receive) -> bytes:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                raise self._too_large()
            more = message.get("more_body", False)
        return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive):
        sent = False

        async def receiving():
            nonlocal sent
            if sent:
                return await receive()  # after the body: a disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return receiving
