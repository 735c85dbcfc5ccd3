"""API keys: created once and shown once, stored as SHA-256 hashes, verified in constant time.

A key reads `ct_<prefix>_<secret>`; the prefix finds the row, the hash of the whole key is
compared with `hmac.compare_digest`. The plaintext is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower.errors import ConfigError
from controltower.schema.events import api_keys

SCOPES = ("ingest", "read")


@dataclass(frozen=True)
class StoredKey:
    id: int
    name: str
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    expires_at: datetime | None


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def split_prefix(token: str) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "ct" or not parts[1] or not parts[2]:
        return None
    return parts[1]


def create(engine: Engine, name: str, scopes: tuple[str, ...] = ("ingest",), expires_at: datetime | None = None) -> str:
    """Create a key and return its plaintext (the only time it exists)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise ConfigError(f"scope {bad[0]!r} is not one of {', '.join(SCOPES)}")
    if not name.strip():
        raise ConfigError("key name must not be empty")
    prefix = secrets.token_hex(4)
    token = f"ct_{prefix}_{secrets.token_urlsafe(32)}"
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                name=name, prefix=prefix, key_hash=hash_key(token), scopes=list(scopes), expires_at=expires_at
            )
        )
    return token


def revoke(engine: Engine, name_or_prefix: str, *, now: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            api_keys.update()
            .where(sa.or_(api_keys.c.name == name_or_prefix, api_keys.c.prefix == name_or_prefix))
            .where(api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return result.rowcount


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                api_keys.c.name, api_keys.c.prefix, api_keys.c.scopes, api_keys.c.created_at,
                api_keys.c.expires_at, api_keys.c.revoked_at, api_keys.c.last_used_at,
            ).order_by(api_keys.c.created_at)
        )
        return [dict(r._mapping) for r in rows]


def any_key_ever(engine: Engine) -> bool:
    """True once any key was ever created (revoked and expired ones count): auth never reopens."""
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.literal(1)).select_from(api_keys).limit(1)).first() is not None


def key_state(row: dict[str, Any], *, now: datetime) -> str:
    """`active`, `revoked` or `expired`, as `keys list` shows a key."""
    if row.get("revoked_at") is not None:
        return "revoked"
    expires = row.get("expires_at")
    if expires is not None and expires <= now:
        return "expired"
    return "active"


def active_keys(engine: Engine, *, now: datetime) -> dict[str, StoredKey]:
    """Active keys by prefix (not revoked, not expired)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(api_keys).where(api_keys.c.revoked_at.is_(None)).where(
                sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now)
            )
        )
        return {
            r.prefix: StoredKey(r.id, r.name, r.prefix, r.key_hash, tuple(r.scopes), r.expires_at)
            for r in rows
        }


def verify(token: str | None, keys: dict[str, StoredKey], scope: str | None, *, now: datetime) -> StoredKey | None:
    """The key `token` names if it is valid for `scope` (any scope when None); None otherwise (constant-time compare)."""
    if not token:
        return None
    prefix = split_prefix(token)
    stored = keys.get(prefix) if prefix else None
    expected = stored.key_hash if stored else hash_key("ct_missing_key")
    ok = hmac.compare_digest(hash_key(token), expected)
    if not ok or stored is None:
        return None
    if stored.expires_at is not None and stored.expires_at <= now:
        return None
    return stored if scope is None or scope in stored.scopes else None
