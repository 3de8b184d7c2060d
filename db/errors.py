"""What the core says when it will not do something. Nothing here knows of HTTP or of NATS: each door maps a kind
to its own answer (tiris/errors.py holds the HTTP status table; consumers/ dead-letters or retries).
"""

import typing as t


class DomainError(Exception):
    code = "ERROR"
    message = "The operation failed."

    def __init__(self, message: str | None = None, *, code: str | None = None, details: t.Any = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.details = details


class Invalid(DomainError):
    """The input breaks a rule the contract could not state (an unreadable cursor, a range the wrong way round)."""
    code = "VALIDATION_ERROR"
    message = "The request is invalid."


class Denied(DomainError):
    """The credentials, or the session behind them, are not (or no longer) valid."""
    code = "UNAUTHORIZED"
    message = "A valid bearer token is required."


class Forbidden(DomainError):
    """The caller is known but their role does not allow it."""
    code = "FORBIDDEN"
    message = "This operation needs the admin role."


class NotFound(DomainError):
    """Missing, deleted, or someone else's: the three are one answer so that ids leak nothing."""
    code = "NOT_FOUND"
    message = "Not found."


class Conflict(DomainError):
    """The state of the resource rules it out (a duplicate name, a transition that happened already)."""
    code = "CONFLICT"
    message = "The request conflicts with the current state."


class Refused(DomainError):
    """A business rule of the ledger refuses it; `code` names the rule."""
    code = "UNPROCESSABLE"
    message = "A business rule refuses the operation."


class InsufficientBalance(Refused):
    code = "INSUFFICIENT_BALANCE"
    message = "The available balance is smaller than the debit."


class Unavailable(DomainError):
    """A dependency (the database) is down or timed out; the same request may succeed later."""
    code = "SERVICE_UNAVAILABLE"
    message = "A dependency of the service is unavailable; try again shortly."


def field_error(field: str, issue: str) -> dict[str, str]:
    return {"field": field, "issue": issue}
