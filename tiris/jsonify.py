"""JSON encoding of responses: exact decimal strings, RFC 3339 UTC times, generated models.

Connexion's default encoder turns Decimal into float, which would put binary rounding into every balance.
"""

import json

from connexion.jsonifier import Jsonifier
from pydantic import BaseModel

from db.written import SCALE, decimal_string, plain, rfc3339  # noqa: F401 - the written forms, re-exported


def to_jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return plain(value)


class Encoder(json.JSONEncoder):
    def default(self, o):
        return to_jsonable(o)


def dumps(value) -> str:
    return json.dumps(value, cls=Encoder, separators=(",", ":"))


JSONIFIER = Jsonifier(json, cls=Encoder, separators=(",", ":"))
