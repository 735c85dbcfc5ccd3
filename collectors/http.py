"""The collector's HTTP routes: OTLP traces and canonical events in, transactions out.

Ingest answers only after the batch is committed. A storage outage answers 503 with
Retry-After (never 500, which OpenTelemetry exporters would not retry); a saturated write path
answers 503 too instead of queueing without bound. Parsing lives in `bodies`/`otlp`/`spans`,
writing in `store`; this module maps outcomes to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from collectors import bodies, otlp, spans
from collectors.counters import Counters
from collectors.masking import Masker, MaskingRules
from collectors.ratelimit import RateLimiter, retry_after
from collectors.store import EventStore, IngestResult
from controltower import apikeys, transactions
from controltower.auth import KeyCache, bearer_token
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.errors import StorageUnavailable

log = logging.getLogger(__name__)
MAX_OFFSET = 100_000  # deeper than any support search pages

PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPES = ("application/json",)


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, *, retry_after: int | None = None, **extra: Any) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ORJSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class Collector:
    """Holds what the routes share in one process: the store, key cache, limits and counters."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        settings = context.settings
        self.settings = settings
        self.store = EventStore(context.engine, settings, Masker(MaskingRules.load(settings.masking_rules)))
        self.keys = KeyCache(context.engine, require=settings.require_api_keys)
        self.limiter = RateLimiter(settings.rate_limit_events)
        self.counters = Counters()
        self._slots = asyncio.Semaphore(max(1, settings.max_inflight_batches))

    # -- shared request handling -----------------------------------------------------------
    async def _read(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise bodies.BodyTooLarge(f"body is {declared} bytes, more than the {limit} allowed")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise bodies.BodyTooLarge(f"body is more than the {limit} bytes allowed")
            chunks.append(chunk)
        raw = b"".join(chunks)
        return bodies.decompress(raw, request.headers.get("content-encoding"), limit)

    async def _authorize(self, request: Request, scope: str) -> Response | None:
        try:
            ok = await run_in_threadpool(self.keys.check, request.headers, scope)
        except StorageUnavailable:
            return _error(503, "storage unavailable, retry later", retry_after=self.settings.retry_after_seconds)
        if ok:
            return None
        self.counters.inc("unauthorized")
        return _error(401, f"missing or invalid API key for scope {scope!r} (Authorization: Bearer <key>)")

    def _limit(self, request: Request, cost: int) -> Response | None:
        """429 + Retry-After when this sender is over its rate (nothing was accepted)."""
        if not self.limiter.enabled:
            return None
        token = bearer_token(request.headers)
        sender = f"key:{apikeys.split_prefix(token) or 'invalid'}" if token else f"addr:{request.client.host if request.client else '-'}"
        wait = self.limiter.take(sender, cost)
        if not wait:
            return None
        self.counters.inc("rate_limited")
        return _error(429, f"rate limit of {self.limiter.rate:g} events/s exceeded for this sender, retry later",
                      retry_after=retry_after(wait))

    async def _write(self, records: list[Any], errors: dict[int, str], source: str) -> IngestResult | Response:
        retry = self.settings.retry_after_seconds
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=1.0)
        except TimeoutError:
            self.counters.inc("saturated")
            return _error(503, "collector saturated, retry later", retry_after=retry)
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(
                self.store.ingest, records, source=source, now=datetime.now(UTC), errors=errors
            )
        except StorageUnavailable as exc:
            log.warning("ingest refused, storage unavailable: %s", exc)
            self.counters.inc("storage_unavailable")
            return _error(503, "storage unavailable, retry later", retry_after=retry)
        except Exception as exc:  # process boundary: a database error is a retryable 503, never a lost 500
            if is_unavailable(exc):
                self.counters.inc("storage_unavailable")
                return _error(503, "storage unavailable, retry later", retry_after=retry)
            log.exception("ingest batch failed")
            self.counters.inc("write_errors")
            return _error(503, f"batch could not be stored ({type(exc).__name__}), retry later", retry_after=retry)
        finally:
            self._slots.release()
        self.counters.observe_batch(source, result, time.perf_counter() - started)
        return result

    # -- routes ------------------------------------------------------------------------------
    async def post_events(self, request: Request) -> Response:
        denied = await self._authorize(request, "ingest")
        if denied:
            return denied
        try:
            body = await self._read(request)
            records, errors = bodies.parse_events(body, request.headers.get("content-type"))
        except bodies.BodyTooLarge as exc:
            return _error(413, str(exc))
        except bodies.BodyError as exc:
            return _error(400, str(exc), accepted=0, duplicates=0, rejected=[])
        if not records:
            return _error(400, "the body holds no events (an empty array)", accepted=0, duplicates=0, rejected=[])
        limited = self._limit(request, len(records))
        if limited:
            return limited
        outcome = await self._write(records, errors, "api")
        if isinstance(outcome, Response):
            return outcome
        if outcome.accepted or outcome.duplicates:
            return ORJSONResponse(outcome.to_json())
        answer = outcome.to_json() | {"error": f"none of the {len(records)} records could be stored; see rejected"}
        return ORJSONResponse(answer, status_code=400)

    async def post_traces(self, request: Request) -> Response:
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        as_json = kind in JSON_TYPES
        if kind not in PROTOBUF_TYPES + JSON_TYPES:
            return _error(415, f'Content-Type "{kind}" is not supported (application/x-protobuf or application/json)')
        denied = await self._authorize(request, "ingest")
        if denied:
            return denied
        try:
            body = await self._read(request)
            request_pb = otlp.decode_traces(body, kind)
        except bodies.BodyTooLarge as exc:
            return _error(413, str(exc))
        except (bodies.BodyError, otlp.OTLPDecodeError) as exc:
            return _error(400, str(exc))
        mapping = spans.map_request(request_pb)
        limited = self._limit(request, len(mapping.records))
        if limited:
            return limited
        outcome = await self._write(mapping.records, {}, "otlp")
        if isinstance(outcome, Response):
            return outcome
        reasons = list(mapping.rejected)
        for index, reason in outcome.rejected:
            record = mapping.records[index]
            name = record.get("span_id") or record.get("event_id") if isinstance(record, dict) else index
            reasons.append(f"span {name}: {reason}")
        rejected = len(reasons)
        message = "; ".join(reasons[:20]) + (f"; and {rejected - 20} more" if rejected > 20 else "")
        payload = otlp.encode_response(rejected, message, as_json)
        media = "application/json" if as_json else "application/x-protobuf"
        return Response(payload, status_code=200, media_type=media)

    async def search(self, request: Request) -> Response:
        denied = await self._authorize(request, "read")
        if denied:
            return denied
        q = request.query_params.get("q", "").strip()
        if not q:
            return _error(400, "q: missing (an order id, correlation id, marketplace order number, SKU or tracking number)")
        try:
            limit = int(request.query_params.get("limit", "50"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return _error(400, "limit and offset must be integers")
        if not 1 <= limit <= 200 or not 0 <= offset <= MAX_OFFSET:
            return _error(400, f"limit must be 1..200 and offset 0..{MAX_OFFSET} (got limit={limit}, offset={offset})")

        def run() -> list[dict[str, Any]]:
            with self.context.engine.connect() as conn:
                return transactions.search(conn, q, limit=limit + 1, offset=offset)

        rows = await self._read_db(run)
        if isinstance(rows, Response):
            return rows
        more = len(rows) > limit
        return ORJSONResponse(
            {"q": q, "results": rows[:limit], "limit": limit, "offset": offset,
             "next_offset": offset + limit if more else None}
        )

    async def transaction(self, request: Request) -> Response:
        denied = await self._authorize(request, "read")
        if denied:
            return denied
        cid = request.path_params["correlation_id"]

        def run() -> dict[str, Any] | None:
            with self.context.engine.connect() as conn:
                return transactions.get(conn, cid, now=datetime.now(UTC))

        found = await self._read_db(run)
        if isinstance(found, Response):
            return found
        if found is None:
            return _error(404, f"no transaction with correlation_id {cid!r}")
        return ORJSONResponse(found)

    async def _read_db(self, fn: Any) -> Any:
        try:
            return await run_in_threadpool(fn)
        except Exception as exc:  # process boundary for reads: a database outage is a 503
            if is_unavailable(exc):
                return _error(503, "storage unavailable, retry later", retry_after=self.settings.retry_after_seconds)
            raise

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/events", self.post_events, methods=["POST"]),
            Route("/v1/traces", self.post_traces, methods=["POST"]),
            Route("/v1/transactions", self.search, methods=["GET"]),
            Route("/v1/transactions/{correlation_id:path}", self.transaction, methods=["GET"]),
        ]


def routes(context: AppContext) -> tuple[list[BaseRoute], Collector]:
    collector = Collector(context)
    return collector.routes(), collector
