"""The HTTP door's errors: the one status table for the core's domain errors, and the errors born at the door itself
(a malformed request, a bad token, a login provider that failed). All are rendered once, in tiris.error_handlers.
"""

from db import errors as domain


class ApiError(domain.DomainError):
    """An error of the HTTP door itself, with its status; the core never raises these."""
    status = 500
    code = "INTERNAL_ERROR"
    message = "An unexpected error occurred."

    def __init__(self, message: str | None = None, *, code: str | None = None, details=None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, code=code, details=details)
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    code = "VALIDATION_ERROR"
    message = "The request is invalid."


class Unauthorized(ApiError):
    status = 401
    code = "UNAUTHORIZED"
    message = "A valid bearer token is required."


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    message = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    message = "The request body must be application/json."


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"
    message = "Too many requests; retry after the number of seconds in Retry-After."


class BadGateway(ApiError):
    status = 502
    code = "PROVIDER_ERROR"
    message = "The login provider answered with an error."


class ServiceUnavailable(ApiError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    message = "A dependency of the service is unavailable; try again shortly."


class SwitchedOff(ServiceUnavailable):
    """A 503 because this deployment turned the feature off: nothing is down, so it is not logged as an outage."""


# The core's kinds of refusal, as HTTP statuses (DESIGN §3); the most specific class listed wins.
STATUS: dict[type[domain.DomainError], int] = {
    domain.Invalid: 400, domain.Denied: 401, domain.Forbidden: 403, domain.NotFound: 404, domain.Conflict: 409,
    domain.Refused: 422, domain.Unavailable: 503,
}


def status_of(error: domain.DomainError) -> int:
    if isinstance(error, ApiError):
        return error.status
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 500)


def headers_of(error: domain.DomainError) -> dict[str, str]:
    return getattr(error, "headers", {})
