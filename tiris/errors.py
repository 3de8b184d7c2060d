"""The service's errors. Raised anywhere (db/, handlers, middleware); rendered once, in tiris.error_handlers."""

import typing as t


class ApiError(Exception):
    status = 500
    code = "INTERNAL_ERROR"
    message = "An unexpected error occurred."

    def __init__(self, message: str | None = None, *, code: str | None = None, details: t.Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    code = "VALIDATION_ERROR"
    message = "The request is invalid."


class Unauthorized(ApiError):
    status = 401
    code = "UNAUTHORIZED"
    message = "A valid bearer token is required."


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"
    message = "This operation needs the admin role."


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"
    message = "Not found."


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    message = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    message = "The request body must be application/json."


class Unprocessable(ApiError):
    status = 422
    code = "UNPROCESSABLE"


class InsufficientBalance(Unprocessable):
    code = "INSUFFICIENT_BALANCE"
    message = "The available balance is smaller than the debit."


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


def field_error(field: str, issue: str) -> dict[str, str]:
    return {"field": field, "issue": issue}
