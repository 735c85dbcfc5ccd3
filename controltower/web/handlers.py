"""Exceptions → HTTP answers, registered once on the app: a room never maps them itself.

A storage outage (StorageUnavailable or a database error meaning "unreachable") is a 503 with
`Retry-After` (OpenTelemetry exporters retry it; a 500 they would drop). Other database errors
are not ours to hide: they propagate to the server's 500 with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from controltower.db import is_unavailable
from controltower.errors import StorageUnavailable
from controltower.web.errors import BadBody, BodyTimeout, RequestTooLarge, Unauthorized
from controltower.web.responses import error

if TYPE_CHECKING:
    from controltower.web.app import Web

log = logging.getLogger(__name__)


def exception_handlers(web: Web) -> dict[Any, Callable[..., Any]]:
    """The handlers for Starlette's `exception_handlers=`; `web` counts the refusals."""
    retry = web.settings.retry_after_seconds

    async def unauthorized(request: Request, exc: Exception) -> Response:
        web.count("unauthorized")
        response = error(401, str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="controltower"'  # RFC 9110: a 401 names its scheme
        return response

    async def bad_body(request: Request, exc: Exception) -> Response:
        return error(400, str(exc))

    async def too_large(request: Request, exc: Exception) -> Response:
        return error(413, str(exc))

    async def timeout(request: Request, exc: Exception) -> Response:
        return error(408, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            raise exc
        log.warning("%s %s refused, storage unavailable: %s", request.method, request.url.path, exc)
        web.count("storage_unavailable")
        return error(503, "storage unavailable, retry later", retry_after=retry)

    async def disconnected(request: Request, exc: Exception) -> Response:
        # the sender went away mid-body: nobody reads this answer, but nothing is logged as a crash
        return error(400, "client disconnected before the body was complete")

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = error(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    return {
        Unauthorized: unauthorized,
        BadBody: bad_body,
        RequestTooLarge: too_large,
        BodyTimeout: timeout,
        StorageUnavailable: unavailable,
        DBAPIError: unavailable,
        psycopg.Error: unavailable,
        HTTPException: http_exception,
        ClientDisconnect: disconnected,
    }
