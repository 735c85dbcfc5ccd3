"""HTTP read routes of the metrics room (`/v1/sla`, `/metrics`), mounted by `controltower serve`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from controltower.context import AppContext


def routes(context: AppContext) -> list[BaseRoute]:
    return []
