"""Every error leaves in one format: {"error": {code, message, details, trace_id, timestamp}}.

Registered on the Connexion app, so errors raised by its middleware (validation, security, routing) are rendered
here too, not only those raised by handlers.
"""

import datetime as dt
import logging
import re
import time
import uuid

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from db.errors import Conflict, DomainError
from tiris import jsonify
from tiris.errors import SwitchedOff, headers_of, status_of

log = logging.getLogger("tiris.errors")

CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE",
         415: "UNSUPPORTED_MEDIA_TYPE", 422: "UNPROCESSABLE", 429: "RATE_LIMITED", 500: "INTERNAL_ERROR",
         503: "SERVICE_UNAVAILABLE"}
OUTAGE_GAP = 30.0  # seconds without a 503 after which the next one starts a new outage
RETRY_AFTER_UNAVAILABLE = 5  # seconds; an outage of the database or a provider rarely ends sooner
MESSAGES = {401: "A valid bearer token is required.", 404: "No such resource.",
            405: "This method is not allowed here.", 415: "The request body must be application/json."}


def trace_id(request: ConnexionRequest) -> str:
    return request.headers.get("x-request-id") or str(uuid.uuid4())


def envelope(trace_id: str | None, code: str, message: str, details=None) -> str:
    """The one error body. Connexion's errors, handlers' errors, time-outs and the server's own refusals use it."""
    body = {"code": code, "message": message, "trace_id": trace_id or str(uuid.uuid4()),
            "timestamp": jsonify.rfc3339(dt.datetime.now(dt.timezone.utc))}
    if details is not None:
        body["details"] = details
    return jsonify.dumps({"error": body})


def error_headers(status: int, headers: dict | None = None) -> dict:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if status == 503:  # a dependency is down or slow: clients should come back, not hammer it
        headers.setdefault("Retry-After", str(RETRY_AFTER_UNAVAILABLE))
    return headers


def render(request: ConnexionRequest, status: int, code: str, message: str, details=None,
           headers: dict | None = None) -> ConnexionResponse:
    return ConnexionResponse(status_code=status, mimetype="application/json", content_type="application/json",
                             body=envelope(trace_id(request), code, message, details),
                             headers=error_headers(status, headers))


def asgi_error(status: int, code: str, message: str, trace_id: str | None) -> tuple[list, bytes]:
    """The headers and body of an error answered outside Connexion (a time-out, the server's header limit)."""
    headers = [(k.lower().encode(), v.encode()) for k, v in error_headers(status).items()]
    return [(b"content-type", b"application/json"), *headers], envelope(trace_id, code, message).encode()


_last_unavailable = -OUTAGE_GAP


def _log_failure(exc: DomainError) -> None:
    """A 503 means a dependency is down: its traceback is logged once per outage (a run of 503s less than
    OUTAGE_GAP seconds apart, per worker), not once per request; every request still has its own log line."""
    global _last_unavailable
    if isinstance(exc, SwitchedOff):
        return  # configuration, not a failure: the request's own log line says it
    if status_of(exc) == 503:
        now, last = time.monotonic(), _last_unavailable
        _last_unavailable = now
        if now - last < OUTAGE_GAP:
            return
        log.error("dependency unavailable: %s (next tracebacks of this outage are not logged)", exc.code,
                  exc_info=exc)
        return
    log.error("request failed: %s", exc.code, exc_info=exc)


def domain_error(request: ConnexionRequest, exc: DomainError) -> ConnexionResponse:
    status = status_of(exc)
    if status >= 500:
        _log_failure(exc)
    return render(request, status, exc.code, exc.message, exc.details, headers_of(exc))


def problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    status = exc.status or 500
    message = MESSAGES.get(status) or exc.detail or exc.title or "The request failed."
    details = [{"field": "$", "issue": exc.detail}] if status == 400 and exc.detail else None
    return render(request, status, CODES.get(status, "ERROR"), message, details, exc.headers)


class MethodsBySpec:
    """The methods openapi.yaml declares for a concrete path, for the Allow header of a 405.

    Connexion routes each operation on its own, so the router's own Allow lists only the first route it matched.
    """

    def __init__(self, spec_paths: dict):
        self.routes = [(re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"),
                        sorted(m.upper() for m in item if m in {"get", "post", "put", "patch", "delete"}))
                       for path, item in spec_paths.items()]

    def __call__(self, path: str) -> list[str] | None:
        for pattern, methods in self.routes:
            if pattern.match(path):
                return methods
        return None


def http_error_for(allowed: MethodsBySpec):
    def http_error(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
        message = MESSAGES.get(exc.status_code) or exc.detail or "The request failed."
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (methods := allowed(request.url.path)):
            headers["Allow"] = ", ".join(methods + (["HEAD"] if "GET" in methods else []))
        return render(request, exc.status_code, CODES.get(exc.status_code, "ERROR"), message, headers=headers)
    return http_error


def integrity_error(request: ConnexionRequest, exc: IntegrityError) -> ConnexionResponse:
    # A unique index lost a race the handler's own check could not see; the row was not written.
    if getattr(exc.orig, "sqlstate", None) == "23505":
        return domain_error(request, Conflict("A resource with these values already exists.", code="DUPLICATE"))
    return unhandled(request, exc)


def unhandled(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error", exc_info=exc)
    return render(request, 500, "INTERNAL_ERROR", "An unexpected error occurred.")


def register(app, spec_paths: dict) -> None:
    app.add_error_handler(DomainError, domain_error)
    app.add_error_handler(ProblemException, problem)
    app.add_error_handler(HTTPException, http_error_for(MethodsBySpec(spec_paths)))
    app.add_error_handler(IntegrityError, integrity_error)
    app.add_error_handler(Exception, unhandled)
