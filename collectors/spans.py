"""Spans to canonical records: the pure mapping from an OTLP trace request to event dicts.

Applies the rules of ARCHITECTURE.md "Spans (OTLP)": ids, times, status and the `retail.*`
attributes a span (or its resource) carries, plus one more record per `retail.milestone` span
event. Spans that are not integration steps are rejected with a reason naming the span. It
does not validate time bounds or field formats: `controltower.event.parse_event` does, later.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collectors.instrument import (
    ATTR_CHANNEL,
    ATTR_CORRELATION_ID,
    ATTR_ERROR_CODE,
    ATTR_FLOW,
    ATTR_ORDER_ID,
    ATTR_PREFIX,
    ATTR_STAGE,
    ATTR_STATUS,
    ATTR_SYSTEM,
    MILESTONE_EVENT,
)
from collectors.otlp import REJECTED_ATTR
from controltower.event import STATUSES

# retail.* attributes that map to record fields; every other retail.* one goes to `attributes`.
_FIELDS = {
    ATTR_CORRELATION_ID: "correlation_id",
    ATTR_ORDER_ID: "order_id",
    ATTR_CHANNEL: "channel",
    ATTR_FLOW: "flow",
    ATTR_STAGE: "stage",
    ATTR_SYSTEM: "system",
    ATTR_STATUS: "status",
    ATTR_ERROR_CODE: "error_code",
}
# Where a correlation id may sit, best first: the helper's attribute, then baggage that other
# instrumentation copied into span attributes (baggage itself is not exported with spans).
_CORRELATION_KEYS = (ATTR_CORRELATION_ID, "baggage.correlation.id", "correlation.id")
# (a span without retail.channel is an integration step still: validation then demands an
# identity key it can take its business transaction's channel from, like any event)
_REQUIRED = (ATTR_FLOW, ATTR_STAGE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_SLUG = re.compile(r"[^a-z0-9_.\-]+")


@dataclass(slots=True)
class SpanMapping:
    """Canonical records (not yet validated), one reason per rejected span, and spans seen."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    span_count: int = 0


class _Rejected(Exception):
    pass


def map_request(request: ExportTraceServiceRequest) -> SpanMapping:
    """Map every span of an OTLP trace request to canonical records or a rejection reason."""
    mapping = SpanMapping()
    for resource_spans in request.resource_spans:
        resource = attribute_dict(resource_spans.resource.attributes)
        defaults = {k: v for k, v in resource.items() if k.startswith(ATTR_PREFIX)}
        service = resource.get("service.name")
        if isinstance(service, str) and service.startswith("unknown_service"):
            service = None  # the SDK's placeholder when no service name was configured
        service = service_slug(service)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                mapping.span_count += 1
                try:
                    mapping.records.extend(_map_span(span, defaults, service))
                except _Rejected as exc:
                    name = span.name if len(span.name) <= 80 else span.name[:79] + "…"
                    mapping.rejected.append(f'span {span.span_id.hex() or "-"} ("{name}"): {exc}')
    return mapping


def _map_span(span: Span, defaults: dict[str, Any], service: Any) -> list[dict[str, Any]]:
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    own = attribute_dict(span.attributes)  # one pass over the attributes (the hot loop)
    if REJECTED_ATTR in own:
        for kv in span.attributes:
            if kv.key == REJECTED_ATTR:  # a span `otlp` could not decode; the value says why
                raise _Rejected(kv.value.string_value or "could not be decoded")
    if len(span.trace_id) != 16 or not span.trace_id.strip(b"\0"):
        raise _Rejected(f"trace id {trace_id!r} is not 16 bytes and non-zero")
    if len(span.span_id) != 8 or not span.span_id.strip(b"\0"):
        raise _Rejected(f"span id {span_id!r} is not 8 bytes and non-zero")
    if span.parent_span_id and len(span.parent_span_id) != 8:
        raise _Rejected(f"parent span id {span.parent_span_id.hex()!r} is not 8 bytes")
    attributes = {**defaults, **own}
    missing = [key for key in _REQUIRED if _blank(attributes.get(key))]
    if missing:
        names = (
            " or ".join(missing)
            if len(missing) < 3
            else f"{missing[0]}, {missing[1]} or {missing[2]}"
        )
        raise _Rejected(f"no {names} attribute (not an integration step)")

    correlation_id = next(
        (attributes[key] for key in _CORRELATION_KEYS if not _blank(attributes.get(key))), trace_id
    )
    span_status = "error" if span.status.code == Status.STATUS_CODE_ERROR else "ok"
    exception = _last_exception(span)
    record: dict[str, Any] = {
        "event_id": trace_id + span_id,
        "occurred_at": _time(span.end_time_unix_nano),
        "correlation_id": correlation_id,
        "order_id": attributes.get(ATTR_ORDER_ID),
        "channel": None if _blank(attributes.get(ATTR_CHANNEL)) else attributes[ATTR_CHANNEL],
        "flow": attributes[ATTR_FLOW],
        "stage": attributes[ATTR_STAGE],
        "status": _status(attributes.get(ATTR_STATUS), span_status),
        "system": attributes.get(ATTR_SYSTEM) or service,
        "latency_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "error_code": attributes.get(ATTR_ERROR_CODE) or exception.get("exception.type"),
        "error_message": span.status.message or exception.get("exception.message") or None,
        "attributes": _extras(attributes),
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": span.parent_span_id.hex() or None,
    }
    records = [_compact(record)]
    for index, event in enumerate(span.events):
        if event.name != MILESTONE_EVENT:
            continue
        marks = attribute_dict(event.attributes)
        if _blank(marks.get(ATTR_STAGE)):
            continue
        milestone = {
            **record,
            "event_id": f"{trace_id}{span_id}-m{index}",
            "occurred_at": _time(event.time_unix_nano),
            "flow": record["flow"] if _blank(marks.get(ATTR_FLOW)) else marks[ATTR_FLOW],
            "stage": marks[ATTR_STAGE],
            "status": _status(marks.get(ATTR_STATUS), "ok"),
            "attributes": {**record["attributes"], **_extras(marks)},
            "latency_ms": None,
            "error_code": None,
            "error_message": None,
        }
        records.append(_compact(milestone))
    return records


def service_slug(service: Any) -> str | None:
    """A `system` slug from a free-text `service.name`: "Checkout API v2" → "checkout-api-v2".

    Service names are free text in OpenTelemetry, the `system` field is a slug: derive one
    instead of rejecting the span. None when nothing usable is left.
    """
    if not isinstance(service, str):
        return None
    text = unicodedata.normalize("NFKC", service).strip().lower()
    slug = _NOT_SLUG.sub("-", text).strip("-_.")[:64].rstrip("-_.")
    return slug or None


def attribute_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP `KeyValue`s as a plain dict (later keys win, as in the SDK)."""
    out: dict[str, Any] = {}
    for kv in attributes:
        value = kv.value
        # nearly every attribute is a string: one oneof test, no call (the hot loop of OTLP ingest)
        out[kv.key] = value.string_value if value.WhichOneof("value") == "string_value" else any_value(value)
    return out


def any_value(value: AnyValue) -> Any:
    """An OTLP `AnyValue` as a JSON-able Python value (bytes as lowercase hex)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":  # nearly every attribute: skip the other comparisons
        return value.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_dict(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _last_exception(span: Span) -> dict[str, Any]:
    """The attributes of the span's last `exception` event (the one that ended it, if any)."""
    for event in reversed(span.events):
        if event.name == "exception":
            return attribute_dict(event.attributes)
    return {}


def _status(value: Any, default: str) -> str:
    if isinstance(value, str) and value.strip().lower() in STATUSES:
        return value.strip().lower()
    return default


def _extras(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        key[len(ATTR_PREFIX) :]: value
        for key, value in attributes.items()
        if key.startswith(ATTR_PREFIX) and key not in _FIELDS
    }


def _time(nanoseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if value is not None}
