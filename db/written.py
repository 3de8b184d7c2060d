"""How the API writes values in JSON, for every writer of it (responses, and the live feed written by db/).

One value has one written form: a decimal always with 18 fractional digits, never exponent notation; a time in
RFC 3339, UTC, with `Z`.
"""

import datetime as dt
import uuid
from decimal import Decimal

SCALE = 18  # NUMERIC(38,18): every decimal is written with this many fractional digits


def decimal_string(value: Decimal) -> str:
    """What a POST echoes (`"10000.50"` as sent) is what a later GET returns (the database's
    `"10000.500000000000000000"`). Never exponent notation (NUMERIC zero reads as Decimal("0E-18"))."""
    return format(value, f".{SCALE}f")


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def plain(value):
    """A value json cannot write by itself, as the API writes it; TypeError for anything else."""
    if isinstance(value, Decimal):
        return decimal_string(value)
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, (uuid.UUID, dt.date)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
