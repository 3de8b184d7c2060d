"""What asyncapi.yaml says about each subject: its payload schema, model and event type.

Read from the contract at start-up, so a new channel needs no code here. Payloads are checked with JSON Schema
against the contract itself: pydantic's Decimal drops the decimal-string patterns, and an event door that took
`"fee": "-1"` or a float amount would let a bot mint money. The same merged schemas are what tools/generate.py
makes generated/models.py from.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import jsonschema_rs
import yaml
from jsonschema import Draft7Validator, FormatChecker
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI = ROOT / "asyncapi.yaml"
LOCAL_PREFIXES = ("#/components/schemas/", "openapi.yaml#/components/schemas/", "./openapi.yaml#/components/schemas/")


def _rewrite_refs(node):
    """Points every schema reference at the merged document's `$defs`."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                for prefix in LOCAL_PREFIXES:
                    if value.startswith(prefix):
                        value = "#/$defs/" + value[len(prefix):]
                        break
            out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _nullable(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it (`type: [T, "null"]`), which the generator reads."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is not True:
        return out
    if "type" in out:
        out["type"] = [out["type"], "null"]
        return out
    notes = {key: out.pop(key) for key in ("description", "example") if key in out}
    return {"anyOf": [out, {"type": "null"}], **notes}  # a reference (allOf) that may also be null


def merged_schemas() -> dict:
    """The schemas of openapi.yaml and asyncapi.yaml as one JSON Schema document (`$defs`): a schema both contracts
    use (asyncapi.yaml refers to openapi.yaml's) is one definition. ValueError when a name has two definitions."""
    defs: dict = {}
    for name in ("openapi.yaml", "asyncapi.yaml"):
        path = ROOT / name
        if not path.exists():
            continue
        schemas = (yaml.safe_load(path.read_text()).get("components") or {}).get("schemas") or {}
        for key, schema in schemas.items():
            if "$ref" in schema and len(schema) == 1:
                continue  # an alias of a schema defined in the other contract
            if key in defs and defs[key] != schema:
                raise ValueError(f"schema {key!r} is defined differently in two contracts; define it once")
            defs[key] = schema
    return {"title": "TirisContracts", "type": "object", "$defs": _nullable(_rewrite_refs(defs))}


@dataclass(frozen=True)
class Channel:
    prefix: str  # the subject without its last token, the user id: "trading.orders.filled"
    model: type[BaseModel]
    validator: Draft7Validator
    fast: jsonschema_rs.Draft7Validator  # the same schema and format checks, compiled: ~100x faster

    def errors(self, payload) -> list:
        """What is wrong with the payload, most general first; the slow validator only words a refusal."""
        if self.fast.is_valid(payload):
            return []
        return sorted(self.validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path)))

    @property
    def event_type(self) -> str:
        return self.prefix.removeprefix("trading.")


def _resolve(document: dict, ref: str) -> dict:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _inline(node, defs: dict, seen: tuple = ()):
    """The schema with its local references replaced by what they name (a recursive one is left as a reference).

    Same meaning (Draft 7 ignores a reference's siblings), but validation no longer resolves a reference for every
    field of every event, which was most of the consumer's time spent checking payloads.
    """
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref not in seen:
        return _inline(defs[ref.removeprefix("#/$defs/")], defs, (*seen, ref))
    return {key: _inline(value, defs, seen) for key, value in node.items()}


def received_channels(document: dict) -> dict[str, dict]:
    """The channels the service receives from NATS (by name): those of the `receive` operations on the `nats`
    server. The document also describes the live feed's WebSocket and the webhooks, which are not the consumer's."""
    names = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in document["operations"].values()
             if op["action"] == "receive"}
    return {name: channel for name, channel in document["channels"].items()
            if name in names and {"$ref": "#/servers/nats"} in channel.get("servers", [])}


def load_channels() -> dict[str, Channel]:
    # Imported here: tools/generate.py imports this module to write generated/, which may be missing or stale then.
    from generated import models

    document = yaml.safe_load(ASYNCAPI.read_text())
    contract = merged_schemas()
    checker = FormatChecker()
    # A pure check, and a batch names the same ids again and again (users, exchanges, sub-accounts): remembered.
    conforms = functools.lru_cache(maxsize=8192)(lambda name, value: checker.conforms(value, name))
    channels = {}
    for channel in received_channels(document).values():
        prefix = channel["address"].removesuffix(".{user_id}")
        for message in channel["messages"].values():
            message = _resolve(document, message["$ref"]) if "$ref" in message else message
            name = message["payload"]["$ref"].rsplit("/", 1)[-1]
            schema = {"$defs": contract["$defs"], **_inline(contract["$defs"][name], contract["$defs"])}
            # Formats are the one checker's in both, so both validators accept exactly the same payloads.
            fast = jsonschema_rs.Draft7Validator(schema, validate_formats=True, formats={
                name: functools.partial(conforms, name) for name in checker.checkers})
            channels[prefix] = Channel(prefix, getattr(models, name), Draft7Validator(schema, format_checker=checker),
                                       fast)
    return channels
