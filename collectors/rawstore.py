"""The opt-in raw store: originals of broker messages, encrypted, kept for replay a few days.

Events are stored masked, so a masked payload cannot be replayed. A tap with `raw_store: true`
keeps each message's original body and headers here, encrypted with Fernet (AES-128-CBC +
HMAC-SHA256) under CONTROLTOWER_RAW_STORE_KEY, so the database (its backups, its readers) holds
only ciphertext; the executor decrypts one message when it POSTs it to the flow's endpoint.
`purge` drops rows older than `replay.raw_store_days` (default 7). The trade-off is written up
in README "Replay and privacy". It never logs a body, a header or the key.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from controltower.context import AppContext
from controltower.errors import ConfigError, ControlTowerError
from controltower.jobs import ScheduledJob
from controltower.replayconfig import DEFAULT_RAW_STORE_DAYS, load_replay
from controltower.schema.replay import raw_payloads

log = logging.getLogger(__name__)
KEY_SETTING = "CONTROLTOWER_RAW_STORE_KEY"
PURGE_INTERVAL = 3600.0


@dataclass(frozen=True)
class RawMessage:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None


class RawStore:
    """Encrypts into and decrypts out of `raw_payloads`. Built from the key's text (the setting)."""

    def __init__(self, key: str | None) -> None:
        if not key:
            raise ConfigError(
                f"{KEY_SETTING} is not set: the raw store (raw_store: true, HTTP replay) needs a Fernet key "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')")
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            raise ConfigError(f"{KEY_SETTING} is not a Fernet key (32 bytes, urlsafe base64)") from None

    def seal(self, message: RawMessage) -> bytes:
        envelope = {"body": base64.b64encode(message.body).decode(), "headers": message.headers,
                    "content_type": message.content_type}
        return self._fernet.encrypt(orjson.dumps(envelope, default=str))

    def open(self, ciphertext: bytes) -> RawMessage:
        try:
            envelope = orjson.loads(self._fernet.decrypt(bytes(ciphertext)))
        except InvalidToken:
            raise ControlTowerError(
                f"a stored raw payload cannot be decrypted with this {KEY_SETTING} (key changed?)") from None
        return RawMessage(base64.b64decode(envelope["body"]), dict(envelope.get("headers") or {}),
                          envelope.get("content_type"))

    def keep(self, conn: Connection, *, tap: str, correlation_id: str, event_id: str, message: RawMessage,
             now: datetime, message_id: str | None = None) -> None:
        """Store one original (the tap calls this in its batch's transaction); a redelivery keeps the first."""
        conn.execute(insert(raw_payloads).values(
            correlation_id=correlation_id, event_id=event_id, tap=tap, message_id=message_id, stored_at=now,
            ciphertext=self.seal(message),
        ).on_conflict_do_nothing(index_elements=["correlation_id", "event_id"]))

    def load(self, conn: Connection, correlation_id: str, event_id: str) -> RawMessage | None:
        row = conn.execute(sa.select(raw_payloads.c.ciphertext).where(
            raw_payloads.c.correlation_id == correlation_id, raw_payloads.c.event_id == event_id)).first()
        return None if row is None else self.open(row.ciphertext)


def purge(engine: Engine, now: datetime, days: int) -> int:
    """Drop originals older than `days`; returns how many. Needs no key."""
    with engine.begin() as conn:
        result = conn.execute(raw_payloads.delete().where(raw_payloads.c.stored_at < now - timedelta(days=days)))
        return int(result.rowcount)


def jobs(context: AppContext) -> list[ScheduledJob]:
    """`replay.raw_store_purge` hourly: the retention holds whether or not anyone runs `replay run`.
    `raw_store_days` is read from the taps file at each run (no file: the default); a broken file
    is logged once and the default applies, so originals never outlive it."""
    reported: list[str] = []

    def run(now: datetime) -> int:
        days = DEFAULT_RAW_STORE_DAYS
        path = context.settings.taps_file
        if path is not None:
            try:
                days = load_replay(path).raw_store_days
                reported.clear()
            except ConfigError as exc:
                if str(exc) not in reported:
                    reported[:] = [str(exc)]
                    log.error("raw store purge: using %d days: %s", days, exc)
        return purge(context.engine, now, days)

    return [ScheduledJob("replay.raw_store_purge", run, PURGE_INTERVAL)]
