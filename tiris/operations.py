"""What the middleware needs to know about each operation of openapi.yaml, looked up by operationId."""

from dataclasses import dataclass

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # the OpenAPI path template, e.g. /v1/sub-accounts/{sub_account_id}
    rate_limit: str | None  # the `x-rate-limit` class; `api` for other /v1 operations, None outside /v1


def by_id(spec_paths: dict) -> dict[str, Operation]:
    found = {}
    for route, item in spec_paths.items():
        for method, operation in item.items():
            if method in METHODS:
                rate_limit = operation.get("x-rate-limit", "api") if route.startswith("/v1/") else None
                found[operation["operationId"]] = Operation(method.upper(), route, rate_limit)
    return found
