"""OTLP decoding and the span → canonical record mapping, on requests built by hand."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collectors.otlp import OTLPDecodeError, decode_traces, encode_response
from collectors.spans import map_request, service_slug

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "otlp" / "trace.json"

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_HEX = "b7ad6b7169203331"
PARENT_HEX = "00f067aa0ba902b7"
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in nanoseconds
STEP = {"retail.flow": "order", "retail.stage": "erp_posted", "retail.channel": "amazon"}


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=kvs(v)))
    return AnyValue(string_value=v)


def kvs(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attributes.items()]


def span(
    attributes: dict[str, Any] | None = None,
    *,
    trace: str = TRACE_HEX,
    span_id: str = SPAN_HEX,
    parent: str = PARENT_HEX,
    start: int = T0,
    end: int = T0 + 250_000_000,
    status: Status | None = None,
    events: list[Span.Event] | None = None,
    name: str = "post order",
) -> Span:
    return Span(
        trace_id=bytes.fromhex(trace),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=kvs(STEP if attributes is None else attributes),
        status=status,
        events=events or [],
    )


def event(name: str, at: int, attributes: dict[str, Any]) -> Span.Event:
    return Span.Event(name=name, time_unix_nano=at, attributes=kvs(attributes))


def request(*spans: Span, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    resource = {"service.name": "middleware"} if resource is None else resource
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])
    rs.resource.attributes.extend(kvs(resource))
    return ExportTraceServiceRequest(resource_spans=[rs])


BASE = {
    "event_id": TRACE_HEX + SPAN_HEX,
    "occurred_at": datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC),
    "correlation_id": TRACE_HEX,
    "channel": "amazon",
    "flow": "order",
    "stage": "erp_posted",
    "status": "ok",
    "system": "middleware",
    "latency_ms": 250.0,
    "attributes": {},
    "trace_id": TRACE_HEX,
    "span_id": SPAN_HEX,
    "parent_span_id": PARENT_HEX,
}


def expect(**changes: Any) -> dict[str, Any]:
    record = {**BASE, **changes}
    return {k: v for k, v in record.items() if v is not None}


ERROR = Status.STATUS_CODE_ERROR
EXC = {"exception.type": "TimeoutError", "exception.message": "walmart API timed out"}

CASES = [
    ("minimal step", request(span()), expect()),
    (
        "every retail field and attribute type",
        request(
            span(
                {
                    **STEP,
                    "retail.correlation_id": "C-1",
                    "retail.order_id": "SO-1",
                    "retail.system": "erp",
                    "retail.error_code": "E42",
                    "retail.external_order_id": "111-222",
                    "retail.sku": "SKU-9",
                    "retail.quantity": 3,
                    "retail.price": 9.5,
                    "retail.gift": True,
                    "retail.tags": ["a", 2],
                    "retail.blob": b"\x01\xff",
                    "retail.meta": {"k": "v"},
                    "http.method": "POST",
                }
            )
        ),
        expect(
            correlation_id="C-1",
            order_id="SO-1",
            system="erp",
            error_code="E42",
            attributes={
                "external_order_id": "111-222",
                "sku": "SKU-9",
                "quantity": 3,
                "price": 9.5,
                "gift": True,
                "tags": ["a", 2],
                "blob": "01ff",
                "meta": {"k": "v"},
            },
        ),
    ),
    (
        "resource retail.* attributes are defaults the span overrides",
        request(
            span({"retail.flow": "order", "retail.stage": "erp_posted", "retail.location": "DC-2"}),
            resource={
                "service.name": "middleware",
                "retail.channel": "shopify",
                "retail.flow": "inventory",
                "retail.location": "DC-1",
                "host.name": "h1",
            },
        ),
        expect(channel="shopify", attributes={"location": "DC-2"}),
    ),
    ("no service.name: no system", request(span(), resource={}), expect(system=None)),
    (
        "the SDK's unknown_service placeholder is no system",
        request(span(), resource={"service.name": "unknown_service:python"}),
        expect(system=None),
    ),
    ("no parent span", request(span(parent="")), expect(parent_span_id=None)),
    (
        "span status error with its message",
        request(span(status=Status(code=ERROR, message="502 from ERP"))),
        expect(status="error", error_message="502 from ERP"),
    ),
    (
        "status ok carries no error",
        request(span(status=Status(code=Status.STATUS_CODE_OK))),
        expect(),
    ),
    (
        "retail.status dead_letter overrides the span status",
        request(
            span(
                {**STEP, "retail.status": "dead_letter"},
                status=Status(code=ERROR, message="poison"),
            )
        ),
        expect(status="dead_letter", error_message="poison"),
    ),
    (
        "retail.status retry on an unset status",
        request(span({**STEP, "retail.status": "retry"})),
        expect(status="retry"),
    ),
    (
        "an unknown retail.status is ignored",
        request(span({**STEP, "retail.status": "failed"}, status=Status(code=ERROR))),
        expect(status="error"),
    ),
    (
        "exception event gives message and code",
        request(span(status=Status(code=ERROR), events=[event("exception", T0 + 1, EXC)])),
        expect(status="error", error_code="TimeoutError", error_message="walmart API timed out"),
    ),
    (
        "status message and retail.error_code win over the exception event",
        request(
            span(
                {**STEP, "retail.error_code": "AMZ-429"},
                status=Status(code=ERROR, message="TimeoutError: walmart API timed out (2)"),
                events=[event("exception", T0 + 1, EXC)],
            )
        ),
        expect(
            status="error",
            error_code="AMZ-429",
            error_message="TimeoutError: walmart API timed out (2)",
        ),
    ),
    (
        "correlation id from a baggage.correlation.id attribute",
        request(span({**STEP, "baggage.correlation.id": "BAG-1"})),
        expect(correlation_id="BAG-1"),
    ),
    (
        "correlation id from a correlation.id attribute",
        request(span({**STEP, "correlation.id": "BAG-2"})),
        expect(correlation_id="BAG-2"),
    ),
    (
        "retail.correlation_id wins over baggage copies",
        request(span({**STEP, "correlation.id": "BAG-2", "retail.correlation_id": "C-9"})),
        expect(correlation_id="C-9"),
    ),
    (
        "an empty retail.correlation_id falls back to the trace id",
        request(span({**STEP, "retail.correlation_id": ""})),
        expect(),
    ),
    (
        "upper-case hex ids come out lower-case",
        request(span(trace=TRACE_HEX.upper(), span_id=SPAN_HEX.upper(), parent=PARENT_HEX.upper())),
        expect(),
    ),
]


@pytest.mark.parametrize(("case", "req", "expected"), CASES, ids=[c[0] for c in CASES])
def test_map_one_span(case: str, req: ExportTraceServiceRequest, expected: dict[str, Any]) -> None:
    mapping = map_request(req)
    assert mapping.rejected == []
    assert mapping.span_count == 1
    assert mapping.records == [expected]


def test_milestone_span_events_become_further_records() -> None:
    attrs = {
        **STEP,
        "retail.correlation_id": "C-1",
        "retail.order_id": "SO-1",
        "retail.sku": "SKU-9",
    }
    req = request(
        span(
            attrs,
            status=Status(code=ERROR, message="late"),
            events=[
                event("log", T0 + 1, {"message": "hello"}),
                event("retail.milestone", T0 + 100_000_000, {"retail.stage": "acknowledged"}),
                event(
                    "retail.milestone",
                    T0 + 200_000_000,
                    {
                        "retail.stage": "released",
                        "retail.flow": "shipment",
                        "retail.status": "retry",
                        "retail.carrier": "ups",
                    },
                ),
                event(
                    "retail.milestone", T0 + 200_000_000, {"retail.flow": "shipment"}
                ),  # no stage: not one
            ],
        )
    )
    mapping = map_request(req)
    assert mapping.rejected == [] and mapping.span_count == 1
    shared = {
        "correlation_id": "C-1",
        "order_id": "SO-1",
        "channel": "amazon",
        "system": "middleware",
        "trace_id": TRACE_HEX,
        "span_id": SPAN_HEX,
        "parent_span_id": PARENT_HEX,
    }
    assert mapping.records == [
        expect(
            correlation_id="C-1",
            order_id="SO-1",
            status="error",
            error_message="late",
            attributes={"sku": "SKU-9"},
        ),
        {
            **shared,
            "event_id": TRACE_HEX + SPAN_HEX + "-m1",
            "flow": "order",
            "stage": "acknowledged",
            "status": "ok",
            "occurred_at": datetime(2026, 1, 1, 0, 0, 0, 100_000, tzinfo=UTC),
            "attributes": {"sku": "SKU-9"},
        },
        {
            **shared,
            "event_id": TRACE_HEX + SPAN_HEX + "-m2",
            "flow": "shipment",
            "stage": "released",
            "status": "retry",
            "occurred_at": datetime(2026, 1, 1, 0, 0, 0, 200_000, tzinfo=UTC),
            "attributes": {"sku": "SKU-9", "carrier": "ups"},
        },
    ]


REJECTIONS = [
    (
        "no flow",
        span({"retail.stage": "x", "retail.channel": "amazon"}),
        f'span {SPAN_HEX} ("post order"): no retail.flow attribute (not an integration step)',
    ),
    (
        "empty flow and no stage",
        span({"retail.flow": "", "retail.channel": "amazon"}),
        f'span {SPAN_HEX} ("post order"): no retail.flow or retail.stage attribute (not an integration step)',
    ),
    (
        "nothing retail",
        span({"http.method": "GET"}, name="GET /"),
        f'span {SPAN_HEX} ("GET /"): no retail.flow or retail.stage attribute (not an integration step)',
    ),
    (
        "short trace id",
        span(trace="0af765"),
        f"span {SPAN_HEX} (\"post order\"): trace id '0af765' is not 16 bytes and non-zero",
    ),
    (
        "zero span id",
        span(span_id="0000000000000000"),
        "span 0000000000000000 (\"post order\"): span id '0000000000000000' is not 8 bytes and non-zero",
    ),
    (
        "empty span id",
        span(span_id=""),
        "span - (\"post order\"): span id '' is not 8 bytes and non-zero",
    ),
    (
        "long parent id",
        span(parent="00f067aa0ba902b7ff"),
        f"span {SPAN_HEX} (\"post order\"): parent span id '00f067aa0ba902b7ff' is not 8 bytes",
    ),
]


@pytest.mark.parametrize(("case", "bad", "reason"), REJECTIONS, ids=[c[0] for c in REJECTIONS])
def test_rejected_spans_name_the_span_and_the_reason(case: str, bad: Span, reason: str) -> None:
    good = span(span_id="1111111111111111")
    mapping = map_request(request(bad, good))
    assert mapping.span_count == 2
    assert mapping.rejected == [reason]
    assert [r["span_id"] for r in mapping.records] == ["1111111111111111"]


def test_spans_across_resources_use_their_own_resource() -> None:
    req = request(span())
    other = request(
        span(span_id="2222222222222222"), resource={"service.name": "wms", "retail.channel": "pos"}
    )
    req.resource_spans.extend(other.resource_spans)
    records = map_request(req).records
    assert [(r["span_id"], r["system"], r["channel"]) for r in records] == [
        (SPAN_HEX, "middleware", "amazon"),
        ("2222222222222222", "wms", "amazon"),
    ]


# -- decoding ---------------------------------------------------------------------------------


def test_spec_example_json_decodes_ids_and_times() -> None:
    req = decode_traces(FIXTURE.read_bytes(), "application/json")
    (s,) = req.resource_spans[0].scope_spans[0].spans
    assert s.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert s.span_id == bytes.fromhex("eee19b7ec3c1b174")
    assert s.parent_span_id == bytes.fromhex("eee19b7ec3c1b173")
    assert s.start_time_unix_nano == 1_544_712_660_000_000_000
    assert s.end_time_unix_nano == 1_544_712_661_000_000_000
    assert s.kind == Span.SPAN_KIND_SERVER
    assert req.resource_spans[0].scope_spans[0].scope.name == "my.library"
    mapping = map_request(req)
    assert mapping.records == [] and mapping.span_count == 1
    assert mapping.rejected == [
        'span eee19b7ec3c1b174 ("I\'m a server span"): '
        "no retail.flow or retail.stage attribute (not an integration step)"
    ]


def test_spec_example_with_retail_attributes_maps() -> None:
    doc = json.loads(FIXTURE.read_text())
    doc = copy.deepcopy(doc)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].extend(
        [
            {"key": "retail.channel", "value": {"stringValue": "amazon"}},
            {"key": "retail.flow", "value": {"stringValue": "order"}},
            {"key": "retail.stage", "value": {"stringValue": "received"}},
            {"key": "retail.quantity", "value": {"intValue": "4"}},
        ]
    )
    mapping = map_request(decode_traces(json.dumps(doc).encode(), "application/json"))
    assert mapping.rejected == []
    trace_id = "5b8efff798038103d269b633813fc60c"
    assert mapping.records == [
        {
            "event_id": trace_id + "eee19b7ec3c1b174",
            "occurred_at": datetime(2018, 12, 13, 14, 51, 1, tzinfo=UTC),
            "correlation_id": trace_id,
            "channel": "amazon",
            "flow": "order",
            "stage": "received",
            "status": "ok",
            "system": "my.service",
            "latency_ms": 1000.0,
            "attributes": {"quantity": 4},
            "trace_id": trace_id,
            "span_id": "eee19b7ec3c1b174",
            "parent_span_id": "eee19b7ec3c1b173",
        }
    ]


def _rich_request() -> ExportTraceServiceRequest:
    attrs = {
        **STEP,
        "retail.correlation_id": "C-1",
        "retail.sku": "SKU-9",
        "retail.quantity": 3,
        "retail.price": 9.5,
        "retail.tags": ["a", True],
        "retail.blob": b"\x00\x10",
    }
    return request(
        span(
            attrs,
            status=Status(code=ERROR, message="boom"),
            events=[
                event("retail.milestone", T0 + 5, {"retail.stage": "acknowledged"}),
                event("exception", T0 + 6, EXC),
            ],
        ),
        span({"http.method": "GET"}, span_id="3333333333333333"),
    )


def _to_otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """protobuf's canonical JSON turned into OTLP/JSON: hex ids (upper-case), integer enums."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex().upper()
                s["someFutureField"] = {"x": 1}
    return doc


def test_json_and_protobuf_encodings_map_identically() -> None:
    req = _rich_request()
    from_pb = decode_traces(req.SerializeToString(), "application/x-protobuf")
    from_json = decode_traces(
        json.dumps(_to_otlp_json(req)).encode(), "application/json; charset=utf-8"
    )
    assert from_pb == req and from_json == req
    assert map_request(from_json) == map_request(from_pb)
    assert len(map_request(from_pb).records) == 2 and len(map_request(from_pb).rejected) == 1


def test_hand_written_otlp_json() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "erp"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_HEX,
                                "spanId": SPAN_HEX.upper(),
                                "kind": 3,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": T0 + 1_000_000,
                                "attributes": kvs_json(STEP),
                                "status": {"code": 2, "message": "x"},
                                "droppedAttributesCount": 0,
                                "unknownKey": [1, 2],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    expected = request(
        span(parent="", end=T0 + 1_000_000, status=Status(code=ERROR, message="x"), name=""),
        resource={"service.name": "erp"},
    )
    assert decode_traces(json.dumps(doc).encode(), "application/json") == expected


def kvs_json(attributes: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\x0a\xff\xff", "application/x-protobuf", "body is not valid OTLP protobuf: "),
        (b"{", "application/json", "body is not valid JSON: "),
        (b"[]", "application/json", "body: expected a JSON object, got list"),
        (b'{"resourceSpans": 5}', "application/json", "body is not valid OTLP/JSON: "),
        (
            b"x",
            "text/plain",
            'unsupported content type "text/plain" (expected application/x-protobuf or application/json)',
        ),
    ],
)
def test_decode_errors_say_what_is_wrong(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(OTLPDecodeError) as info:
        decode_traces(body, content_type)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{"traceId":"xyz"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[2].traceId: 'xyz' is not hex (two digits a byte)",
        ),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{"links":[{"spanId":"abc"}]}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[2].links[0].spanId: 'abc' is not hex (two digits a byte)",
        ),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{"startTimeUnixNano":"abc"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[2]: not valid OTLP/JSON: ",
        ),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{"name":"bad \xff"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[2]: name is not valid UTF-8",
        ),
    ],
)
def test_one_malformed_json_span_is_rejected_alone(body: bytes, reason: str) -> None:
    mapping = map_request(decode_traces(body, "application/json"))
    assert mapping.span_count == 3
    assert mapping.rejected[2].split(": ", 1)[1].startswith(reason)


def test_protobuf_content_type_alias_and_empty_body() -> None:
    assert decode_traces(b"", "application/protobuf") == ExportTraceServiceRequest()
    assert map_request(ExportTraceServiceRequest()).span_count == 0


def test_encode_response() -> None:
    assert encode_response(0, "", as_json=True) == b"{}"
    assert encode_response(0, "", as_json=False) == b""
    assert json.loads(encode_response(2, "span a: x; span b: y", as_json=True)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "span a: x; span b: y"}
    }
    response = ExportTraceServiceResponse.FromString(encode_response(1, "why", as_json=False))
    assert (response.partial_success.rejected_spans, response.partial_success.error_message) == (
        1,
        "why",
    )


def _with_bad_byte(message: ExportTraceServiceRequest, marker: bytes) -> bytes:
    """Serialise, then turn the first byte of `marker` into 0xff (same length: framing stays)."""
    wire = message.SerializeToString()
    assert wire.count(marker) == 1
    return wire.replace(marker, b"\xff" + marker[1:])


def test_invalid_utf8_in_one_protobuf_span_rejects_that_span_only() -> None:
    # protobuf refuses the whole message; before, the whole export was a 400 (issue 10 #6)
    good_a = span({**STEP, "retail.note": "fine"}, span_id="00000000000000a1")
    bad = span({**STEP, "retail.note": "Xbroken"}, span_id="00000000000000b2", name="bad one")
    good_c = span(STEP, span_id="00000000000000c3", status=Status(code=ERROR, message="ZZ timeout"))
    wire = _with_bad_byte(request(good_a, bad, good_c), b"Xbroken")
    mapping = map_request(decode_traces(wire, "application/x-protobuf"))
    assert mapping.span_count == 3
    assert mapping.rejected == ['span 00000000000000b2 ("bad one"): attribute "retail.note" is not valid UTF-8']
    assert [r["span_id"] for r in mapping.records] == ["00000000000000a1", "00000000000000c3"]
    assert mapping.records[0]["attributes"] == {"note": "fine"}


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        (b"Nname", 'span 00000000000000b2 ("\ufffdname"): name: not valid UTF-8'),
        (b"Mstatus", 'span 00000000000000b2 ("x"): status: a string is not valid UTF-8'),
    ],
)
def test_invalid_utf8_in_span_name_or_status(marker: bytes, reason: str) -> None:
    name = marker.decode() if marker == b"Nname" else "x"
    status = Status(code=ERROR, message=marker.decode()) if marker == b"Mstatus" else None
    wire = _with_bad_byte(request(span(span_id="00000000000000b2", name=name, status=status), span(span_id="00000000000000c3")), marker)
    mapping = map_request(decode_traces(wire, "application/x-protobuf"))
    assert mapping.rejected == [reason]
    assert [r["span_id"] for r in mapping.records] == ["00000000000000c3"]


def test_invalid_utf8_in_the_resource_rejects_its_spans_with_the_reason() -> None:
    message = request(span(span_id="00000000000000a1"), resource={"service.name": "Qerp"})
    other = request(span(span_id="00000000000000c3"))
    message.resource_spans.extend(other.resource_spans)
    mapping = map_request(decode_traces(_with_bad_byte(message, b"Qerp"), "application/x-protobuf"))
    assert mapping.rejected == ['span 00000000000000a1 ("post order"): resource: attribute "service.name" is not valid UTF-8']
    assert [r["span_id"] for r in mapping.records] == ["00000000000000c3"]


def test_broken_protobuf_framing_is_still_a_decode_error() -> None:
    wire = request(span()).SerializeToString()
    with pytest.raises(OTLPDecodeError, match="not valid OTLP protobuf"):
        decode_traces(wire[:-3], "application/x-protobuf")


@pytest.mark.parametrize(
    ("service", "system"),
    [
        ("Checkout API v2", "checkout-api-v2"),
        ("  ERP (SAP S/4) ", "erp-sap-s-4"),
        ("ｗｍｓ＿east", "wms_east"),  # full-width letters fold to ASCII
        ("middleware", "middleware"),
        ("日本", None),
        ("x" * 100, "x" * 64),
    ],
)
def test_free_text_service_names_derive_a_system_slug(service: str, system: str | None) -> None:
    assert service_slug(service) == system
    mapping = map_request(request(span(), resource={"service.name": service}))
    assert mapping.rejected == []
    assert mapping.records[0].get("system") == system


def test_a_sender_cannot_smuggle_records_through_the_rejection_marker() -> None:
    mapping = map_request(request(span({**STEP, "controltower.rejected": "mine"})))
    assert mapping.records == [] and mapping.rejected[0].endswith(": mine")


def test_a_carrier_span_without_channel_maps_and_joins_its_business_transaction(engine, settings) -> None:
    """The carrier's instrumentation knows only the tracking number: its span has no channel,
    maps to a record without one, and ingest joins it to the order that shipped under it."""
    from datetime import timedelta

    import sqlalchemy as sa

    from collectors.store import EventStore

    carrier = span({"retail.flow": "shipment", "retail.stage": "scanned", "retail.tracking_number": "1Z999"})
    bare = span({"retail.flow": "shipment", "retail.stage": "scanned"}, span_id="3333333333333333")
    mapped = map_request(request(carrier, bare, resource={"service.name": "ups"}))
    assert len(mapped.records) == 2 and all("channel" not in r for r in mapped.records)
    now = mapped.records[0]["occurred_at"] + timedelta(minutes=5)
    warehouse = {"event_id": "w1", "occurred_at": mapped.records[0]["occurred_at"].isoformat(),
                 "correlation_id": "WMS-1", "channel": "amazon", "flow": "fulfilment", "stage": "shipped",
                 "attributes": {"tracking_number": "1Z999"}}
    settings = settings.with_(max_event_age=3650 * 86400.0)
    result = EventStore(engine, settings).ingest([warehouse, *mapped.records], source="otlp", now=now)
    assert result.accepted == 2
    assert [i for i, _ in result.rejected] == [2] and result.rejected[0][1].startswith("channel: missing")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions")).all())
    assert len(rows) == 2 and len(set(rows.values())) == 1
