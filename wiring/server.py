"""The collector process's ASGI app: each room's routes and metrics collectors mounted into one
Starlette app behind the core web layer (`controltower.web`: auth, limits, errors, /metrics).

Composition root (imports rooms). Health endpoints live here because they speak for the whole
process: `/healthz` is liveness, `/readyz` checks the database and that migrations are current.
Connection-level limits (keep-alive/header timeout, connection cap, header size) are uvicorn's,
set here from the settings.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import controltower
from controltower import __version__, migrate, web
from controltower.context import AppContext
from controltower.db import is_unavailable
from controltower.settings import Settings
from wiring.http11 import HeadTimeoutH11Protocol

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; larger heads are refused (h11's own default, made explicit)


def build_app(context: AppContext, extra_collectors: list[Collector] | None = None) -> Starlette:
    """Every room's routes and collectors in one app; `extra_collectors` adds more (tests, embedders)."""
    from alerts import http as alerts_http
    from collectors import http as collectors_http
    from metrics import http as metrics_http

    collector_routes, collector_metrics = collectors_http.build(context)
    room_routes: list[BaseRoute] = [
        *collector_routes,
        *metrics_http.routes(context),
        *alerts_http.routes(context),
    ]
    collectors: list[Collector] = [
        *collector_metrics,
        *metrics_http.collectors(context),
        *alerts_http.collectors(context),
        *(extra_collectors or []),
    ]

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

    async def openapi(request: Request) -> Response:
        return JSONResponse(_openapi_document())

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *room_routes,
    ]
    return web.build_app(context, routes, collectors)


@functools.cache
def _openapi_document() -> dict[str, Any]:
    return yaml.safe_load((Path(controltower.__file__).parent / "openapi.yaml").read_text())  # type: ignore[no-any-return]


def create_app() -> Starlette:
    """uvicorn factory for `--workers N`: each worker builds its own context from the environment."""
    settings = Settings.load()
    context = AppContext.open(settings, pool_size=settings.max_inflight_batches + 2, application_name="controltower-collector")
    app = build_app(context)
    collectors_gc()
    return app


def collectors_gc() -> None:
    from collectors.http import tune_gc

    tune_gc()


def serve(settings: Settings, *, workers: int = 1) -> None:
    """Run the collector until interrupted (migrations are applied by the caller)."""
    options = uvicorn_options(settings)
    if workers > 1:
        uvicorn.run("wiring.server:create_app", factory=True, workers=workers, **options)
        return
    context = AppContext.open(settings, pool_size=settings.max_inflight_batches + 2, application_name="controltower-collector")
    app = build_app(context)
    collectors_gc()
    uvicorn.run(app, **options)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Connection limits from the settings: keep-alive/header timeout, connection cap, header size."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "timeout_keep_alive": max(1, round(settings.header_timeout)),
        "limit_concurrency": settings.max_connections or None,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "http": HeadTimeoutH11Protocol,  # request heads get a deadline too (slowloris)
    }
