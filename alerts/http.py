"""HTTP read routes of the alerts room (`/v1/alerts`), mounted by `controltower serve`.

Authentication follows the collector's rule: once any API key exists (or with
`require_api_keys`), reads need a key with the `read` scope (`Authorization: Bearer <key>`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from alerts.evaluate import acknowledge, list_alerts, rfc3339
from controltower import apikeys
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.errors import ControlTowerError

_KEYS_TTL = 5.0


def _token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fingerprint": row["fingerprint"],
        "rule": row["rule"],
        "state": row["state"],
        "severity": row["severity"],
        "labels": row["labels"],
        "summary": row["summary"],
        "annotations": row["annotations"],
        "active_since": rfc3339(row["active_since"]) if row["active_since"] else None,
        "firing_since": rfc3339(row["firing_since"]) if row["firing_since"] else None,
        "value": row["last_value"],
        "dashboard_url": row["dashboard_url"],
        "acknowledged": row["acknowledged_at"] is not None,
        "acknowledged_by": row["acknowledged_by"],
        "acknowledged_at": rfc3339(row["acknowledged_at"]) if row["acknowledged_at"] else None,
        "last_evaluated_at": rfc3339(row["last_evaluated_at"]),
    }


def routes(context: AppContext) -> list[BaseRoute]:
    engine = context.engine
    settings = context.settings
    cache: dict[str, Any] = {"keys": None, "at": 0.0}

    def allowed(headers: Mapping[str, str], scope: str) -> bool:
        now = datetime.now(UTC)
        if cache["keys"] is None or time.monotonic() - cache["at"] > _KEYS_TTL:
            cache["keys"] = apikeys.active_keys(engine, now=now)
            cache["at"] = time.monotonic()
        keys = cache["keys"]
        if not keys and not settings.require_api_keys:
            return True
        return apikeys.verify(_token(headers), keys, scope, now=now) is not None

    async def guarded(request: Request, scope: str, fn: Any) -> Response:
        try:
            if not await run_in_threadpool(allowed, request.headers, scope):
                return JSONResponse(
                    {"error": f"missing or invalid API key for scope {scope!r} (Authorization: Bearer <key>)"},
                    status_code=401,
                )
            return await run_in_threadpool(fn)
        except Exception as exc:  # a database outage is a retryable 503
            if is_unavailable(exc):
                return JSONResponse(
                    {"error": "storage unavailable, retry later"}, status_code=503,
                    headers={"Retry-After": str(settings.retry_after_seconds)},
                )
            raise

    async def get_alerts(request: Request) -> Response:
        def run() -> Response:
            alerts = [alert_json(r) for r in list_alerts(engine)]
            return JSONResponse({"as_of": rfc3339(datetime.now(UTC)), "alerts": alerts})

        return await guarded(request, "read", run)

    async def post_ack(request: Request) -> Response:
        fingerprint = request.path_params["fingerprint"]
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return JSONResponse({"error": "body must be JSON: {\"by\": \"name\"}"}, status_code=400)
        by = str((body or {}).get("by") or "api") if isinstance(body, dict) else "api"

        def run() -> Response:
            try:
                row = acknowledge(engine, fingerprint, by, datetime.now(UTC), via="http")
            except ControlTowerError as exc:
                return JSONResponse({"error": str(exc)}, status_code=404)
            return JSONResponse({"fingerprint": row["fingerprint"], "acknowledged_by": by})

        # Acknowledging changes state: it needs the `ingest` (write) scope once keys exist.
        return await guarded(request, "ingest", run)

    return [
        Route("/v1/alerts", get_alerts, methods=["GET"]),
        Route("/v1/alerts/{fingerprint}/ack", post_ack, methods=["POST"]),
    ]
