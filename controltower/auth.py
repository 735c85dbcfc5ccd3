"""API-key authentication for every HTTP route: the keys of `controltower keys`, cached per process.

Keys are demanded once any key has EVER existed (revoking or letting the last one expire never
reopens the API), or always with `require_api_keys`. The cache is refreshed every few seconds
so a new or revoked key takes effect without a restart (rotation: create, switch senders,
revoke the old). When the database is briefly unreachable the last loaded keys keep serving.
This module checks keys; it does not speak HTTP (see `controltower.web`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from controltower import apikeys
from controltower.db import is_unavailable
from controltower.errors import StorageUnavailable

REFRESH_SECONDS = 5.0
MAX_TOKEN_CHARS = 512  # a real key is ~50 characters; anything longer is not one of ours


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>` (any case, any spacing) or `X-API-Key`.

    A request carrying the header twice names no key: which copy counts would depend on who
    reads it (this server takes the first, a proxy may check the last).
    """
    getlist = getattr(headers, "getlist", None)
    if getlist is not None and (len(getlist("authorization")) > 1 or len(getlist("x-api-key")) > 1):
        return None
    auth = (headers.get("authorization") or "").strip()
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return token
    return (headers.get("x-api-key") or "").strip() or None


class KeyCache:
    """The process's one view of the API keys (thread-safe, with an outage fallback)."""

    def __init__(self, engine: Engine, *, require: bool = False) -> None:
        self.engine = engine
        self.require = require
        self._keys: dict[str, apikeys.StoredKey] | None = None
        self._ever = False
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _current(self) -> tuple[dict[str, apikeys.StoredKey], bool]:
        with self._lock:
            if self._keys is None or time.monotonic() - self._loaded > REFRESH_SECONDS:
                try:
                    keys = apikeys.active_keys(self.engine, now=datetime.now(UTC))
                    ever = bool(keys) or self._ever or apikeys.any_key_ever(self.engine)
                    self._keys, self._ever = keys, ever
                    self._loaded = time.monotonic()
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
                    if self._keys is None:
                        raise StorageUnavailable("cannot load API keys") from exc
            return self._keys, self._ever

    def invalidate(self) -> None:
        """Forget the cached keys: the next check reloads them (tests, and after `keys create`)."""
        with self._lock:
            self._keys = None

    def enforced(self) -> bool:
        """True once keys are demanded: `require_api_keys`, or any key has ever existed."""
        keys, ever = self._current()
        return self.require or ever or bool(keys)

    def identify(self, headers: Mapping[str, str], scope: str | None = None) -> apikeys.StoredKey | None:
        """The valid key the request carries (for `scope` when given), else None."""
        token = bearer_token(headers)
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        keys, _ = self._current()
        return apikeys.verify(token, keys, scope, now=datetime.now(UTC))

    def check(self, headers: Mapping[str, str], scope: str) -> bool:
        if not self.enforced():
            return True
        return self.identify(headers, scope) is not None
