"""A broker message, whatever the broker, and how it becomes canonical records. Pure.

Both brokers' adapters turn a delivery into a `Message` (body, headers, the broker's message
id, the replay header, the adapter's own handle for acknowledging it). `records_of` decodes it:
`format: canonical` takes what POST /v1/events takes (one event, an array, `{"events": [...]}`,
NDJSON); `format: mapped` takes one JSON object through the tap's mapping. A record without an
`event_id` gets the broker's message id (RabbitMQ `message_id`, NATS `Nats-Msg-Id`), else a hash
of the body (`#i` appended when one message carries several), so a redelivered message is the
same event. A replayed message (`x-controltower-replay-of` / `Controltower-Replay-Of`) puts the
id it replays into `attributes.replay_of`. A message that cannot be read gets a reason instead
(for the quarantine); nothing here talks to a broker or the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from collectors.bodies import BodyError, decode_record, parse_events
from collectors.taps.config import TapConfig
from collectors.taps.mapping import MappingError

MAX_MESSAGE_BYTES = 1 << 20  # one message is a handful of events: 1 MiB is far above any real one
RABBIT_REPLAY_HEADER = "x-controltower-replay-of"
NATS_REPLAY_HEADER = "Controltower-Replay-Of"
NATS_ID_HEADER = "Nats-Msg-Id"
MAX_ID = 128  # event_id length the store accepts


@dataclass
class Message:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    replay_of: str | None = None
    handle: Any = None  # the adapter's: a delivery tag, a nats Msg


@dataclass
class Decoded:
    records: list[dict[str, Any]]
    problem: str | None = None  # why (part of) the message cannot be stored: it goes to quarantine


def header_text(value: Any) -> str | None:
    """A header value as text (pika hands long strings as bytes or str)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def replay_id(value: str | None) -> str | None:
    """The replay header as an id: printable characters only (a U+0000 or a bidi override from a
    hostile header would get the whole message quarantined, or spoof the story), at most MAX_ID."""
    if not value:
        return None
    return "".join(c for c in value if c.isprintable())[:MAX_ID].strip() or None


def body_id(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()[:40]


def records_of(message: Message, tap: TapConfig) -> Decoded:
    if len(message.body) > MAX_MESSAGE_BYTES:
        return Decoded([], f"message is {len(message.body)} bytes, more than the {MAX_MESSAGE_BYTES} a tap reads")
    if tap.format == "mapped":
        assert tap.mapping is not None
        value, error = decode_record(message.body)
        if error:
            return Decoded([], error)
        try:
            raw = [tap.mapping.apply(value)]
        except MappingError as exc:
            return Decoded([], str(exc))
        errors: dict[int, str] = {}
    else:
        try:
            raw, errors = parse_events(message.body)
        except BodyError as exc:
            return Decoded([], str(exc))
    records: list[dict[str, Any]] = []
    problem = None
    base = message.message_id[:MAX_ID - 8] if message.message_id else body_id(message.body)
    for i, record in enumerate(raw):
        if i in errors or not isinstance(record, dict):
            problem = problem or (f"record {i}: {errors[i]}" if i in errors else
                                  f"record {i}: expected a JSON object, got {type(record).__name__}")
            continue
        if not record.get("event_id"):
            record["event_id"] = base if len(raw) == 1 else f"{base}#{i}"
        replay_of = replay_id(message.replay_of)
        if replay_of:
            attributes = record.setdefault("attributes", {})
            if isinstance(attributes, dict):
                attributes["replay_of"] = replay_of
        records.append(record)
    return Decoded(records, problem)
