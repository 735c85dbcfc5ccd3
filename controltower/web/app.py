"""`Web`: what one process's HTTP layer shares (settings, the one KeyCache, the metrics
registry), and `build_app`, which mounts the rooms' routes and collectors behind it.

Composition (which rooms) is the wiring's job; this module knows no room.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from controltower.auth import KeyCache
from controltower.context import AppContext
from controltower.web.handlers import exception_handlers
from controltower.web.limits import BodyLimit
from controltower.web.metrics import RefusalCounters, metrics_endpoint, new_registry


class Web:
    def __init__(self, context: AppContext, collectors: Iterable[Collector] = ()) -> None:
        self.context = context
        self.settings = context.settings
        self.keys = KeyCache(context.engine, require=context.settings.require_api_keys)
        self.refusals = RefusalCounters()
        # Hook: any room (e.g. alerts' "last successful evaluation") adds a collector here.
        self.registry = new_registry([self.refusals, *collectors])

    def count(self, refusal: str) -> None:
        self.refusals.inc(refusal)


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def build_app(
    context: AppContext, routes: Sequence[BaseRoute], collectors: Iterable[Collector] = ()
) -> Starlette:
    """One Starlette app: `routes` plus `/metrics`, behind the body limit and error handlers."""
    web = Web(context, collectors)
    settings = context.settings
    app = Starlette(
        routes=[Route("/metrics", metrics_endpoint, methods=["GET"]), *routes],
        middleware=[Middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)],
        exception_handlers=exception_handlers(web),
    )
    app.state.web = web
    app.state.context = context
    return app
