"""HTTP read routes of the metrics room: `GET /v1/sla`, the identity signals (`GET
/v1/identity/orphans`, `/duplicates`, `/hubs`), and the SLA gauges of `GET /metrics`.

`/v1/sla` computes the table for any window from rollups (fast at any data size); the
`SlaGauges` collector exposes the scheduler's stored table (window 1h) through the web layer's
one registry, so scraping costs one small read. Auth and outage mapping are the web layer's.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.errors import ConfigError
from controltower.settings import parse_duration
from controltower.web import error, require_scope
from metrics import compute, exceptions_http, jobs, signallists

log = logging.getLogger(__name__)
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


LABELS = ["sla", "channel", "flow"]


def families(rows: list[dict[str, Any]]) -> list[Metric]:
    """The SLA table as gauge families (each family's samples together; empty ones left out)."""
    out: list[Metric] = []
    for name, help_, field, scale in GAUGES:
        samples = [r for r in rows if r.get(field) is not None and math.isfinite(float(r[field]))]
        if not samples:
            continue
        family = GaugeMetricFamily(name, help_, labels=LABELS)
        for r in samples:
            family.add_metric(_labels(r), float(r[field]) * scale)
        out.append(family)
    if rows:
        family = GaugeMetricFamily("controltower_sla_health", "SLA health: 0 ok, 1 warn, 2 critical.", labels=LABELS)
        for r in rows:
            family.add_metric(_labels(r), HEALTH_VALUE.get(r["health"], 0))
        out.append(family)
    return out


def _labels(row: dict[str, Any]) -> list[str]:
    return [str(row["sla"]), str(row["channel"]), str(row.get("flow") or "*")]


class SlaGauges(Collector):
    """Reads the stored 1h table on every scrape; a database outage yields no SLA samples."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.defs = jobs.load_definitions(context.settings)

    def collect(self) -> Iterator[Metric]:
        try:
            rows = jobs.stored_table(self.context.engine, "1h")
        except Exception as exc:  # a scrape during an outage still shows the process's own counters
            if not is_unavailable(exc):
                raise
            log.warning("SLA values unavailable for /metrics: %s", exc)
            return
        rows = [r | {"flow": compute.flow_of(self.defs.get(r["sla"]))} for r in rows]
        yield from families(rows)


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in _FIELDS}
    for k in ("p50_ms", "p95_ms", "p99_ms"):
        if out[k] is not None:
            out[k] = round(out[k])
    return out


def routes(context: AppContext) -> list[BaseRoute]:
    defs = jobs.load_definitions(context.settings)

    @require_scope("read")
    async def sla(request: Request) -> Response:
        raw = request.query_params.get("window", "1h")
        try:
            seconds = parse_duration(raw, where="window")
        except ConfigError as exc:
            return error(400, str(exc)[:300])
        if not 0 < seconds <= MAX_WINDOW.total_seconds():  # before timedelta(): huge numbers overflow it
            return error(400, f"window: {raw[:40]} must be above 0 and at most 90d")
        window = timedelta(seconds=seconds)
        channel = request.query_params.get("channel") or None
        if channel is not None and not SLUG.match(channel):
            return error(400, f"channel: {channel[:40]!r} is not a channel name (lowercase letters, digits, _ - .)")
        now = datetime.now(UTC)

        def run() -> list[dict[str, Any]]:
            with context.engine.connect() as conn:
                return compute.sla_table(conn, defs, window=window, now=now, channel=channel)

        table = await run_in_threadpool(run)
        body = {"window": raw, "as_of": now.isoformat().replace("+00:00", "Z"), "slas": [_json_row(r) for r in table]}
        return Response(orjson.dumps(body), media_type="application/json")

    def listing(name: str, read: Any) -> Any:
        @require_scope("read")
        async def endpoint(request: Request) -> Response:
            query = _identity_query(request, name)
            if isinstance(query, str):
                return error(400, query)
            limit, offset = query.pop("limit"), query.pop("offset")
            now = datetime.now(UTC)

            def run() -> dict[str, Any]:
                with context.engine.connect() as conn:
                    return read(conn, now, query, limit + 1, offset)

            body = await run_in_threadpool(run)
            rows = body[name]
            body[name] = rows[:limit]
            body |= {"limit": limit, "offset": offset, "next_offset": offset + limit if len(rows) > limit else None}
            return Response(orjson.dumps({"as_of": _z(now)} | body), media_type="application/json")

        return endpoint

    grace_ms = context.settings.orphan_grace_seconds * 1000

    def orphans(conn: Any, now: datetime, query: dict[str, Any], limit: int, offset: int) -> dict[str, Any]:
        return {"grace_ms": grace_ms, "orphans": signallists.orphans(conn, now=now, limit=limit, offset=offset, **query),
                "counts": signallists.orphan_counts(conn)}

    def duplicates(conn: Any, now: datetime, query: dict[str, Any], limit: int, offset: int) -> dict[str, Any]:
        return {"duplicates": signallists.duplicates(conn, limit=limit, offset=offset, **query)}

    def hubs(conn: Any, now: datetime, query: dict[str, Any], limit: int, offset: int) -> dict[str, Any]:
        return {"hubs": signallists.hubs(conn, limit=limit, offset=offset, **query)}

    return [
        Route("/v1/sla", sla, methods=["GET"]),
        Route("/v1/identity/orphans", listing("orphans", orphans), methods=["GET"]),
        Route("/v1/identity/duplicates", listing("duplicates", duplicates), methods=["GET"]),
        Route("/v1/identity/hubs", listing("hubs", hubs), methods=["GET"]),
        *exceptions_http.routes(context),  # the exception work queue
    ]


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_COUNT = re.compile(r"^[0-9]{1,7}$")  # ASCII digits only: int() would take "٣" and " 3"


def _identity_query(request: Request, name: str) -> dict[str, Any] | str:
    """The paging and filters of one identity list, or what is wrong with them (one line)."""
    allowed = ("limit", "offset", *signallists.FILTERS[name])
    params = request.query_params
    for key in params:
        if key not in allowed:
            return f"unknown query parameter {key[:40]!r} (expected {', '.join(allowed)})"
        if len(params.getlist(key)) > 1:
            return f"{key}: given more than once"
    out: dict[str, Any] = {key: params.get(key) or None for key in allowed}  # an empty filter: all
    for key, default in (("limit", signallists.PAGE_DEFAULT), ("offset", 0)):
        raw = params.get(key, str(default))
        if not _COUNT.match(raw):
            return f"{key}: {raw[:40]!r} is not an integer"
        out[key] = int(raw)
    problem = signallists.check(name, out["limit"], out["offset"], {k: out[k] for k in signallists.FILTERS[name]})
    return problem or out


def collectors(context: AppContext) -> list[Collector]:
    return [SlaGauges(context)]
