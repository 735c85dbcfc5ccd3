"""Dead letters as events: what sits in a tap's dead-letter queue becomes `dead_letter` events.

Control Tower otherwise sees a dead letter only when a sender reports it. For every tap with a
`dead_letter_queue` (RabbitMQ) or `dead_letter_subject` (JetStream) and `browse_dead_letters`
(default on), `browse` reads up to `LIMIT` messages per run *without consuming them* (they stay
for replay) and stores each through the EventStore as the message's own canonical body (or the
tap's mapping) with:
- status `dead_letter`, flow/stage from the tap's `dead_letter_milestone` (else the message's);
- error_code = the broker's reason (RabbitMQ x-death: rejected, expired, maxlen, delivery_limit;
  JetStream: `dead_letter`), error_message "dead-lettered from <queue>: <reason>";
- occurred_at = when it died (x-death time, JetStream store time), else the record's own, else now;
- event_id = "dead-letter:<message id or body hash>" (+ ":<n>" for the n-th death on the same
  queue, ":replay-<id>" for a death after replay <id>), so browsing again stores nothing new
  and the replay executor finds the message by it (`is_dead_letter_of`).
Browsing RabbitMQ takes the messages with basic_get and puts them all back (one nack, requeue):
meanwhile they are invisible to other DLQ readers (a replay looking for one tries again later)
and they come back flagged redelivered. A queue deeper than `LIMIT` shows its first `LIMIT`.
A message that cannot be read (not JSON, no correlation id) is skipped and counted, unless the
tap names a `dead_letter_milestone` and a `channel`: then its AMQP correlation_id (else its message
id) carries a minimal event. Logs never carry a URL or a body.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from collectors.taps.broker import rabbit_parameters
from collectors.taps.config import TapConfig, TapsConfig, load_taps
from collectors.taps.messages import NATS_ID_HEADER, Message, body_id, header_text, records_of
from controltower.context import AppContext
from controltower.errors import ConfigError
from controltower.jobs import ScheduledJob

log = logging.getLogger(__name__)

LIMIT = 500  # messages read per dead-letter queue and run
PREFIX = "dead-letter:"
MAX_ID = 128
TIMEOUT = 5.0
REPLAY_ID_HEADER = "x-controltower-replay-id"  # set by the replay executor on what it republishes


class Sink(Protocol):
    def ingest(self, records: Sequence[Any], *, source: str, now: datetime) -> Any: ...


@dataclass(frozen=True)
class Death:
    queue: str  # where it died (RabbitMQ), or the dead-letter subject (JetStream)
    reason: str
    at: datetime | None = None
    count: int = 1
    replay_id: str | None = None


@dataclass
class BrowseResult:
    tap: str
    seen: int = 0
    stored: int = 0
    duplicates: int = 0
    unreadable: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"tap {self.tap}: {self.seen} dead letter(s) seen, {self.stored} stored as events, "
                f"{self.duplicates} already present, {self.unreadable} unreadable")


# -- pure ------------------------------------------------------------------------------------------
def message_base(message_id: str | None, body: bytes) -> str:
    return (message_id or body_id(body))[:96]


def event_id(base: str, death: Death, index: int = 0, of: int = 1) -> str:
    out = PREFIX + base
    if death.count > 1:
        out += f":{death.count}"
    if death.replay_id:
        out += f":replay-{death.replay_id[:12]}"
    if of > 1:
        out += f"#{index}"
    return out[:MAX_ID]


def is_dead_letter_of(event: str, message_id: str | None, body: bytes) -> bool:
    """Whether `event` (a dead_letter event's id) was made from this message."""
    stem = PREFIX + message_base(message_id, body)
    return event == stem or event.startswith((stem + ":", stem + "#"))


def rabbit_death(headers: Mapping[str, Any] | None, fallback_queue: str) -> Death:
    """The latest death of a RabbitMQ message from its x-death header (newest entry first)."""
    headers = headers or {}
    deaths = headers.get("x-death")
    entry = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    queue = header_text(entry.get("queue")) or header_text(headers.get("x-last-death-queue")) or fallback_queue
    reason = header_text(entry.get("reason")) or header_text(headers.get("x-last-death-reason")) or "dead_letter"
    at = entry.get("time")
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # AMQP timestamps are seconds since the epoch, UTC
    count = entry.get("count")
    return Death(queue, reason, at if isinstance(at, datetime) else None,
                 count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1,
                 header_text(headers.get(REPLAY_ID_HEADER)))


def dead_letter_records(message: Message, tap: TapConfig, death: Death, *, now: datetime,
                        correlation_hint: str | None = None) -> list[dict[str, Any]]:
    """The dead_letter events of one dead-lettered message ([] when it cannot be read)."""
    decoded = records_of(message, tap)
    records = [r for r in decoded.records if r.get("correlation_id")]
    if not records:
        correlation = correlation_hint or message.message_id
        if not (tap.dead_letter_milestone and tap.channel and correlation):
            return []
        records = [{"correlation_id": correlation, "channel": tap.channel, "system": "broker"}]
    base = message_base(message.message_id, message.body)
    message_text = f"dead-lettered from {death.queue}: {death.reason}"
    out = []
    for i, record in enumerate(records):
        record = dict(record)
        record.pop("latency_ms", None)
        if tap.dead_letter_milestone:
            record["flow"], record["stage"] = tap.dead_letter_milestone.split(".", 1)
        if not record.get("channel") and tap.channel:
            record["channel"] = tap.channel
        if death.at is not None or not record.get("occurred_at"):
            record["occurred_at"] = (death.at or now).isoformat()
        record.update(event_id=event_id(base, death, i, len(records)), status="dead_letter",
                      error_code=death.reason, error_message=message_text)
        out.append(record)
    return out


# -- brokers -----------------------------------------------------------------------------------
def _browse_rabbitmq(tap: TapConfig, url: str, limit: int) -> list[tuple[Message, Death, str | None]]:
    import pika

    queue = str(tap.dead_letter_queue)
    out: list[tuple[Message, Death, str | None]] = []
    connection = pika.BlockingConnection(rabbit_parameters(url, TIMEOUT))
    try:
        channel = connection.channel()
        last = None
        try:
            while len(out) < limit:
                method, props, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                last = method.delivery_tag
                headers = props.headers or {}
                message = Message(body=body, headers=headers, message_id=header_text(props.message_id))
                out.append((message, rabbit_death(headers, str(tap.queue)), header_text(props.correlation_id)))
        finally:
            if last is not None and channel.is_open:
                channel.basic_nack(last, multiple=True, requeue=True)  # all of them back, in their order
    finally:
        if connection.is_open:
            connection.close()
    return out


def _browse_jetstream(tap: TapConfig, url: str, limit: int) -> list[tuple[Message, Death, str | None]]:
    async def run() -> list[tuple[Message, Death, str | None]]:
        import nats
        import nats.js.errors

        nc = await nats.connect(url, connect_timeout=TIMEOUT, max_reconnect_attempts=0, allow_reconnect=False)
        out: list[tuple[Message, Death, str | None]] = []
        try:
            js = nc.jetstream(timeout=TIMEOUT)
            subject, seq = str(tap.dead_letter_subject), 1
            while len(out) < limit:
                try:  # reading by sequence consumes nothing
                    msg = await js.get_msg(str(tap.stream), seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                headers = dict(msg.headers or {})
                ident = header_text(headers.get(NATS_ID_HEADER)) or f"{tap.stream}:{msg.seq}"
                death = Death(subject, header_text(headers.get("Controltower-Reason")) or "dead_letter", msg.time)
                out.append((Message(body=msg.data or b"", headers=headers, message_id=ident), death, None))
                seq = int(msg.seq or seq) + 1
        finally:
            await nc.close()
        return out

    return asyncio.run(run())


def browse(sink: Sink, config: TapsConfig, *, now: datetime, environ: Mapping[str, str],
           limit: int = LIMIT) -> list[BrowseResult]:
    """Store the dead letters of every tap that has a dead-letter queue; one result per such tap.
    Broker trouble is reported in the result, never raised; StorageUnavailable propagates."""
    import nats.errors
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException

    # (a broker that accepts and never answers ends in an AMQPConnectorException, not an AMQPError)
    broker_errors = (pika.exceptions.AMQPError, AMQPConnectorException, nats.errors.Error, OSError, TimeoutError)
    results = []
    for tap in config.taps:
        dlq = tap.dead_letter_queue if tap.broker == "rabbitmq" else tap.dead_letter_subject
        if not dlq or not tap.browse_dead_letters:
            continue
        result = BrowseResult(tap.name)
        results.append(result)
        try:
            url = tap.broker_url(environ)
            found = (_browse_rabbitmq if tap.broker == "rabbitmq" else _browse_jetstream)(tap, url, limit)
        except ConfigError as exc:
            result.errors.append(str(exc))
            continue
        except broker_errors as exc:  # one line; the other taps go on
            result.errors.append(f"tap {tap.name}: cannot browse {dlq}: {type(exc).__name__}")
            continue
        records: list[dict[str, Any]] = []
        for message, death, hint in found:
            result.seen += 1
            mine = dead_letter_records(message, tap, death, now=now, correlation_hint=hint)
            result.unreadable += not mine
            records += mine
        if records:
            outcome = sink.ingest(records, source=tap.source, now=now)
            result.stored, result.duplicates = outcome.accepted, outcome.duplicates
            result.unreadable += len(outcome.rejected)
    for result in results:
        for error in result.errors:
            log.warning("dead letters: %s", error)
        if result.stored:
            log.info("dead letters: %s", result.summary())
    return results


def jobs(context: AppContext, environ: Mapping[str, str] | None = None) -> list[ScheduledJob]:
    """`queues.dead_letters` every probe_interval when a taps file is configured (none: no job)."""
    if context.settings.taps_file is None:
        return []
    from collectors.store import EventStore
    from controltower.masking import Masker, MaskingRules

    config = load_taps(context.settings.taps_file)
    if not any(t.browse_dead_letters and (t.dead_letter_queue or t.dead_letter_subject) for t in config.taps):
        return []
    store = EventStore(context.engine, context.settings, Masker(MaskingRules.for_settings(context.settings)))
    env = os.environ if environ is None else environ

    def run(now: datetime) -> object:
        return browse(store, config, now=now, environ=env)

    return [ScheduledJob("queues.dead_letters", run, config.probe_interval_seconds)]
