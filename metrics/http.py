"""HTTP read routes of the metrics room: `GET /v1/sla` and the SLA part of `GET /metrics`.

`/v1/sla` computes the table for any window from rollups (fast at any data size); `/metrics`
exposes the scheduler's stored table (window 1h) as Prometheus gauges, so scraping costs one
small read.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from controltower.auth import KeyCache
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.errors import ConfigError, StorageUnavailable
from controltower.settings import parse_duration
from metrics import compute, jobs

MAX_WINDOW = timedelta(days=90)
SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")  # as the canonical event's channel
_FIELDS = (
    "sla", "kind", "channel", "flow", "count", "p50_ms", "p95_ms", "p99_ms", "target_ms", "within_target_ratio",
    "open_breaches", "oldest_breach_ms", "value", "threshold", "health", "reason", "objective",
    "error_budget_remaining", "burn_rate_short", "burn_rate_long",
)
# (metric, help, row field, scale)
GAUGES = (
    ("controltower_sla_completed", "Transactions that completed the SLA in the last hour (events for rate SLAs).", "count", 1),
    ("controltower_sla_latency_p50_seconds", "Median latency from the SLA's start to its end milestone.", "p50_ms", 0.001),
    ("controltower_sla_latency_p95_seconds", "95th percentile latency.", "p95_ms", 0.001),
    ("controltower_sla_latency_p99_seconds", "99th percentile latency.", "p99_ms", 0.001),
    ("controltower_sla_target_seconds", "The SLA's target (or maximum age/silence).", "target_ms", 0.001),
    ("controltower_sla_within_target_ratio", "Share of completed transactions within target.", "within_target_ratio", 1),
    ("controltower_sla_open_breaches", "Transactions past target without their end milestone (stale keys, silent channels).", "open_breaches", 1),
    ("controltower_sla_oldest_breach_seconds", "Age of the oldest open breach.", "oldest_breach_ms", 0.001),
    ("controltower_sla_value", "Value of a rate, freshness or absence SLA (ratio, count or milliseconds).", "value", 1),
    ("controltower_sla_error_budget_remaining_ratio", "Error budget left over the SLA's period (1 = untouched, < 0 = exhausted).", "error_budget_remaining", 1),
    ("controltower_sla_burn_rate_1h", "Error budget burn rate over the last hour.", "burn_rate_short", 1),
    ("controltower_sla_burn_rate_6h", "Error budget burn rate over the last 6 hours.", "burn_rate_long", 1),
)
HEALTH_VALUE = {"ok": 0, "warn": 1, "critical": 2}


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(rows: list[dict[str, Any]]) -> str:
    """Prometheus text format 0.0.4 (what `promtool check metrics` accepts)."""
    lines: list[str] = []
    for name, help_, field, scale in GAUGES:
        samples = [r for r in rows if r.get(field) is not None and math.isfinite(float(r[field]))]
        if not samples:
            continue
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
        for r in samples:
            labels = f'sla="{_label(r["sla"])}",channel="{_label(r["channel"])}",flow="{_label(r.get("flow") or "*")}"'
            lines.append(f"{name}{{{labels}}} {float(r[field]) * scale:.6g}")
    if rows:
        lines += ["# HELP controltower_sla_health SLA health: 0 ok, 1 warn, 2 critical.", "# TYPE controltower_sla_health gauge"]
        for r in rows:
            labels = f'sla="{_label(r["sla"])}",channel="{_label(r["channel"])}",flow="{_label(r.get("flow") or "*")}"'
            lines.append(f"controltower_sla_health{{{labels}}} {HEALTH_VALUE.get(r['health'], 0)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in _FIELDS}
    for k in ("p50_ms", "p95_ms", "p99_ms"):
        if out[k] is not None:
            out[k] = round(out[k])
    return out


def routes(context: AppContext) -> list[BaseRoute]:
    keys = KeyCache(context.engine, require=context.settings.require_api_keys)
    defs = jobs.load_definitions(context.settings)

    async def denied(request: Request) -> Response | None:
        try:
            ok = await run_in_threadpool(keys.check, request.headers, "read")
        except StorageUnavailable:
            return _error(503, "storage unavailable, retry later", context.settings.retry_after_seconds)
        return None if ok else _error(401, "missing or invalid API key (Authorization: Bearer …) with the read scope")

    async def sla(request: Request) -> Response:
        refused = await denied(request)
        if refused:
            return refused
        raw = request.query_params.get("window", "1h")
        try:
            seconds = parse_duration(raw, where="window")
        except ConfigError as exc:
            return _error(400, str(exc))
        if not 0 < seconds <= MAX_WINDOW.total_seconds():  # before timedelta(): huge numbers overflow it
            return _error(400, f"window: {raw[:40]} must be above 0 and at most 90d")
        window = timedelta(seconds=seconds)
        channel = request.query_params.get("channel") or None
        if channel is not None and not SLUG.match(channel):
            return _error(400, f"channel: {channel[:40]!r} is not a channel name (lowercase letters, digits, _ - .)")
        now = datetime.now(UTC)

        def run() -> list[dict[str, Any]]:
            with context.engine.connect() as conn:
                return compute.sla_table(conn, defs, window=window, now=now, channel=channel)

        try:
            table = await run_in_threadpool(run)
        except Exception as exc:
            if is_unavailable(exc):
                return _error(503, "storage unavailable, retry later", context.settings.retry_after_seconds)
            raise
        body = {"window": raw, "as_of": now.isoformat().replace("+00:00", "Z"), "slas": [_json_row(r) for r in table]}
        return Response(orjson.dumps(body), media_type="application/json")

    async def metrics(request: Request) -> Response:
        try:
            rows = await run_in_threadpool(jobs.stored_table, context.engine, "1h")
        except Exception as exc:
            if is_unavailable(exc):
                return PlainTextResponse("# SLA values unavailable: storage unreachable\n")
            raise
        rows = [r | {"flow": compute.flow_of(defs.get(r["sla"]))} for r in rows]
        return PlainTextResponse(exposition(rows), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [Route("/v1/sla", sla, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]


def _error(status: int, message: str, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
