"""JSON responses of the API: orjson-encoded, and the one error shape `{"error": "…"}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse, Response


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, *, retry_after: int | None = None, **extra: Any) -> Response:
    """`{"error": message, **extra}` with `status` (and `Retry-After` when given)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ORJSONResponse({"error": message, **extra}, status_code=status, headers=headers)
