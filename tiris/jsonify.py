"""JSON encoding of responses: exact decimal strings, RFC 3339 UTC times, generated models.

Connexion's default encoder turns Decimal into float, which would put binary rounding into every balance.
"""

import datetime as dt
import json
import uuid
from decimal import Decimal

from connexion.jsonifier import Jsonifier
from pydantic import BaseModel


SCALE = 18  # NUMERIC(38,18): every decimal is written with this many fractional digits


def decimal_string(value: Decimal) -> str:
    """One value, one written form: what a POST echoes (`"10000.50"` as sent) is what a later GET returns (the
    database's `"10000.500000000000000000"`). Never exponent notation (NUMERIC zero reads as Decimal("0E-18"))."""
    return format(value, f".{SCALE}f")


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def to_jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, Decimal):
        return decimal_string(value)
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, (uuid.UUID, dt.date)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Encoder(json.JSONEncoder):
    def default(self, o):
        return to_jsonable(o)


def dumps(value) -> str:
    return json.dumps(value, cls=Encoder, separators=(",", ":"))


JSONIFIER = Jsonifier(json, cls=Encoder, separators=(",", ":"))
