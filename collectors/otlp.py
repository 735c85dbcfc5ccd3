"""The OTLP/HTTP trace wire format: request bodies in, export responses out.

Decodes an already decompressed `ExportTraceServiceRequest` from protobuf or OTLP/JSON and
encodes the `ExportTraceServiceResponse`. It knows nothing about spans' meaning (that is
`spans`) nor about HTTP status codes (that is `http`).

One bad span never costs its neighbours: when the whole message does not decode (protobuf
refuses invalid UTF-8 in any string field; OTLP/JSON may carry one malformed span), the
request is taken apart span by span, and each span that cannot be read is replaced by a
placeholder carrying `REJECTED_ATTR` with the reason, which `spans.map_request` reports in
`partial_success`. Only a body whose outer framing is unreadable is an `OTLPDecodeError`.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from collectors.bodies import cut_deep
from controltower.errors import ControlTowerError

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)
# A span attribute set only on placeholders for spans that could not be decoded; its value is
# the reason. A sender setting it rejects only its own span.
REJECTED_ATTR = "controltower.rejected"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
# OTLP/JSON writes these bytes fields as hex, where protobuf's JSON mapping expects base64.
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
# Protobuf field numbers (opentelemetry-proto trace.proto / common.proto).
_SPAN_FIELDS = {5: "name", 9: "attributes", 11: "events", 13: "links", 15: "status", 3: "trace_state"}
_PARTS: dict[str, type[Message]] = {"events": Span.Event, "links": Span.Link, "status": Status}
_JSON_CUT_DEPTH = 64  # OTLP/JSON levels kept when a body is deeper than the parsers take (1024)
_CUT_MARK = "\\u0000controltower: nested too deeply"  # as JSON text, inside a string
_MAX_WALK_DEPTH = 120  # attribute values nested deeper than protobuf's own limit (100) are "too deep"


class OTLPDecodeError(ControlTowerError):
    """A trace request body is not valid OTLP; the message says what and where."""


def decode_traces(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP trace request body (protobuf or OTLP/JSON), or raise OTLPDecodeError."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in PROTOBUF_TYPES:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            whole_error = _one_line(exc)
        try:
            return _salvage_protobuf(body)
        except _WireError as exc:
            raise OTLPDecodeError(f"body is not valid OTLP protobuf: {whole_error} ({exc})") from None
    if kind in JSON_TYPES:
        return _decode_json(body)
    raise OTLPDecodeError(
        f'unsupported content type "{kind}" (expected application/x-protobuf or application/json)'
    )


# -- protobuf, span by span ---------------------------------------------------------------


class _WireError(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """(field number, value) of every field of one message; length-delimited values as bytes."""
    out: list[tuple[int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _WireError(f"field {number} runs past the end")
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise _WireError(f"field {number} runs past the end")
            out.append((number, int.from_bytes(data[pos : pos + width], "little")))
            pos += width
        else:
            raise _WireError(f"unsupported wire type {wire}")
    return out


def _try(cls: type[Message], data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError:
        return None


def _salvage_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for number, raw in _fields(body):
        if number != 1 or not isinstance(raw, bytes):
            continue
        whole = _try(ResourceSpans, raw)
        if whole is not None:
            request.resource_spans.append(whole)
            continue
        out = request.resource_spans.add()
        resource_problem = None
        for rnumber, rraw in _fields(raw):
            if rnumber == 1 and isinstance(rraw, bytes):
                resource = _try(Resource, rraw)
                if resource is None:
                    resource_problem = "resource: " + _bad_attribute(rraw, 1)
                else:
                    out.resource.CopyFrom(resource)
        for rnumber, rraw in _fields(raw):
            if rnumber != 2 or not isinstance(rraw, bytes):
                continue
            scope_spans = out.scope_spans.add()
            for snumber, sraw in _fields(rraw):
                if not isinstance(sraw, bytes):
                    continue
                if snumber == 1:
                    scope = _try(InstrumentationScope, sraw)
                    if scope is not None:
                        scope_spans.scope.CopyFrom(scope)
                elif snumber == 2:
                    span = None if resource_problem else _try(Span, sraw)
                    if span is None:
                        span = _placeholder(sraw, resource_problem or _span_problem(sraw))
                    scope_spans.spans.append(span)
    return request


def _bad_attribute(raw: bytes, field_number: int) -> str:
    for number, value in _fields(raw):
        if number == field_number and isinstance(value, bytes) and _try(KeyValue, value) is None:
            key = next((v for n, v in _fields(value) if n == 1 and isinstance(v, bytes)), b"")
            return f'attribute "{_printable(key)}" {_key_value_problem(value, 0) or "is nested too deeply to decode"}'
    return "a string is not valid UTF-8"


def _key_value_problem(raw: bytes, depth: int) -> str | None:
    """Why a KeyValue does not decode: a string that is not UTF-8 (named), else None (depth)."""
    try:
        for number, value in _fields(raw):
            if number == 1 and isinstance(value, bytes) and not _utf8(value):
                return "has a key that is not valid UTF-8"
            if number == 2 and isinstance(value, bytes):
                problem = _any_value_problem(value, depth + 1)
                if problem:
                    return problem
    except _WireError as exc:
        return f"is not a valid attribute ({exc})"
    return None


def _any_value_problem(raw: bytes, depth: int) -> str | None:
    """AnyValue: string_value 1, array_value 5 (values 1), kvlist_value 6 (values 1)."""
    if depth > _MAX_WALK_DEPTH:
        return None  # deeper than protobuf decodes: the caller says so
    for number, value in _fields(raw):
        if not isinstance(value, bytes):
            continue
        if number == 1 and not _utf8(value):
            return "is not valid UTF-8"
        if number in (5, 6):
            for inner_number, item in _fields(value):
                if inner_number == 1 and isinstance(item, bytes):
                    problem = (_any_value_problem(item, depth + 1) if number == 5
                               else _key_value_problem(item, depth + 1))
                    if problem:
                        return problem
    return None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _span_problem(raw: bytes) -> str:
    for number, value in _fields(raw):
        name = _SPAN_FIELDS.get(number)
        if name is None or not isinstance(value, bytes):
            continue
        if name in ("name", "trace_state"):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return f"{name}: not valid UTF-8"
        elif name == "attributes" and _try(KeyValue, value) is None:
            return _bad_attribute(raw, 9)
        elif name in _PARTS and _try(_PARTS[name], value) is None:
            return f"{name}: a string is not valid UTF-8"
    return "not a valid OTLP span"


def _printable(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:80]


def _placeholder(raw: bytes, reason: str) -> Span:
    """A span with what can still be read of the ids and name, marked rejected with the reason."""
    span = Span()
    try:
        for number, value in _fields(raw):
            if number == 1 and isinstance(value, bytes):
                span.trace_id = value
            elif number == 2 and isinstance(value, bytes):
                span.span_id = value
            elif number == 5 and isinstance(value, bytes):
                span.name = _printable(value)
    except _WireError:
        pass
    span.attributes.add(key=REJECTED_ATTR).value.string_value = reason
    return span


# -- OTLP/JSON ----------------------------------------------------------------------------


def _decode_json(body: bytes) -> ExportTraceServiceRequest:
    cut = False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # invalid UTF-8 inside one string: read leniently, the span holding it is rejected;
        # a value nested past the parsers' limits is cut out, and only its span is rejected
        text = body
        if "depth" in str(exc):
            text, cut = cut_deep(body, _JSON_CUT_DEPTH, _CUT_MARK)
        try:
            document = json.loads(text.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            raise OTLPDecodeError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OTLPDecodeError(f"body: expected a JSON object, got {type(document).__name__}")
    for key in ("resourceSpans", "resource_spans"):
        if key in document and not isinstance(document[key], list):
            raise OTLPDecodeError(f"body is not valid OTLP/JSON: {key} must be an array")
    request = ExportTraceServiceRequest()
    for resource_index, resource_spans in _items(document, "resourceSpans", "resource_spans"):
        out = request.resource_spans.add()
        where = f"resourceSpans[{resource_index}]"
        resource_problem = None
        try:
            _parse_part(resource_spans.get("resource") or {}, out.resource, f"{where}.resource")
        except OTLPDecodeError as exc:
            resource_problem = str(exc)
        for scope_index, scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            scope_out = out.scope_spans.add()
            try:
                _parse_part(scope_spans.get("scope") or {}, scope_out.scope, "scope")
            except OTLPDecodeError:
                pass  # the scope is informational; its spans still count
            for span_index, span in _items(scope_spans, "spans"):
                span_where = f"{where}.scopeSpans[{scope_index}].spans[{span_index}]"
                ids = {key: span.get(key) for key in _ID_KEYS}
                parsed = Span()
                try:
                    if resource_problem:
                        raise OTLPDecodeError(resource_problem)
                    if cut and _CUT_MARK in json.dumps(span):
                        raise OTLPDecodeError(f"{span_where}: a value is nested deeper than {_JSON_CUT_DEPTH} levels")
                    _hex_ids_to_base64(span, span_where)
                    for link_index, link in _items(span, "links"):
                        _hex_ids_to_base64(link, f"{span_where}.links[{link_index}]")
                    _parse_part(span, parsed, span_where)
                except OTLPDecodeError as exc:
                    parsed = _json_placeholder(ids, span.get("name"), str(exc))
                scope_out.spans.append(parsed)
    return request


def _parse_part(value: Any, message: Message, where: str) -> None:
    if not isinstance(value, dict):
        raise OTLPDecodeError(f"{where}: expected an object")
    if _has_surrogate(value):
        raise OTLPDecodeError(f"{where}: {_surrogate_path(value, '')} is not valid UTF-8")
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise OTLPDecodeError(f"{where}: not valid OTLP/JSON: {_one_line(exc)[:200]}") from None


def _has_surrogate(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return True
    return False


def _surrogate_path(value: Any, where: str) -> str:
    if isinstance(value, str):
        return where or "a string"
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key) or _has_surrogate(item):
                if isinstance(value.get("key"), str) and key == "value":
                    return f'attribute "{value["key"]}"'
                return _surrogate_path(item, f"{where}.{key}" if where else str(key))
    if isinstance(value, list):
        for index, item in enumerate(value):
            if _has_surrogate(item):
                return _surrogate_path(item, f"{where}[{index}]")
    return where or "a string"


def _json_placeholder(ids: dict[str, Any], name: Any, reason: str) -> Span:
    out = Span()
    for key, field in (("traceId", "trace_id"), ("spanId", "span_id")):
        value = ids.get(key) or ids.get(field)
        if isinstance(value, str) and _HEX.fullmatch(value):
            setattr(out, field, bytes.fromhex(value))
    if isinstance(name, str):
        out.name = name.encode("utf-8", "replace").decode("utf-8", "replace")[:80]
    out.attributes.add(key=REJECTED_ATTR).value.string_value = reason
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _items(parent: Any, *keys: str) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list field (under its camelCase or snake_case key)."""
    if not isinstance(parent, dict):
        return []
    for key in keys:
        children = parent.get(key)
        if isinstance(children, list):
            return [(i, child) for i, child in enumerate(children) if isinstance(child, dict)]
    return []


def _hex_ids_to_base64(obj: dict[str, Any], where: str) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise OTLPDecodeError(f"{where}.{key}: {value!r} is not hex (two digits a byte)")
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def encode_response(rejected_spans: int, error_message: str, as_json: bool) -> bytes:
    """An `ExportTraceServiceResponse`, with `partial_success` only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected_spans > 0:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if as_json:
        return orjson.dumps(json_format.MessageToDict(response))
    return response.SerializeToString()
