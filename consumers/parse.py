"""A message from the stream, as the event door receives it, checked against asyncapi.yaml and parsed into the
event's generated model, or the precise reason it can never be applied."""

import json
from dataclasses import dataclass

from pydantic import BaseModel

from consumers.contract import Channel


@dataclass(frozen=True)
class Incoming:
    subject: str
    data: bytes
    msg_id: str | None  # the Nats-Msg-Id header
    stream_seq: int | None
    delivered: int  # how many times JetStream has delivered it


@dataclass(frozen=True)
class Parsed:
    message: Incoming
    event: BaseModel | None  # the generated model of the event, when it is valid
    reason: str | None = None  # why it is not
    event_id: str | None = None  # the payload's, even when the rest of it is invalid

    @property
    def payload(self) -> str:
        return self.message.data.decode("utf-8", "replace")


def parse(message: Incoming, channels: dict[str, Channel]) -> Parsed:
    prefix, _, user_token = message.subject.rpartition(".")
    channel = channels.get(prefix)
    if channel is None:
        return Parsed(message, None, f"no channel in asyncapi.yaml for subject {message.subject}")
    try:
        payload = json.loads(message.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Parsed(message, None, f"malformed JSON: {error}")
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    event_id = event_id if isinstance(event_id, str) else None

    def invalid(reason: str) -> Parsed:
        return Parsed(message, None, reason, event_id)

    if errors := channel.errors(payload):
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in errors[:10])
        return invalid(f"invalid {channel.model.__name__}: {problems}")
    if b"\\u0000" in message.data and (where := _nul_at(payload)):  # JSON writes U+0000 only so escaped
        return invalid(f"{where}: U+0000 is not allowed in a string (the database cannot store it)")
    if payload["event_type"] != channel.event_type:
        return invalid(f"event_type {payload['event_type']} does not belong on {prefix}")
    if payload["user_id"] != user_token:
        return invalid("the subject's user id and the payload's user_id differ")
    if message.msg_id and message.msg_id != event_id:
        return invalid(f"Nats-Msg-Id {message.msg_id!r} and event_id {event_id!r} differ")
    return Parsed(message, channel.model.model_validate(payload), event_id=event_id)


def _nul_at(node, path: str = "$") -> str | None:
    """Where the first U+0000 is, in a string or a key anywhere in the payload; None if nowhere."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, dict):
        for key, value in node.items():
            if "\x00" in key:
                return f"{path}/{key!r}"
            if where := _nul_at(value, f"{path}/{key}"):
                return where
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if where := _nul_at(value, f"{path}/{i}"):
                return where
    return None
