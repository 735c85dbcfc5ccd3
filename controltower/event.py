"""The canonical integration event: field names, limits and validation of one record.

Every source (events API, OTLP spans, files, the simulator's backfill) is normalized into an
`Event` here, so one set of rules decides what is stored. Pure: no I/O, and the clock is
passed in.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import msgspec

from controltower.errors import EventError
from controltower.identity import DEFAULT_IDENTITY_KEYS, identity_values, refusal

Status = Literal["ok", "error", "retry", "dead_letter"]
STATUSES: tuple[str, ...] = get_args(Status)
MAX_ID_LEN = 128
MAX_TEXT_LEN = 16_384
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")

# Every field of the canonical JSON record, in the order of the events table's COPY columns.
FIELDS = (
    "event_id",
    "occurred_at",
    "correlation_id",
    "order_id",
    "channel",
    "flow",
    "stage",
    "status",
    "system",
    "latency_ms",
    "error_code",
    "error_message",
    "attributes",
    "payload",
)
INTERNAL_FIELDS = ("trace_id", "span_id", "parent_span_id")  # set by the span mapping, not by senders
IDENTITY = ("correlation_id", "event_id")
# What makes two records with one identity "the same event": every field but the identity.
CONTENT_FIELDS = ("occurred_at",) + tuple(f for f in FIELDS if f not in (*IDENTITY, "occurred_at")) + INTERNAL_FIELDS


@dataclass(frozen=True)
class Limits:
    max_age: timedelta = timedelta(days=30)
    max_future: timedelta = timedelta(hours=1)
    # attributes indexed as business keys, and how many values one event may carry under each
    key_attributes: tuple[str, ...] = ()
    max_key_values: int = 100
    # attributes that hold a promised deadline, and the years a deadline may fall in
    deadline_attributes: frozenset[str] = frozenset()
    deadline_years: tuple[int, int] = (2000, 2100)
    # keys that join correlation ids into business transactions: one of them (linkable) lets an
    # event come without `channel` (it takes its business transaction's)
    identity_keys: frozenset[str] = frozenset(DEFAULT_IDENTITY_KEYS)
    # derived once: every attribute whose list of values is capped, in the order they are checked
    fanout_kinds: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = (*self.key_attributes, *sorted(self.identity_keys - set(self.key_attributes)))
        object.__setattr__(self, "fanout_kinds", kinds)


@dataclass(slots=True)
class Event:
    event_id: str
    occurred_at: datetime
    correlation_id: str
    channel: str | None  # None only for events carrying an identity key (see parse_event)
    flow: str
    stage: str
    status: str = "ok"
    order_id: str | None = None
    system: str | None = None
    latency_ms: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    payload: Any = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None

    @property
    def milestone(self) -> str:
        return f"{self.flow}.{self.stage}"


def _text(record: dict[str, Any], name: str, *, required: bool, limit: int = MAX_ID_LEN) -> str | None:
    value = record.get(name)
    # fast path for the common case: a short ASCII string without NUL (no further checks needed)
    if type(value) is str and value and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value
    if value is None or value == "":
        if required:
            raise EventError(f"{name}: missing (required)")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventError(f"{name}: expected a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > limit:
        raise EventError(f"{name}: {len(text)} characters, at most {limit} allowed")
    if "\x00" in text:
        raise EventError(f"{name}: contains U+0000, which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(f"{name}: not valid UTF-8") from None
    return text


_SLUGS: dict[str, str] = {}  # valid slugs seen (channels, flows, stages: a small set)


def _slug(record: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = record.get(name)
    if type(value) is str and value in _SLUGS:
        return _SLUGS[value]
    text = _text(record, name, required=required, limit=64)
    if text is None:
        return None
    slug = text.strip().lower()
    if not _SLUG.match(slug):
        raise EventError(
            f'{name}: "{text}" is not a slug (lowercase letters, digits, "_", "-", "."; at most 64)'
        )
    if len(_SLUGS) < 4096:
        _SLUGS[text] = slug
    return slug


def parse_time(value: Any, name: str = "occurred_at") -> datetime:
    """An RFC 3339 timestamp with offset (or an aware datetime) as an aware datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise EventError(f'{name}: "{value[:64]}" is not an RFC 3339 timestamp') from None
    elif value is None:
        raise EventError(f"{name}: missing (required)")
    else:
        raise EventError(f"{name}: expected an RFC 3339 string, got {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventError(f'{name}: "{value}" has no UTC offset (expected e.g. 2026-11-22T09:12:00Z)')
    return moment


def check_time_bounds(moment: datetime, *, now: datetime, limits: Limits, name: str = "occurred_at") -> None:
    if moment > now + limits.max_future:
        raise EventError(
            f"{name}: {moment.isoformat()} is more than {_human(limits.max_future)} in the future"
        )
    if moment < now - limits.max_age:
        raise EventError(
            f"{name}: {moment.isoformat()} is older than the {_human(limits.max_age)} accepted"
        )


# What the SQL reader (`ct_deadline`) and the transaction view agree on: a calendar date, or a
# date and time with an explicit offset. ASCII digits only (`\\d` would take Arabic-Indic ones).
_DEADLINE_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DEADLINE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)", re.DOTALL)
MAX_OFFSET = timedelta(hours=14)  # the widest offset in use (Kiribati); PostgreSQL stops at 15:59


def check_deadline(value: Any, name: str, years: tuple[int, int]) -> None:
    """A deadline attribute must be a date (`YYYY-MM-DD`) or an RFC 3339 timestamp with offset
    whose UTC moment lies within `years` (inclusive), so readers never meet year 1 or 9999."""
    where = f"attributes.{name}"
    if not isinstance(value, str):
        raise EventError(f"{where}: expected a date string (YYYY-MM-DD or RFC 3339), got {type(value).__name__}")
    shown = value[:64]
    moment: datetime | None = None
    try:
        if _DEADLINE_DATE.fullmatch(value):
            years_seen = [date.fromisoformat(value).year]
        elif _DEADLINE_TIME.fullmatch(value):
            moment = datetime.fromisoformat(value)
            offset = moment.utcoffset()
            if offset is None or abs(offset) > MAX_OFFSET:
                raise ValueError("offset")
            years_seen = [moment.year]
        else:
            raise ValueError("format")
    except ValueError:
        raise EventError(
            f'{where}: "{shown}" is not a deadline (expected YYYY-MM-DD or an RFC 3339 timestamp '
            "with an offset of at most 14:00)"
        ) from None
    low, high = years
    if moment is not None and low <= moment.year <= high:
        years_seen.append(moment.astimezone(UTC).year)  # safe: the local year is in range
    if not all(low <= year <= high for year in years_seen):
        raise EventError(f'{where}: "{shown}" lies outside the years {low}..{high} accepted for deadlines')


def check_attributes(attributes: dict[str, Any], limits: Limits) -> None:
    """Fan-out and deadline limits on the attributes that become index rows and SLA promises."""
    cap = limits.max_key_values
    # only a list longer than the cap can break it: look for one before naming the first (rare)
    for value in attributes.values():
        if type(value) is list and len(value) > cap:
            # every identity kind too: `attributes.order_id` is one and is not among the key attributes
            for kind in limits.fanout_kinds:
                value = attributes.get(kind)
                if type(value) is list and len(value) > cap:
                    raise EventError(f"attributes.{kind}: {len(value)} values, more than the {cap} allowed")
            break
    for name in limits.deadline_attributes:
        value = attributes.get(name)
        if value is not None:
            check_deadline(value, name, limits.deadline_years)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_event(record: Any, *, now: datetime, limits: Limits = Limits()) -> Event:
    """Validate one canonical record (a decoded JSON object) into an `Event`, or raise EventError."""
    if not isinstance(record, dict):
        raise EventError(f"record: expected a JSON object, got {type(record).__name__}")
    occurred_at = parse_time(record.get("occurred_at"))
    check_time_bounds(occurred_at, now=now, limits=limits)
    status = record.get("status", "ok")
    if status is None:
        status = "ok"
    if status not in STATUSES:
        raise EventError(f'status: "{status}" is not one of {", ".join(STATUSES)}')
    latency = record.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise EventError(f"latency_ms: expected a number, got {type(latency).__name__}")
        if not math.isfinite(latency) or latency < 0:
            raise EventError(f"latency_ms: {latency} is not a finite number >= 0")
        latency = float(latency)
    attributes = record.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise EventError(f"attributes: expected an object, got {type(attributes).__name__}")
    elif attributes:
        check_attributes(attributes, limits)
    payload = record.get("payload")
    if payload is not None and not isinstance(payload, (dict, list)):
        raise EventError(f"payload: expected an object or array, got {type(payload).__name__}")
    order_id = _text(record, "order_id", required=False)
    channel = _slug(record, "channel", required=False)
    if channel is None and not _carries_identity(order_id, attributes, limits.identity_keys):
        raise EventError(
            "channel: missing (required unless the event carries an identity key: "
            + ", ".join(sorted(limits.identity_keys))
            + ")"
        )
    # each field checked in this order (the first problem is the one named), then positional
    # construction in `Event`'s field order (a third of the cost of keywords)
    event_id = _text(record, "event_id", required=True)
    correlation_id = _text(record, "correlation_id", required=True)
    flow = _slug(record, "flow", required=True)
    stage = _slug(record, "stage", required=True)
    system = _slug(record, "system", required=False)
    error_code = _text(record, "error_code", required=False)
    error_message = _text(record, "error_message", required=False, limit=MAX_TEXT_LEN)
    trace_id = _text(record, "trace_id", required=False, limit=32)
    span_id = _text(record, "span_id", required=False, limit=16)
    parent_span_id = _text(record, "parent_span_id", required=False, limit=16)
    return Event(event_id, occurred_at, correlation_id, channel, flow, stage, status, order_id,  # type: ignore[arg-type]
                 system, latency, error_code, error_message, attributes, payload, trace_id, span_id, parent_span_id)


# -- one-pass decoding -------------------------------------------------------------------------
# The common shape of a canonical record, checked by msgspec in C (`msgspec.convert` of the
# decoded JSON): types, lengths, a known status, a finite latency >= 0, no unknown field.
# `event_from_record` checks the rest in Python (no U+0000, slugs, the time, the containers'
# types, attribute limits, an identity key when `channel` is missing). A record of another shape is decoded as a dict instead, and any rule
# that fails hands the record to `parse_event`, so the rules' order and messages live in one place.
# (msgspec's `pattern` costs a Python call per string: slower than the checks below.)
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
_SlugText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class EventRecord(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A canonical record decoded and type-checked in one pass (see above); not yet an `Event`.
    Not tracked by the cyclic GC (`gc=False`): a batch makes thousands, and none is in a cycle."""

    event_id: _Id
    occurred_at: str
    correlation_id: _Id
    flow: _SlugText
    stage: _SlugText
    channel: _SlugText | None = None
    order_id: _Id | None = None
    status: Status | None = None
    system: _SlugText | None = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)] | None = None
    error_code: _Id | None = None
    error_message: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LEN)] | None = None
    # any value: taken as it is (typed containers would be copied), their type checked in Python
    attributes: Any = None
    payload: Any = None
    trace_id: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    span_id: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] | None = None
    parent_span_id: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] | None = None


def event_from_record(record: EventRecord, *, now: datetime, limits: Limits = Limits()) -> Event:
    """The `Event` of a record msgspec already checked (equal to `parse_event` of its JSON), or
    the EventError `parse_event` raises when a rule left to Python fails."""
    slugs = _SLUGS
    flow, stage = slugs.get(record.flow), slugs.get(record.stage)
    channel = record.channel if record.channel is None else slugs.get(record.channel)
    system = record.system if record.system is None else slugs.get(record.system)
    try:
        if flow is None or stage is None or (channel is None and record.channel is not None) \
                or (system is None and record.system is not None):
            raise ValueError("a slug not seen yet")
        texts = (record.event_id, record.correlation_id, record.order_id or "", record.error_code or "",
                 record.error_message or "", record.trace_id or "", record.span_id or "", record.parent_span_id or "")
        if "\x00" in "".join(texts):
            raise ValueError("U+0000")
        occurred_at = datetime.fromisoformat(record.occurred_at)
        if occurred_at.utcoffset() is None or not now - limits.max_age <= occurred_at <= now + limits.max_future:
            raise ValueError("occurred_at")
        attributes, payload = record.attributes, record.payload
        if attributes is None:
            attributes = {}
        elif type(attributes) is not dict:
            raise ValueError("attributes")
        elif attributes:
            check_attributes(attributes, limits)
        if payload is not None and type(payload) is not dict and type(payload) is not list:
            raise ValueError("payload")
        if channel is None and not _carries_identity(record.order_id, attributes, limits.identity_keys):
            raise ValueError("channel")
    except (ValueError, EventError):
        return parse_event(msgspec.to_builtins(record), now=now, limits=limits)  # names the problem
    # positional, in the field order of `Event` (a third of the cost of keywords)
    return Event(record.event_id, occurred_at, record.correlation_id, channel, flow, stage, record.status or "ok",
                 record.order_id, system, record.latency_ms, record.error_code, record.error_message, attributes,
                 payload, record.trace_id, record.span_id, record.parent_span_id)


def _carries_identity(order_id: str | None, attributes: dict[str, Any], kinds: frozenset[str]) -> bool:
    """Whether the event has a value that can join it to a business transaction."""
    return any(refusal(value) is None for _, value in identity_values(order_id, attributes, kinds))


def event_to_json(event: Event) -> dict[str, Any]:
    """The canonical JSON record of an event (as `POST /v1/events` accepts it)."""
    out: dict[str, Any] = {}
    for name in FIELDS + INTERNAL_FIELDS:
        value = getattr(event, name)
        if name == "occurred_at":
            value = value.isoformat()
        if value is not None and value != {}:
            out[name] = value
    return out
