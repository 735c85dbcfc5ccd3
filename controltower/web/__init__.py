"""The one web layer every room's routes run behind: auth, body limits, error mapping, /metrics.

Rooms contribute `routes(context) -> list[BaseRoute]` (endpoints wrapped in `require_scope`)
and `collectors(context) -> list[Collector]` (prometheus_client collectors); the wiring mounts
them with `build_app`. Rooms never parse keys, map outages to 503 or cap bodies themselves.
"""

from controltower.web.app import Web, build_app, web_of
from controltower.web.errors import BadBody, BodyTimeout, RequestTooLarge, Unauthorized
from controltower.web.responses import ORJSONResponse, error
from controltower.web.security import acting_person, read_json, require_scope

__all__ = [
    "BadBody",
    "BodyTimeout",
    "ORJSONResponse",
    "RequestTooLarge",
    "Unauthorized",
    "Web",
    "acting_person",
    "build_app",
    "error",
    "read_json",
    "require_scope",
    "web_of",
]
