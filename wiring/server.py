"""The collector process's ASGI app: each room's routes mounted into one Starlette app.

Composition root (imports rooms). Health endpoints live here because they speak for the whole
process: `/healthz` is liveness, `/readyz` checks the database and that migrations are current.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from controltower import __version__, migrate
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.settings import Settings

log = logging.getLogger(__name__)


def build_app(context: AppContext) -> Starlette:
    from alerts import http as alerts_http
    from collectors import http as collectors_http
    from metrics import http as metrics_http

    collector_routes, collector = collectors_http.routes(context)
    room_routes: list[BaseRoute] = [
        *collector_routes,
        *metrics_http.routes(context),
        *alerts_http.routes(context),
    ]
    metrics_endpoint = _pop_route(room_routes, "/metrics")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> Response:
        try:
            current = await run_in_threadpool(migrate.is_current, context.engine)
        except Exception as exc:  # readiness reports any database failure as not ready
            if not is_unavailable(exc):
                log.warning("readyz: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503,
                                headers={"Retry-After": str(context.settings.retry_after_seconds)})
        if not current:
            return JSONResponse({"status": "unavailable", "database": "ok", "migrations": "pending"}, status_code=503)
        return JSONResponse({"status": "ready", "database": "ok", "migrations": "current"})

    async def metrics(request: Request) -> Response:
        # The collector's own counters, then whatever the metrics room exposes (SLA values).
        text = collector.counters.exposition()
        if metrics_endpoint is not None:
            room: Any = await metrics_endpoint(request)
            text += bytes(room.body).decode()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return JSONResponse(_openapi_document())

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *room_routes,
    ]
    app = Starlette(routes=routes)
    app.state.context = context
    app.state.collector = collector
    return app


@functools.cache
def _openapi_document() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text())  # type: ignore[no-any-return]


def _pop_route(routes: list[BaseRoute], path: str) -> Any:
    for i, route in enumerate(routes):
        if isinstance(route, Route) and route.path == path:
            del routes[i]
            return route.endpoint
    return None


def create_app() -> Starlette:
    """uvicorn factory for `--workers N`: each worker builds its own context from the environment."""
    settings = Settings.load()
    context = AppContext.open(settings, pool_size=settings.max_inflight_batches + 2, application_name="controltower-collector")
    return build_app(context)


def serve(settings: Settings, *, workers: int = 1) -> None:
    """Run the collector until interrupted (migrations are applied by the caller)."""
    log_level = settings.log_level.lower()
    if workers > 1:
        uvicorn.run(
            "wiring.server:create_app", factory=True, host=settings.host, port=settings.port,
            workers=workers, log_level=log_level, access_log=False,
        )
        return
    context = AppContext.open(settings, pool_size=settings.max_inflight_batches + 2, application_name="controltower-collector")
    uvicorn.run(build_app(context), host=settings.host, port=settings.port, log_level=log_level, access_log=False)
