"""The instrumentation helper against the real SDK (in memory), then through `map_request`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from collectors.instrument import (
    current_correlation_id,
    extract_context,
    flow_step,
    inject_headers,
)
from collectors.spans import map_request

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in nanoseconds
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "middleware"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("test")

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.provider.shutdown()


def test_step_span_carries_retail_attributes(traced: Traced) -> None:
    with flow_step(
        "order",
        "received",
        channel="amazon",
        correlation_id="C-1",
        order_id="SO-1",
        system="marketplace",
        tracer=traced.tracer,
        attributes={
            "external_order_id": "111-222",
            "quantity": 2,
            "gift": False,
            "lines": [{"sku": "A"}],
            "retail.sku": "A",
            "skipped": None,
        },
    ) as step:
        assert step.correlation_id == "C-1"
        assert current_correlation_id() == "C-1"
        step.set_attribute("erp_document", 4500001)
        step.set_attribute("nothing", None)
    assert current_correlation_id() is None
    (span,) = traced.exporter.get_finished_spans()
    assert span.name == "order.received"
    assert dict(span.attributes or {}) == {
        "retail.flow": "order",
        "retail.stage": "received",
        "retail.channel": "amazon",
        "retail.correlation_id": "C-1",
        "retail.order_id": "SO-1",
        "retail.system": "marketplace",
        "retail.external_order_id": "111-222",
        "retail.quantity": 2,
        "retail.gift": False,
        "retail.lines": '[{"sku":"A"}]',
        "retail.sku": "A",
        "retail.erp_document": 4500001,
    }
    assert span.status.status_code == StatusCode.UNSET


def test_new_correlation_id_and_custom_name(traced: Traced) -> None:
    with flow_step("inventory", "published", name="push stock", tracer=traced.tracer) as step:
        pass
    (span,) = traced.exporter.get_finished_spans()
    assert span.name == "push stock"
    assert re.fullmatch(r"[0-9a-f]{32}", step.correlation_id)
    assert (span.attributes or {})["retail.correlation_id"] == step.correlation_id
    assert "retail.channel" not in (span.attributes or {})


def test_nested_steps_inherit_correlation_channel_and_order_through_baggage(traced: Traced) -> None:
    with flow_step(
        "order", "received", channel="walmart", order_id="SO-77", tracer=traced.tracer
    ) as parent:
        with flow_step("order", "erp_posted", system="erp", tracer=traced.tracer) as child:
            assert child.correlation_id == parent.correlation_id
        with flow_step(
            "order", "other", channel="pos", correlation_id="C-2", tracer=traced.tracer
        ) as own:
            assert current_correlation_id() == "C-2"
        assert current_correlation_id() == parent.correlation_id
        assert own.correlation_id == "C-2"
    spans = traced.spans()
    child_attrs = spans["order.erp_posted"].attributes or {}
    assert child_attrs["retail.correlation_id"] == parent.correlation_id
    assert child_attrs["retail.channel"] == "walmart"
    assert child_attrs["retail.order_id"] == "SO-77"
    assert child_attrs["retail.system"] == "erp"
    assert (spans["order.other"].attributes or {})["retail.channel"] == "pos"
    assert spans["order.erp_posted"].parent.span_id == spans["order.received"].context.span_id


def test_correlation_id_from_existing_baggage(traced: Traced) -> None:
    token = context.attach(baggage.set_baggage("correlation.id", "BAG-1"))
    try:
        with flow_step("inventory", "published", channel="amazon", tracer=traced.tracer) as step:
            assert step.correlation_id == "BAG-1"
    finally:
        context.detach(token)
    (span,) = traced.exporter.get_finished_spans()
    assert (span.attributes or {})["retail.correlation_id"] == "BAG-1"


def test_milestones_are_span_events(traced: Traced) -> None:
    with flow_step("order", "received", channel="amazon", tracer=traced.tracer) as step:
        step.milestone("acknowledged")
        step.milestone(
            "released",
            flow="shipment",
            at=datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
            attributes={"carrier": "ups"},
        )
        with pytest.raises(ValueError, match="no UTC offset"):
            step.milestone("late", at=datetime(2026, 1, 1))
    (span,) = traced.exporter.get_finished_spans()
    first, second = span.events
    assert (first.name, dict(first.attributes or {})) == (
        "retail.milestone",
        {"retail.stage": "acknowledged"},
    )
    assert (second.name, dict(second.attributes or {})) == (
        "retail.milestone",
        {"retail.stage": "released", "retail.flow": "shipment", "retail.carrier": "ups"},
    )
    assert second.timestamp == T0 + 5_000


def test_exception_marks_the_span_error_and_propagates(traced: Traced) -> None:
    with (
        pytest.raises(TimeoutError),
        flow_step("shipment", "shipment_confirmed", channel="walmart", tracer=traced.tracer),
    ):
        raise TimeoutError("walmart API timed out")
    assert current_correlation_id() is None  # the baggage was detached on the way out
    (span,) = traced.exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "TimeoutError: walmart API timed out"
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "TimeoutError"


@pytest.mark.parametrize(
    ("status", "kwargs", "span_status", "description", "extra"),
    [
        (
            "dead_letter",
            {"error_code": "E1", "message": "poison"},
            StatusCode.ERROR,
            "poison",
            {"retail.error_code": "E1"},
        ),
        ("error", {}, StatusCode.ERROR, None, {}),
        ("retry", {}, StatusCode.UNSET, None, {}),
        ("retry", {"message": "429 from Amazon"}, StatusCode.ERROR, "429 from Amazon", {}),
        ("ok", {}, StatusCode.UNSET, None, {}),
    ],
)
def test_set_status(
    traced: Traced,
    status: str,
    kwargs: dict,
    span_status: StatusCode,
    description: str | None,
    extra: dict,
) -> None:
    with flow_step(
        "order", "erp_posted", channel="amazon", correlation_id="C", tracer=traced.tracer
    ) as step:
        step.set_status(status, **kwargs)
    (span,) = traced.exporter.get_finished_spans()
    assert (span.status.status_code, span.status.description) == (span_status, description)
    attrs = dict(span.attributes or {})
    assert attrs["retail.status"] == status
    assert {k: v for k, v in attrs.items() if k == "retail.error_code"} == extra


def test_set_status_rejects_unknown(traced: Traced) -> None:
    with (
        flow_step("order", "x", tracer=traced.tracer) as step,
        pytest.raises(ValueError, match='"failed" is not one of'),
    ):
        step.set_status("failed")


def test_decorator_form_sync_and_async(traced: Traced) -> None:
    @flow_step("order", "erp_posted", channel="amazon", tracer=traced.tracer)
    def post(document: str) -> str | None:
        return f"{document}:{current_correlation_id()}"

    @flow_step(
        "order", "acknowledged", channel="amazon", correlation_id="C-A", tracer=traced.tracer
    )
    async def acknowledge() -> str | None:
        await asyncio.sleep(0)
        return current_correlation_id()

    @flow_step("order", "failed", channel="amazon", tracer=traced.tracer)
    async def fail() -> None:
        raise RuntimeError("nope")

    first, second = post("D1"), post("D2")
    assert first.startswith("D1:") and second.startswith("D2:") and first[3:] != second[3:]
    assert post.__name__ == "post"
    assert asyncio.run(acknowledge()) == "C-A"
    with pytest.raises(RuntimeError):
        asyncio.run(fail())
    names = [s.name for s in traced.exporter.get_finished_spans()]
    assert names == ["order.erp_posted", "order.erp_posted", "order.acknowledged", "order.failed"]
    failed = traced.exporter.get_finished_spans()[-1]
    assert failed.status.status_code == StatusCode.ERROR


def test_headers_round_trip_to_a_receiving_service(traced: Traced) -> None:
    with flow_step("order", "received", channel="ebay", correlation_id="C-7", tracer=traced.tracer):
        headers = inject_headers({})
    sender = traced.spans()["order.received"]
    trace_hex = f"{sender.context.trace_id:032x}"
    assert headers["traceparent"].startswith(f"00-{trace_hex}-{sender.context.span_id:016x}-")
    assert "correlation.id=C-7" in headers["baggage"]
    token = context.attach(extract_context(headers))
    try:
        with flow_step("order", "erp_posted", tracer=traced.tracer) as step:
            assert step.correlation_id == "C-7"
    finally:
        context.detach(token)
    receiver = traced.spans()["order.erp_posted"]
    assert receiver.context.trace_id == sender.context.trace_id
    assert receiver.parent.span_id == sender.context.span_id
    assert (receiver.attributes or {})["retail.channel"] == "ebay"


def test_sdk_spans_map_to_canonical_records(traced: Traced) -> None:
    tracer = traced.tracer
    with flow_step(
        "order",
        "received",
        channel="walmart",
        order_id="SO-77",
        tracer=tracer,
        attributes={"external_order_id": "108829384756123"},
    ) as step:
        cid = step.correlation_id
        with flow_step("order", "erp_posted", system="erp", tracer=tracer) as child:
            child.set_attribute("erp_document", "4500001")
        step.milestone("acknowledged", at=datetime(2026, 1, 1, tzinfo=UTC))
    with (
        pytest.raises(TimeoutError),
        flow_step(
            "shipment", "shipment_confirmed", channel="walmart", correlation_id=cid, tracer=tracer
        ),
    ):
        raise TimeoutError("walmart API timed out")

    finished = traced.exporter.get_finished_spans()
    mapping = map_request(encode_spans(finished))
    assert mapping.rejected == [] and mapping.span_count == 3

    def ids(name: str) -> dict:
        s = traced.spans()[name]
        out = {
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "occurred_at": EPOCH + timedelta(microseconds=s.end_time // 1000),
            "latency_ms": (s.end_time - s.start_time) / 1e6,
        }
        out["event_id"] = out["trace_id"] + out["span_id"]
        if s.parent is not None:
            out["parent_span_id"] = f"{s.parent.span_id:016x}"
        return out

    common = {"correlation_id": cid, "channel": "walmart", "status": "ok"}
    received = {
        **common,
        **ids("order.received"),
        "order_id": "SO-77",
        "flow": "order",
        "stage": "received",
        "system": "middleware",
        "attributes": {"external_order_id": "108829384756123"},
    }
    milestone = {
        **received,
        "event_id": received["event_id"] + "-m0",
        "stage": "acknowledged",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    del milestone["latency_ms"]
    assert mapping.records == [
        {
            **common,
            **ids("order.erp_posted"),
            "order_id": "SO-77",
            "flow": "order",
            "stage": "erp_posted",
            "system": "erp",
            "attributes": {"erp_document": "4500001"},
        },
        received,
        milestone,
        {
            **common,
            **ids("shipment.shipment_confirmed"),
            "flow": "shipment",
            "stage": "shipment_confirmed",
            "status": "error",
            "system": "middleware",
            "attributes": {},
            "error_code": "TimeoutError",
            "error_message": "TimeoutError: walmart API timed out",
        },
    ]
