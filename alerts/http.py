"""HTTP read routes of the alerts room (`/v1/alerts`), mounted by `controltower serve`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from controltower.context import AppContext


def routes(context: AppContext) -> list[BaseRoute]:
    return []
