"""`require_scope`: the key check every /v1 route runs first, before its body is read.

Wrap an endpoint in `require_scope("read")` or `require_scope("ingest")`; it looks the key up
in the app's one KeyCache (`Web.keys`) off the event loop and raises `Unauthorized` (401).
`read_json` is the one way a small JSON body is read after that: capped at `SMALL_BODY_BYTES`,
timed by the `BodyLimit` middleware, parsed off the loop, with any malformed or too-deep body a 400.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from controltower.auth import bearer_token
from controltower.web.errors import BadBody, RequestTooLarge, Unauthorized

Endpoint = Callable[[Request], Awaitable[Response]]
SCOPES = ("ingest", "read")


def require_scope(scope: str) -> Callable[[Endpoint], Endpoint]:
    """Decorator: the endpoint runs only for a request whose key has `scope` (once keys are enforced)."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            await authorize(request, scope)
            return await endpoint(request)

        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded

    return wrap


async def authorize(request: Request, scope: str) -> None:
    web = request.app.state.web
    if not await run_in_threadpool(web.keys.check, request.headers, scope):
        raise Unauthorized(scope)


async def authorize_metrics(request: Request) -> None:
    """/metrics: `metrics_auth` read-key (default), token (constant-time compare) or open."""
    web = request.app.state.web
    mode = web.settings.metrics_auth
    if mode == "open":
        return
    if mode == "token":
        expected = (web.settings.metrics_token or "").encode()
        given = (bearer_token(request.headers) or "").encode("utf-8", "replace")
        if not expected or not hmac.compare_digest(given, expected):
            raise Unauthorized("metrics token")
        return
    await authorize(request, "read")


SMALL_BODY_BYTES = 64 * 1024  # a command body ({"by": "name"}); ingest bodies are not read here


MAX_BY_CHARS = 200  # the longest name a command body may give as the person acting


def acting_person(body: Any) -> str | None:
    """Who acts, from a command body `{"by": "name"}`: printable text, cut to MAX_BY_CHARS ("api"
    when the body or its `by` is absent or empty); None when `by` is not a string (a 400)."""
    if body is None:
        return "api"
    if not isinstance(body, dict):
        return None
    by = body.get("by", "api")
    if by is None:
        return "api"
    if not isinstance(by, str):
        return None
    return "".join(ch for ch in by if ch.isprintable()).strip()[:MAX_BY_CHARS] or "api"


async def read_json(request: Request, max_bytes: int = SMALL_BODY_BYTES) -> Any:
    """The body as JSON (None when empty); `BadBody` when it is not JSON or nested too deep;
    `RequestTooLarge` past `max_bytes`, counted while it streams in (never held whole first)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestTooLarge(f"body is more than the {max_bytes} bytes this route allows")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return await run_in_threadpool(orjson.loads, raw)
    except orjson.JSONDecodeError as exc:
        raise BadBody(f"body is not JSON: {str(exc)[:120]}") from None
