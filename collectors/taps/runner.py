"""Running a tap: fetch a batch, store it, quarantine what cannot be stored, then acknowledge.

The order is the guarantee: the batch's records are committed, the unreadable messages are
published to the quarantine (confirmed) and recorded in `tap_quarantine`, and only then is the
batch acknowledged. A crash anywhere before the ack leaves the messages in the broker, and the
store's idempotency keeps a redelivered event once: exactly once in the store.

A tap with `raw_store: true` first commits each message's original, encrypted
(`collectors.rawstore`, CONTROLTOWER_RAW_STORE_KEY; it does not start without the key), so a
replay over HTTP can send the original rather than the masked payload.

Back-pressure: when the database is away (StorageUnavailable) the tap acknowledges nothing,
gives the batch back and disconnects from the broker (nothing more is fetched), then waits for
the database with a growing pause and reconnects when it answers. Broker trouble is handled the
same way. One log line per change of state, never one per message. `drain` stops when the
broker has nothing more (`once`), when `stop` is set, or at `deadline` (the scheduler's bound).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collectors.rawstore import RawMessage, RawStore
from collectors.taps import quarantine
from collectors.taps.batch import Store, store_batch
from collectors.taps.broker import BrokerUnavailable, Consumer
from collectors.taps.config import TapConfig
from collectors.taps.messages import Message
from controltower.db import is_unavailable, ping
from controltower.errors import ConfigError, StorageUnavailable
from controltower.masking import Masker

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 0.5, 30.0


@dataclass
class TapStats:
    tap: str
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    outages: int = 0

    def summary(self) -> str:
        return (f"tap {self.tap}: {self.messages} message(s) in {self.batches} batch(es): {self.stored} event(s) stored, "
                f"{self.duplicates} already present, {self.quarantined} quarantined"
                + (f", {self.outages} outage(s) waited out" if self.outages else ""))


def connect(tap: TapConfig, environ: Mapping[str, str]) -> Consumer:
    url = tap.broker_url(environ)
    if tap.broker == "rabbitmq":
        from collectors.taps.rabbit import RabbitConsumer

        return RabbitConsumer(tap, url)
    from collectors.taps.jetstream import JetStreamConsumer

    return JetStreamConsumer(tap, url)


class TapRunner:
    def __init__(self, tap: TapConfig, store: Store, engine: Engine, masker: Masker, *,
                 environ: Mapping[str, str], clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 connector: Callable[[TapConfig, Mapping[str, str]], Consumer] = connect,
                 on_batch: Callable[[TapStats], Any] | None = None, raw: RawStore | None = None) -> None:
        if tap.raw_store and raw is None:
            raise ConfigError(f"{tap.where}: tap {tap.name}: raw_store: true needs CONTROLTOWER_RAW_STORE_KEY "
                              "(a Fernet key) to keep the originals encrypted; refusing to start without it")
        self.raw = raw if tap.raw_store else None
        self.tap, self.store, self.engine, self.masker = tap, store, engine, masker
        self.environ, self.clock, self.connector, self.on_batch = environ, clock, connector, on_batch
        self.stats = TapStats(tap.name)
        self._consumer: Consumer | None = None
        self._down: str | None = None  # what is away right now: "database" | "broker" | None

    def drain(self, *, stop: threading.Event | None = None, once: bool = False,
              deadline: float | None = None) -> TapStats:
        """Consume until `stop`, `deadline` (time.monotonic()) or, with `once`, an empty fetch."""
        stop = stop or threading.Event()
        backoff = BACKOFF_START
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    if self._consumer is None:
                        self._consumer = self.connector(self.tap, self.environ)
                    if not self._step(self._consumer) and once and self._consumer.waiting() == 0:
                        break  # an empty fetch alone may just be a slow delivery
                    if self._down is not None:
                        log.info("tap %s: %s is back; consuming %s again", self.tap.name, self._down, self.tap.consumed)
                        self._down = None
                    backoff = BACKOFF_START
                except StorageUnavailable as exc:
                    self._away("database", str(exc))
                    pause = backoff
                    while not stop.is_set() and not ping(self.engine):
                        if deadline is not None and time.monotonic() + pause > deadline:
                            return self.stats
                        stop.wait(pause)
                        pause = min(pause * 2, BACKOFF_MAX)
                except BrokerUnavailable as exc:
                    if once and self.stats.batches == 0 and self._down is None and self._consumer is None:
                        raise  # `--once` against a broker it cannot reach at all: say so and stop
                    self._away("broker", str(exc))
                    if deadline is not None and time.monotonic() + backoff > deadline:
                        return self.stats
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.close()
        return self.stats

    def _away(self, what: str, detail: str) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()  # unacknowledged messages go back to the broker
        if self._down != what:
            self.stats.outages += 1
            log.warning("tap %s: %s; stopped consuming %s, everything unacknowledged stays in the broker",
                        self.tap.name, detail, self.tap.consumed)
            self._down = what

    def _step(self, consumer: Consumer) -> bool:
        """One batch end to end; False when the broker had nothing."""
        messages = consumer.fetch(self.tap.batch, self.tap.batch_wait_seconds)
        if not messages:
            return False
        now = self.clock()
        try:
            result = store_batch(messages, self.tap, self.store, now=now,
                                 keep=self._keep_originals if self.raw is not None else None)
            if result.quarantine:
                consumer.quarantine(result.quarantine)
                quarantine.record(self.engine, self.tap.name, self.tap.quarantine, result.quarantine, self.masker,
                                  now=now)
        except (StorageUnavailable, BrokerUnavailable):
            consumer.release(messages)
            raise
        consumer.ack(messages)
        s = self.stats
        s.messages += len(messages)
        s.batches += 1
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.quarantined += len(result.quarantine)
        if result.quarantine:
            log.info("tap %s: %d message(s) quarantined to %s", self.tap.name, len(result.quarantine), self.tap.quarantine)
        if self.on_batch is not None:
            self.on_batch(s)
        return True

    def _keep_originals(self, decoded: list[tuple[Message, list[dict[str, Any]]]], now: datetime) -> None:
        """The raw store (raw_store: true): each record's original message, encrypted, one transaction."""
        assert self.raw is not None
        try:
            with self.engine.begin() as conn:
                for message, records in decoded:
                    original = RawMessage(message.body, dict(message.headers or {}), _content_type(message))
                    for record in records:
                        cid, eid = record.get("correlation_id"), record.get("event_id")
                        if isinstance(cid, str) and isinstance(eid, str) and cid and eid:
                            self.raw.keep(conn, tap=self.tap.name, correlation_id=cid, event_id=eid,
                                          message=original, now=now, message_id=message.message_id)
        except sa.exc.DBAPIError as exc:
            if is_unavailable(exc):
                raise StorageUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
            raise

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def _content_type(message: Message) -> str | None:
    props = message.handle[1] if isinstance(message.handle, tuple) and len(message.handle) > 1 else None
    return getattr(props, "content_type", None)
