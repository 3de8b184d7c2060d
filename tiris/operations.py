"""What the middleware needs to know about each operation of openapi.yaml.

Connexion's routing leaves the resolved function's name (e.g. handlers.users.get_current_user) in the scope, so
operations are looked up by that name; `resolve` is the resolver's naming rule.
"""

from dataclasses import dataclass
from typing import Callable

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # the OpenAPI path template, e.g. /v1/sub-accounts/{sub_account_id}
    rate_limit: str | None  # the `x-rate-limit` class; `api` for other /v1 operations, None outside /v1


def by_handler(spec_paths: dict, resolve: Callable[[dict], str]) -> dict[str, Operation]:
    found = {}
    for route, item in spec_paths.items():
        for method, operation in item.items():
            if method in METHODS:
                rate_limit = operation.get("x-rate-limit", "api") if route.startswith("/v1/") else None
                found[resolve(operation)] = Operation(method.upper(), route, rate_limit)
    return found
