"""What a request can be refused for before any room's logic runs, and its HTTP status.

Raised anywhere below an endpoint; the handlers in `controltower.web.handlers` turn them into
the one JSON error shape. They carry no HTTP objects, so non-HTTP code may raise them too.
"""

from __future__ import annotations

from controltower.errors import ControlTowerError


class Unauthorized(ControlTowerError):
    """No valid key for the route's scope (HTTP 401)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"missing or invalid API key for scope {scope!r} (Authorization: Bearer <key>)")
        self.scope = scope


class RequestTooLarge(ControlTowerError):
    """The request body (declared or streamed) is larger than `max_body_bytes` (HTTP 413)."""


class BodyTimeout(ControlTowerError):
    """The request body did not arrive within `body_timeout` (HTTP 408)."""


class BadBody(ControlTowerError):
    """The body is not what the route expects, e.g. not JSON or nested too deep (HTTP 400)."""
