"""The HTTP door: one module per tag of openapi.yaml; each function is an operation (operationId in snake_case).

Handlers take what Connexion validated, call db/, and return a generated model; they hold no rules of their own.
"""

import json
from typing import Callable

import flask
import sqlalchemy as sa
from pydantic import BaseModel

from db import engine, idempotency
from db.audit import record as record_audit
from db.access import Caller
from tiris import jsonify


def caller(token_info: dict) -> Caller:
    return token_info["caller"]


def as_model(cls: type[BaseModel], row: dict) -> BaseModel:
    """The generated model of a row. A NULL is `null` where the contract requires the field (it is then declared
    nullable) and absent where the field is optional."""
    fields = cls.model_fields
    return cls.model_validate({key: value for key, value in row.items()
                               if value is not None or (key in fields and fields[key].is_required())})


def as_page(list_cls: type[BaseModel], item_cls: type[BaseModel], result: tuple[list[dict], str | None]) -> BaseModel:
    rows, next_cursor = result
    items = [as_model(item_cls, row) for row in rows]
    return list_cls(items=items, next_cursor=next_cursor) if next_cursor else list_cls(items=items)


def idempotent_write(who: Caller, body: dict, status: int, operation: Callable[[sa.Connection], BaseModel]):
    """Runs `operation(conn)` in one transaction, honouring the Idempotency-Key header; returns (JSON, status).

    With a key, the request is claimed in the same transaction: the stored response is exactly what the first
    attempt returned, so a retry cannot tell it was replayed.
    """
    key = flask.request.headers.get("Idempotency-Key")
    with engine.transaction() as conn:
        if key:
            request_hash = idempotency.fingerprint(flask.request.method, flask.request.path, body)
            stored = idempotency.claim(conn, who.id, key, request_hash)
            if stored is not None:
                return stored[1], stored[0]
        result = json.loads(jsonify.dumps(operation(conn)))
        if key:
            idempotency.record(conn, who.id, key, status, result)
    return result, status


def audit_trail(conn, type: str, **fields) -> None:
    """Records a security event with the request's client address and trace id."""
    record_audit(conn, type, ip=flask.request.remote_addr, trace_id=flask.request.headers.get("X-Request-ID"),
                 **fields)
