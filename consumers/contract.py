"""What asyncapi.yaml says about each subject: its payload schema, model and event type.

Read from the contract at start-up, so a new channel needs no code here. Payloads are checked with JSON Schema
against the contract itself: pydantic's Decimal drops the decimal-string patterns, and an event door that took
`"fee": "-1"` or a float amount would let a bot mint money.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from jsonschema import Draft7Validator, FormatChecker
from pydantic import BaseModel

from generated import models
from tools.generate import merged_schemas

ASYNCAPI = Path(__file__).resolve().parent.parent / "asyncapi.yaml"


@dataclass(frozen=True)
class Channel:
    prefix: str  # the subject without its last token, the user id: "trading.orders.filled"
    model: type[BaseModel]
    validator: Draft7Validator

    @property
    def event_type(self) -> str:
        return self.prefix.removeprefix("trading.")


def _resolve(document: dict, ref: str) -> dict:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def load_channels() -> dict[str, Channel]:
    document = yaml.safe_load(ASYNCAPI.read_text())
    contract = merged_schemas()
    checker = FormatChecker()
    channels = {}
    for channel in document["channels"].values():
        prefix = channel["address"].removesuffix(".{user_id}")
        for message in channel["messages"].values():
            message = _resolve(document, message["$ref"]) if "$ref" in message else message
            name = message["payload"]["$ref"].rsplit("/", 1)[-1]
            schema = {"$defs": contract["$defs"], "$ref": f"#/$defs/{name}"}
            channels[prefix] = Channel(prefix, getattr(models, name), Draft7Validator(schema, format_checker=checker))
    return channels
