"""The application factory: where a request goes in.

Request path: the middleware of tiris.middleware (trace id, security headers, log line and time limit, CORS, the
request guard) -> Connexion (routing, security from tiris.auth, validation from tiris.validation, both driven by
openapi.yaml) -> the operation's function in handlers/ -> db/. The rate limiter runs between Connexion's security
and validation layers, where the operation and the user are known.
"""

import re
from pathlib import Path

import connexion
import flask
import yaml
from connexion.context import context as operation_context
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.middleware.cors import CORSMiddleware

from db import crypto, engine, feed, replica
from tiris import cache, config, error_handlers, jsonify, logs, metrics, middleware, operations, ratelimit, stream
from tiris.validation import VALIDATOR_MAP

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def handler_name(operation_id: str) -> str:
    """camelCase operationIds (what client generators want) name snake_case functions in handlers/."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


class SnakeCaseResolver(Resolver):
    @staticmethod
    def name_of(controller: str, operation_id: str) -> str:
        return f"{controller}.{handler_name(operation_id)}"

    def resolve_operation_id(self, operation) -> str:
        return self.name_of(operation.router_controller, operation.operation_id)


def create_app(settings: config.Settings | None = None) -> connexion.FlaskApp:
    settings = config.use(settings or config.load())
    logs.setup(settings.log_level)
    metrics.watch_pool(engine.configure(settings), settings.db_pool_size)
    crypto.configure(settings)
    feed.configure(settings.feed_enabled)
    cache.configure(settings.database_url, settings.cache_ttl)
    replica.configure(settings, lambda server, reason: metrics.DB_READS.labels(server, reason).inc())
    spec_paths = yaml.safe_load(SPEC.read_text())["paths"]
    by_handler = operations.by_handler(spec_paths, lambda operation: SnakeCaseResolver.name_of(
        operation["x-openapi-router-controller"], operation["operationId"]))
    app = connexion.FlaskApp(__name__, jsonifier=jsonify.JSONIFIER)
    app.add_api(SPEC, resolver=SnakeCaseResolver(), validator_map=VALIDATOR_MAP, strict_validation=True,
                swagger_ui_options=SwaggerUIOptions(spec_path="/v1/openapi.json", swagger_ui_path="/v1/ui",
                                                    # the names the generated clients give the operations
                                                    swagger_ui_config={"displayOperationId": True}))
    error_handlers.register(app, spec_paths)
    if replica.enabled():
        app.app.after_request(_remember_write)
    # Each add at BEFORE_EXCEPTION lands inside the ones added before it.
    app.add_middleware(middleware.RequestIdMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(middleware.SecurityHeaders, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(middleware.RequestObserver, position=MiddlewarePosition.BEFORE_EXCEPTION, operations=by_handler,
                       timeout=settings.request_timeout)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                           allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                                           "X-RateLimit-Reset"], max_age=600)
    app.add_middleware(ratelimit.RateLimitMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION,
                       operations=by_handler, settings=settings)
    app.add_middleware(middleware.RequestGuard, position=MiddlewarePosition.BEFORE_ROUTING,
                       max_body=settings.max_body_bytes)
    # The live feed (SSE and WebSocket), served asynchronously after routing, security, rate limits and validation.
    app.add_middleware(stream.StreamMiddleware, position=MiddlewarePosition.BEFORE_CONTEXT)
    return app


def _remember_write(response: flask.Response) -> flask.Response:
    """After a successful write by a user, and before its answer leaves: the user's next reads see it (db/replica)."""
    if flask.request.method not in ("GET", "HEAD", "OPTIONS") and response.status_code < 400:
        user = operation_context.get("user")
        if user:
            replica.wrote(user)
    return response
