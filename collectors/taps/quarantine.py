"""The record of quarantined messages: `tap_quarantine` rows with a masked, cut preview.

The message itself was already moved to the broker's quarantine queue/subject (by the adapter,
confirmed) before `record` runs; the row says why, where it went and lets people recognise it.
The preview goes through the same masking as stored events (emails, cards, phones in free
text), then is cut; so does the reason (the store's reason quotes the value it refused): it is for recognising a message, never for replaying it. Writing raises
StorageUnavailable when the database is away (then nothing is acknowledged).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collectors.taps.messages import Message
from controltower.db import is_unavailable
from controltower.errors import EventError, StorageUnavailable
from controltower.masking import Masker
from controltower.schema.brokers import tap_quarantine

PREVIEW_CHARS = 400
REASON_CHARS = 1000


def preview(body: bytes, masker: Masker) -> str:
    """The first PREVIEW_CHARS characters of the message, personal data masked."""
    head = body[: PREVIEW_CHARS * 8]
    if len(body) > len(head):  # the last word may be cut: half an email is no email to the masker
        head = head[: max(head.rfind(b" "), head.rfind(b"\n"), 0)]
    try:
        value = orjson.loads(body) if len(body) <= 1 << 20 else None
    except orjson.JSONDecodeError:
        value = None
    if value is not None:
        try:
            masked, _ = masker.mask_value(value, None)
            text = orjson.dumps(masked).decode()
        except (EventError, TypeError):  # too deep, numbers out of range: fall back to the text
            text = masker.find.value(head.decode("utf-8", "replace"), free_text=True)
    else:
        text = masker.find.value(head.decode("utf-8", "replace"), free_text=True)
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def record(engine: Engine, tap: str, moved_to: str, items: Sequence[tuple[Message, str]], masker: Masker,
           *, now: datetime) -> None:
    if not items:
        return
    rows = [{"tap": tap, "received_at": now, "reason": masker.find.value(reason[:REASON_CHARS], free_text=True),
             "message_id": (message.message_id or None) and masker.mask_identifier(message.message_id)[:200],
             "moved_to": moved_to, "preview": preview(message.body, masker)} for message, reason in items]
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(tap_quarantine), rows)
    except sa.exc.DBAPIError as exc:
        if is_unavailable(exc):
            raise StorageUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
        raise
