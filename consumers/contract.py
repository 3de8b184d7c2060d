"""What asyncapi.yaml says about each subject: its payload model and its event type.

Read from the contract at start-up, so a new channel needs no code here.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel

from generated import models

ASYNCAPI = Path(__file__).resolve().parent.parent / "asyncapi.yaml"


@dataclass(frozen=True)
class Channel:
    prefix: str  # the subject without its last token, the user id: "trading.orders.filled"
    model: type[BaseModel]

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
    channels = {}
    for channel in document["channels"].values():
        prefix = channel["address"].removesuffix(".{user_id}")
        for message in channel["messages"].values():
            message = _resolve(document, message["$ref"]) if "$ref" in message else message
            payload_ref = message["payload"]["$ref"]
            channels[prefix] = Channel(prefix, getattr(models, payload_ref.rsplit("/", 1)[-1]))
    return channels
