"""The application factory: where a request goes in.

Request path: RequestIdMiddleware -> SecurityHeaders -> RequestObserver (log line, metrics, time limit) -> CORS ->
Connexion (routing, security from tiris.auth, validation from
tiris.validation, both driven by openapi.yaml) -> the operation's function in handlers/ -> db/. The rate limiter runs
between Connexion's security and validation layers, where the operation and the user are known.
"""

import re
import uuid
from pathlib import Path

import connexion
import yaml
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.middleware.cors import CORSMiddleware

from db import crypto, engine
from tiris import cache, config, error_handlers, jsonify, logs, metrics, operations, ratelimit, web
from db.errors import NotFound
from tiris.validation import VALIDATOR_MAP

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


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

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


class ControlCharacterGuard:
    """Answers 404 for a path with control characters (e.g. an encoded newline in an id).

    Connexion's router does not match such a path, but Flask's does, and then calls the operation without
    Connexion's context: a 500 instead of the 404 the path deserves.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in scope["path"]):
            raise NotFound("No such resource.")
        await self.app(scope, receive, send)


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
    cache.configure(settings.database_url, settings.cache_ttl)
    spec_paths = yaml.safe_load(SPEC.read_text())["paths"]
    by_handler = operations.by_handler(spec_paths, lambda operation: SnakeCaseResolver.name_of(
        operation["x-openapi-router-controller"], operation["operationId"]))
    app = connexion.FlaskApp(__name__, jsonifier=jsonify.JSONIFIER)
    app.add_api(SPEC, resolver=SnakeCaseResolver(), validator_map=VALIDATOR_MAP, strict_validation=True,
                swagger_ui_options=SwaggerUIOptions(spec_path="/v1/openapi.json", swagger_ui_path="/v1/ui",
                                                    # the names the generated clients give the operations
                                                    swagger_ui_config={"displayOperationId": True}))
    error_handlers.register(app, spec_paths)
    # Each add at BEFORE_EXCEPTION lands inside the ones added before it.
    app.add_middleware(RequestIdMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(web.SecurityHeaders, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(web.RequestObserver, position=MiddlewarePosition.BEFORE_EXCEPTION, operations=by_handler,
                       timeout=settings.request_timeout)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION,
                           allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                                           "X-RateLimit-Reset"], max_age=600)
    app.add_middleware(ratelimit.RateLimitMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION,
                       operations=by_handler, settings=settings)
    app.add_middleware(ControlCharacterGuard, position=MiddlewarePosition.BEFORE_ROUTING)
    return app
