"""Instrumentation helper for integration code: one span per integration step.

Integration code wraps each step in `flow_step(...)`; the span carries the `retail.*`
attributes that `collectors.spans` maps to canonical events, and W3C baggage carries the
correlation id to child steps and downstream services. Uses only `opentelemetry-api`, never
the SDK: the application chooses the provider and exporter.
"""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer

# Span attributes: the contract between this helper and `collectors.spans`.
ATTR_PREFIX = "retail."
ATTR_FLOW = "retail.flow"  # flow slug: order, inventory, shipment, return, settlement, catalog
ATTR_STAGE = "retail.stage"  # the milestone reached, e.g. erp_posted
ATTR_CHANNEL = "retail.channel"  # amazon, shopify, pos, ...
ATTR_CORRELATION_ID = "retail.correlation_id"  # ties every hop of one transaction together
ATTR_ORDER_ID = "retail.order_id"  # the retailer's order number
ATTR_SYSTEM = "retail.system"  # who emitted it; defaults to the resource's service.name
ATTR_STATUS = "retail.status"  # ok, error, retry or dead_letter; overrides the span status
ATTR_ERROR_CODE = "retail.error_code"
# A span event with this name (and a retail.stage attribute) records a further milestone.
MILESTONE_EVENT = "retail.milestone"
# W3C baggage keys: baggage propagates, but is not exported with spans, so the helper copies
# these into the span attributes above.
BAGGAGE_CORRELATION_ID = "correlation.id"
BAGGAGE_CHANNEL = "retail.channel"
BAGGAGE_ORDER_ID = "retail.order_id"

STATUSES = ("ok", "error", "retry", "dead_letter")
_F = TypeVar("_F", bound=Callable[..., Any])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Step:
    """The open step a `flow_step` block receives: add milestones, statuses and attributes."""

    def __init__(self, span: Span, correlation_id: str) -> None:
        self.span = span
        self._correlation_id = correlation_id

    @property
    def correlation_id(self) -> str:
        return self._correlation_id

    def milestone(
        self,
        stage: str,
        *,
        flow: str | None = None,
        at: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a further milestone reached inside this step (now, or `at`)."""
        event = _retail_attributes(attributes)
        event[ATTR_STAGE] = stage
        if flow:
            event[ATTR_FLOW] = flow
        timestamp = None
        if at is not None:
            if at.tzinfo is None:
                raise ValueError(f"milestone at={at.isoformat()} has no UTC offset")
            timestamp = (at - _EPOCH) // timedelta(microseconds=1) * 1000
        self.span.add_event(MILESTONE_EVENT, event, timestamp=timestamp)

    def set_status(
        self, status: str, error_code: str | None = None, message: str | None = None
    ) -> None:
        """Set the step's outcome; error, dead_letter (and retry with a message) mark the span ERROR."""
        if status not in STATUSES:
            raise ValueError(f'status "{status}" is not one of {", ".join(STATUSES)}')
        self.span.set_attribute(ATTR_STATUS, status)
        if error_code:
            self.span.set_attribute(ATTR_ERROR_CODE, error_code)
        if status in ("error", "dead_letter") or (status == "retry" and message):
            # A retried attempt did fail; the span status carries its message.
            self.span.set_status(Status(StatusCode.ERROR, message))

    def set_attribute(self, key: str, value: Any) -> None:
        """Set a business attribute (`retail.<key>`); None is skipped."""
        if value is not None:
            self.span.set_attribute(_retail_key(key), _attribute_value(value))


class _FlowStep:
    """What `flow_step` returns: a context manager, and a decorator for sync or async functions."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._open: list[AbstractContextManager[Step]] = []

    def __enter__(self) -> Step:
        manager = _open_step(**self._options)
        step = manager.__enter__()
        self._open.append(manager)
        return step

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._open.pop().__exit__(*exc_info)

    def __call__(self, function: _F) -> _F:
        options = self._options
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _open_step(**options):
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _open_step(**options):
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]


def flow_step(
    flow: str,
    stage: str,
    *,
    channel: str | None = None,
    correlation_id: str | None = None,
    order_id: str | None = None,
    system: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    name: str | None = None,
    tracer: Tracer | None = None,
) -> _FlowStep:
    """Open a span for one integration step; `with flow_step(...) as step:` or `@flow_step(...)`.

    correlation_id, channel and order_id default to the current baggage (correlation_id else to
    a new uuid4 hex) and are put in the baggage for the duration, so nested steps and outgoing
    requests (`inject_headers`) carry them. An exception marks the span ERROR and propagates.
    """
    return _FlowStep(
        {
            "flow": flow,
            "stage": stage,
            "channel": channel,
            "correlation_id": correlation_id,
            "order_id": order_id,
            "system": system,
            "attributes": attributes,
            "name": name,
            "tracer": tracer,
        }
    )


@contextmanager
def _open_step(
    *,
    flow: str,
    stage: str,
    channel: str | None,
    correlation_id: str | None,
    order_id: str | None,
    system: str | None,
    attributes: Mapping[str, Any] | None,
    name: str | None,
    tracer: Tracer | None,
) -> Iterator[Step]:
    ctx = context.get_current()
    correlation_id = correlation_id or _baggage(BAGGAGE_CORRELATION_ID, ctx) or uuid.uuid4().hex
    channel = channel or _baggage(BAGGAGE_CHANNEL, ctx)
    order_id = order_id or _baggage(BAGGAGE_ORDER_ID, ctx)
    for key, value in (
        (BAGGAGE_CORRELATION_ID, correlation_id),
        (BAGGAGE_CHANNEL, channel),
        (BAGGAGE_ORDER_ID, order_id),
    ):
        if value:
            ctx = baggage.set_baggage(key, value, ctx)
    span_attributes = _retail_attributes(attributes)
    for key, value in (
        (ATTR_FLOW, flow),
        (ATTR_STAGE, stage),
        (ATTR_CHANNEL, channel),
        (ATTR_CORRELATION_ID, correlation_id),
        (ATTR_ORDER_ID, order_id),
        (ATTR_SYSTEM, system),
    ):
        if value is not None:
            span_attributes[key] = value
    tracer = tracer or trace.get_tracer(__name__)
    token = context.attach(ctx)
    try:
        with tracer.start_as_current_span(
            name or f"{flow}.{stage}",
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield Step(span, correlation_id)
            except Exception as exc:  # recorded on the span, then re-raised unchanged
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
    finally:
        context.detach(token)


def current_correlation_id() -> str | None:
    """The correlation id in the current baggage, if any."""
    return _baggage(BAGGAGE_CORRELATION_ID, context.get_current())


def inject_headers(carrier: dict[str, str]) -> dict[str, str]:
    """Add W3C `traceparent`/`baggage` headers for the current context (global propagator)."""
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str]) -> Context:
    """The context incoming headers carry; `context.attach` it in receiving middleware."""
    return propagate.extract(headers)


def _baggage(key: str, ctx: Context) -> str | None:
    value = baggage.get_baggage(key, ctx)
    return str(value) if value else None


def _retail_key(key: str) -> str:
    return key if key.startswith(ATTR_PREFIX) else ATTR_PREFIX + key


def _retail_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        _retail_key(key): _attribute_value(value)
        for key, value in (attributes or {}).items()
        if value is not None
    }


def _attribute_value(value: Any) -> str | bool | int | float:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (Mapping, list, tuple, set)):
        return json.dumps(
            list(value) if isinstance(value, set) else value, default=str, separators=(",", ":")
        )
    return str(value)
