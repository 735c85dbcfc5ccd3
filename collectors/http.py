"""The collector's HTTP routes: OTLP traces and canonical events in, transactions out.

Ingest answers only after the batch is committed. Every POST runs in this order: the key check
(`require_scope`, 401), an in-flight slot (503 when saturated, taken BEFORE the body is read so
N concurrent bodies never cost N × body × parse blow-up), the body read (size limit 413 and
read timeout 408 by the web layer), parsing off the event loop, the rate limit (429), the
write. A storage outage answers 503 with Retry-After through the web layer's handler. Parsing
lives in `bodies`/`otlp`/`spans`, writing in `store`; this module maps outcomes to HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client.registry import Collector as MetricsCollector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from collectors import bodies, otlp, spans
from collectors.counters import Counters
from collectors.ratelimit import RateLimiter, retry_after
from collectors.store import EventStore, IngestResult
from controltower import transactions
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.masking import Masker, MaskingRules
from controltower.web import ORJSONResponse, error, require_scope, web_of

log = logging.getLogger(__name__)
MAX_OFFSET = 100_000  # deeper than any support search pages
_COUNT = re.compile(r"^-?[0-9]{1,18}$")  # ASCII digits only (a sign is refused by the range check with the value)
SLOT_WAIT_SECONDS = 1.0
VALUES_PER_RECORD = 40  # JSON values parsed per request: max_batch_events × this (about 150 MB at most)

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)


# The cyclic garbage collector's thresholds for a collector process: a batch allocates tens of
# thousands of containers (decoded records, events, rows), so the default gen-0 threshold (700)
# runs a collection every few dozen records, and each full one walks every object the process
# imported (web framework, SQLAlchemy: hundreds of thousands). Measured (bench/ingest.py): ~5 ms
# CPU per 1,000 events. Nothing on the ingest path builds reference cycles that need prompt
# collection, so collections run less often, and what was loaded at start-up is frozen out.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Once per collector process, by the server before it serves (idempotent); not in tests,
    whose processes build many apps and should collect their cycles."""
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class Collector:
    """Holds what the routes share in one process: the store, limits and counters."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        settings = context.settings
        self.settings = settings
        self.masker = Masker(MaskingRules.for_settings(settings))
        self.store = EventStore(context.engine, settings, self.masker)
        self.limiter = RateLimiter(settings.rate_limit_events)
        self.counters = Counters()
        self._slots = asyncio.Semaphore(max(1, settings.max_inflight_batches))

    # -- shared request handling -----------------------------------------------------------
    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=SLOT_WAIT_SECONDS)
        except TimeoutError:
            self.counters.inc("saturated")
            raise _Refused(error(503, "collector saturated, retry later", retry_after=self.settings.retry_after_seconds)) from None
        try:
            yield
        finally:
            self._slots.release()

    async def _parse(self, request: Request, parse: Callable[[bytes], Any], *, json: bool = True) -> Any:
        """Read the body (web layer limits apply), then inflate, bound (JSON values) and parse it
        off the event loop."""
        raw = await request.body()
        encoding = request.headers.get("content-encoding")
        limit = self.settings.max_body_bytes
        values = self.settings.max_batch_events * VALUES_PER_RECORD

        def run() -> Any:
            body = bodies.decompress(raw, encoding, limit)
            if json:
                bodies.check_values(body, values)
            return parse(body)

        try:
            return await run_in_threadpool(run)
        except bodies.BodyTooLarge as exc:
            raise _Refused(error(413, str(exc))) from None

    async def _limit(self, request: Request, cost: int) -> None:
        """429 + Retry-After when this sender is over its rate (nothing was accepted).

        The sender is the valid key the request carries, else the client address: an unknown
        token never gets a bucket of its own.
        """
        if not self.limiter.enabled:
            return
        key = await run_in_threadpool(web_of(request).keys.identify, request.headers)
        sender = f"key:{key.prefix}" if key else f"addr:{request.client.host if request.client else '-'}"
        wait = self.limiter.take(sender, cost)
        if wait:
            self.counters.inc("rate_limited")
            message = f"rate limit of {self.limiter.rate:g} events/s exceeded for this sender, retry later"
            raise _Refused(error(429, message, retry_after=retry_after(wait)))

    async def _write(self, records: list[Any], errors: dict[int, str], source: str) -> IngestResult:
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(
                self.store.ingest, records, source=source, now=datetime.now(UTC), errors=errors
            )
        except Exception as exc:  # process boundary: a database error is a retryable 503, never a lost 500
            if is_unavailable(exc):
                raise  # the web layer answers 503 + Retry-After and counts it
            log.exception("ingest batch failed")
            self.counters.inc("write_errors")
            message = f"batch could not be stored ({type(exc).__name__}), retry later"
            raise _Refused(error(503, message, retry_after=self.settings.retry_after_seconds)) from None
        self.counters.observe_batch(source, result, time.perf_counter() - started)
        return result

    # -- routes ------------------------------------------------------------------------------
    async def post_events(self, request: Request) -> Response:
        try:
            async with self._slot():
                try:
                    records, errors = await self._parse(
                        request, lambda body: bodies.decode_events(body, request.headers.get("content-type"))
                    )
                except bodies.BodyError as exc:
                    return error(400, str(exc), accepted=0, duplicates=0, rejected=[])
                if not records:
                    return error(400, "the body holds no events (an empty array)", accepted=0, duplicates=0, rejected=[])
                cap = self.settings.max_batch_events
                if len(records) > cap:  # one rejection per extra record would answer ~50 bytes per 2 sent
                    return error(413, f"the body holds {len(records)} records, more than the {cap} allowed per "
                                      "request; nothing was stored, send them in smaller batches")
                await self._limit(request, len(records))
                outcome = await self._write(records, errors, "api")
        except _Refused as refused:
            return refused.response
        if outcome.accepted or outcome.duplicates:
            return ORJSONResponse(outcome.to_json())
        answer = outcome.to_json() | {"error": f"none of the {len(records)} records could be stored; see rejected"}
        return ORJSONResponse(answer, status_code=400)

    async def post_traces(self, request: Request) -> Response:
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        as_json = kind in JSON_TYPES
        if kind not in PROTOBUF_TYPES + JSON_TYPES:
            return error(415, f'Content-Type "{kind[:80]}" is not supported (application/x-protobuf or application/json)')
        try:
            async with self._slot():
                try:
                    mapping = await self._parse(request, lambda body: spans.map_request(otlp.decode_traces(body, kind)),
                                                json=as_json)
                except (bodies.BodyError, otlp.OTLPDecodeError) as exc:
                    return error(400, str(exc))
                await self._limit(request, len(mapping.records))
                outcome = await self._write(mapping.records, {}, "otlp")
        except _Refused as refused:
            return refused.response
        reasons = list(mapping.rejected)
        reasons += rejected_span_reasons(mapping.records, outcome.rejected)
        rejected = len(reasons)
        message = "; ".join(reasons[:20]) + (f"; and {rejected - 20} more" if rejected > 20 else "")
        payload = otlp.encode_response(rejected, message, as_json)
        media = "application/json" if as_json else "application/x-protobuf"
        return Response(payload, status_code=200, media_type=media)

    async def search(self, request: Request) -> Response:
        for name in ("q", "limit", "offset"):  # a repeated one would be read as its last: a proxy checks another
            if len(request.query_params.getlist(name)) > 1:
                return error(400, f"{name}: given more than once")
        q = request.query_params.get("q", "").strip()
        if not q:
            return error(400, "q: missing (an order id, correlation id, marketplace order number, SKU or tracking number)")
        raw_limit, raw_offset = request.query_params.get("limit", "50"), request.query_params.get("offset", "0")
        if not (_COUNT.match(raw_limit) and _COUNT.match(raw_offset)):  # int() takes "٥", "1_0" and " 5"
            return error(400, "limit and offset must be integers")
        limit, offset = int(raw_limit), int(raw_offset)
        if not 1 <= limit <= 200 or not 0 <= offset <= MAX_OFFSET:
            return error(400, f"limit must be 1..200 and offset 0..{MAX_OFFSET} (got limit={limit}, offset={offset})")

        # an identifier carrying personal data was stored as a token: search for what was stored
        stored = self.masker.mask_identifier(q)

        def run() -> list[dict[str, Any]]:
            with self.context.engine.connect() as conn:
                return transactions.search(conn, stored, limit=limit + 1, offset=offset)

        rows = await run_in_threadpool(run)
        more = len(rows) > limit
        return ORJSONResponse(
            {"q": q, "results": rows[:limit], "limit": limit, "offset": offset,
             "next_offset": offset + limit if more else None}
        )

    async def transaction(self, request: Request) -> Response:
        cid = request.path_params["correlation_id"]
        stored = self.masker.mask_identifier(cid)

        def run() -> dict[str, Any] | None:
            with self.context.engine.connect() as conn:
                return transactions.get(conn, stored, now=datetime.now(UTC))

        found = await run_in_threadpool(run)
        if found is None:
            return error(404, f"no transaction with correlation_id {cid[:200]!r}")
        return ORJSONResponse(found)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/events", require_scope("ingest")(self.post_events), methods=["POST"]),
            Route("/v1/traces", require_scope("ingest")(self.post_traces), methods=["POST"]),
            Route("/v1/transactions", require_scope("read")(self.search), methods=["GET"]),
            Route("/v1/transactions/{correlation_id:path}", require_scope("read")(self.transaction), methods=["GET"]),
        ]


def rejected_span_reasons(records: list[dict[str, Any]], rejected: list[tuple[int, str]]) -> list[str]:
    """One reason per distinct span among the records the store rejected (a span with a
    `retail.milestone` event yields several records; OTLP's `rejected_spans` counts spans)."""
    by_span: dict[str, str] = {}
    for index, reason in rejected:
        record = records[index]
        name = str(record.get("span_id") or record.get("event_id") or index) if isinstance(record, dict) else str(index)
        trace = record.get("trace_id", "") if isinstance(record, dict) else ""
        by_span.setdefault(f"{trace}/{name}", f"span {name}: {reason}")
    return list(by_span.values())


def routes(context: AppContext) -> list[BaseRoute]:
    return Collector(context).routes()


def build(context: AppContext) -> tuple[list[BaseRoute], list[MetricsCollector]]:
    """The collector's routes and its metrics collectors (its counters), sharing one state."""
    collector = Collector(context)
    return collector.routes(), [collector.counters]
