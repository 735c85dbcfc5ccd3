"""Ingest authentication: the API keys of `controltower keys`, cached briefly per process.

Keys are demanded once any key exists (or always with `require_api_keys`). The cache is
refreshed every few seconds so a new or revoked key takes effect without a restart, which is
also how a key is rotated without downtime: create the new one, switch senders, revoke the old.
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


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class KeyCache:
    def __init__(self, engine: Engine, *, require: bool = False) -> None:
        self.engine = engine
        self.require = require
        self._keys: dict[str, apikeys.StoredKey] | None = None
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _current(self) -> dict[str, apikeys.StoredKey]:
        with self._lock:
            if self._keys is None or time.monotonic() - self._loaded > REFRESH_SECONDS:
                try:
                    self._keys = apikeys.active_keys(self.engine, now=datetime.now(UTC))
                    self._loaded = time.monotonic()
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
                    if self._keys is None:
                        raise StorageUnavailable("cannot load API keys") from exc
            return self._keys

    def check(self, headers: Mapping[str, str], scope: str) -> bool:
        keys = self._current()
        if not keys and not self.require:
            return True
        return apikeys.verify(bearer_token(headers), keys, scope, now=datetime.now(UTC)) is not None
