"""The OTLP/HTTP trace wire format: request bodies in, export responses out.

Decodes an already decompressed `ExportTraceServiceRequest` from protobuf or OTLP/JSON and
encodes the `ExportTraceServiceResponse`. It knows nothing about spans' meaning (that is
`spans`) nor about HTTP status codes (that is `http`).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from controltower.errors import ControlTowerError

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
# OTLP/JSON writes these bytes fields as hex, where protobuf's JSON mapping expects base64.
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


class OTLPDecodeError(ControlTowerError):
    """A trace request body is not valid OTLP; the message says what and where."""


def decode_traces(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP trace request body (protobuf or OTLP/JSON), or raise OTLPDecodeError."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in PROTOBUF_TYPES:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise OTLPDecodeError(f"body is not valid OTLP protobuf: {_one_line(exc)}") from None
    if kind in JSON_TYPES:
        return _decode_json(body)
    raise OTLPDecodeError(
        f'unsupported content type "{kind}" (expected application/x-protobuf or application/json)'
    )


def _decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OTLPDecodeError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OTLPDecodeError(f"body: expected a JSON object, got {type(document).__name__}")
    for resource_index, resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_index, scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span_index, span in _items(scope_spans, "spans"):
                where = (
                    f"resourceSpans[{resource_index}].scopeSpans[{scope_index}].spans[{span_index}]"
                )
                _hex_ids_to_base64(span, where)
                for link_index, link in _items(span, "links"):
                    _hex_ids_to_base64(link, f"{where}.links[{link_index}]")
    try:
        return json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except json_format.ParseError as exc:
        raise OTLPDecodeError(f"body is not valid OTLP/JSON: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _items(parent: Any, *keys: str) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list field (under its camelCase or snake_case key); malformed shapes are
    left for `ParseDict` to report."""
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
