"""Queue probe: the depth and oldest-message age of the queues the taps read, into `queue_samples`.

For every tap of taps.yaml (`load_targets`) a probe (`probe`, run every `probe_interval` by the
scheduler's `queues.probe` job) writes one row per queue and time:

- RabbitMQ: the tap's queue (kind `queue`) and its `dead_letter_queue` (kind `dlq`). Depth is a
  passive `queue_declare` (messages ready; unacknowledged deliveries are not counted). The age
  of the oldest message needs a look at it: `basic_get` then `basic_nack(requeue=True)`. The cost,
  accepted for a 30 s probe: the message leaves the queue for a round trip (a consumer cannot get
  it meanwhile), comes back flagged `redelivered`, and on a quorum queue counts as a delivery
  (with a `delivery-limit` a message peeked that many times is dead-lettered: set
  `peek: false` on such a tap). Brokers do not stamp messages: the age comes from the producer's
  `timestamp` property (seconds) or a `timestamp_in_ms` header; without either it is NULL.
- JetStream: the tap's durable consumer (kind `consumer`, queue `<stream>/<durable>`): depth and
  `pending` = num_pending, `ack_pending` = num_ack_pending, age from the server's store time of
  the first unacknowledged message; and `dead_letter_subject` (kind `dlq`, queue = the subject):
  its message count in the stream and the store time of its first message.

The metrics room judges the series (metrics.queues); this module only measures. The taps come
from the taps' own parser (`collectors.taps.config.load_taps`; `peek` is a tap key). A broker
that cannot be reached is reported in the result (and logged), never raised: the other broker's queues are still sampled. Secrets: a broker URL comes from the
environment variable `url_env` names (a `url` with a password is refused by the parser).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from collectors.taps.broker import rabbit_parameters
from collectors.taps.config import DEFAULT_PROBE_INTERVAL, TapConfig, TapsConfig, load_taps
from controltower.context import AppContext
from controltower.errors import ConfigError
from controltower.jobs import ScheduledJob
from controltower.schema.brokers import queue_samples

log = logging.getLogger(__name__)
TIMEOUT = 5.0  # seconds per broker connection and request: a probe must not hang a scheduler tick


@dataclass
class ProbeResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def probe(engine: Engine, targets: TapsConfig, *, now: datetime, environ: Mapping[str, str]) -> ProbeResult:
    """Sample every tap's queues at `now` and store the rows (one per queue)."""
    result = ProbeResult()
    for broker, prober in (("rabbitmq", _probe_rabbitmq), ("jetstream", _probe_jetstream)):
        by_url: dict[str, list[TapConfig]] = {}
        for target in targets.taps:
            if target.broker != broker:
                continue
            try:
                by_url.setdefault(target.broker_url(environ), []).append(target)
            except ConfigError as exc:
                result.errors.append(str(exc))
        for url, group in by_url.items():
            prober(url, group, now, result)
    unique = {r["queue"]: r for r in result.rows}  # two taps may share a dead-letter queue
    if unique:
        with engine.begin() as conn:
            conn.execute(insert(queue_samples).on_conflict_do_nothing(), list(unique.values()))
    for error in result.errors:
        log.warning("queue probe: %s", error)
    return result


def _row(target: TapConfig, queue: str, kind: str, now: datetime, depth: int | None, age_ms: int | None,
         pending: int | None = None, ack_pending: int | None = None) -> dict[str, Any]:
    return {"at": now, "queue": queue, "kind": kind, "broker": target.broker, "channel": target.channel,
            "hop": target.hop, "depth": depth, "oldest_age_ms": age_ms, "pending": pending, "ack_pending": ack_pending}


def _age_ms(now: datetime, then: datetime | None) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds() * 1000))


# -- RabbitMQ ------------------------------------------------------------------------------------
def _probe_rabbitmq(url: str, targets: list[TapConfig], now: datetime, result: ProbeResult) -> None:
    import pika
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException

    where = _where(url)
    try:
        connection = pika.BlockingConnection(rabbit_parameters(url, TIMEOUT))
    except (pika.exceptions.AMQPError, AMQPConnectorException, OSError) as exc:
        result.errors.append(f"rabbitmq {where}: cannot connect ({type(exc).__name__})")
        return
    try:
        for target in targets:
            for queue, kind in ((target.queue, "queue"), (target.dead_letter_queue, "dlq")):
                if not queue:
                    continue
                channel = connection.channel()
                try:
                    depth = channel.queue_declare(queue, passive=True).method.message_count
                    age = _peek_age(channel, queue, now) if depth and target.peek else None
                    result.rows.append(_row(target, queue, kind, now, depth, age))
                except pika.exceptions.ChannelClosedByBroker as exc:  # 404: no such queue
                    result.errors.append(f"tap {target.name}: rabbitmq {where} queue {queue!r}: {exc.reply_text}")
                finally:
                    if channel.is_open:
                        channel.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        result.errors.append(f"rabbitmq {where}: connection lost ({type(exc).__name__})")
    finally:
        if connection.is_open:
            connection.close()


def _peek_age(channel: Any, queue: str, now: datetime) -> int | None:
    """The first ready message's age from its producer's stamp, put back where it was."""
    method, props, _ = channel.basic_get(queue, auto_ack=False)
    if method is None:
        return None
    channel.basic_nack(method.delivery_tag, requeue=True)
    headers = props.headers or {}
    stamp: datetime | None = None
    if isinstance(headers.get("timestamp_in_ms"), int) and not isinstance(headers["timestamp_in_ms"], bool):
        stamp = datetime.fromtimestamp(headers["timestamp_in_ms"] / 1000, UTC)
    elif isinstance(props.timestamp, int):
        stamp = datetime.fromtimestamp(props.timestamp, UTC)
    return _age_ms(now, stamp)


def _where(url: str) -> str:
    """A broker's address for messages: host and port, never the credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or ''}".rstrip(":")


# -- JetStream -----------------------------------------------------------------------------------
def _probe_jetstream(url: str, targets: list[TapConfig], now: datetime, result: ProbeResult) -> None:
    import nats.errors

    try:
        asyncio.run(_jetstream(url, targets, now, result))
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        result.errors.append(f"jetstream {_where(url)}: cannot connect ({type(exc).__name__})")


async def _jetstream(url: str, targets: list[TapConfig], now: datetime, result: ProbeResult) -> None:
    import nats
    import nats.errors
    import nats.js.errors

    nc = await nats.connect(url, connect_timeout=TIMEOUT, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=TIMEOUT)
        for target in targets:
            assert target.stream and target.durable
            try:
                info = await js.consumer_info(target.stream, target.durable)
                age = None
                if (info.num_pending or 0) + (info.num_ack_pending or 0):
                    floor = info.ack_floor.stream_seq if info.ack_floor else 0
                    first = await _first_from(js, target.stream, floor + 1, info.config.filter_subject or ">")
                    age = _age_ms(now, first)
                result.rows.append(_row(target, f"{target.stream}/{target.durable}", "consumer", now,
                                        info.num_pending, age, info.num_pending, info.num_ack_pending))
                if target.dead_letter_subject:
                    subject = target.dead_letter_subject
                    state = (await js.stream_info(target.stream, subjects_filter=subject)).state
                    depth = sum((state.subjects or {}).values())
                    first = await _first_from(js, target.stream, state.first_seq, subject) if depth else None
                    result.rows.append(_row(target, subject, "dlq", now, depth, _age_ms(now, first)))
            except (nats.js.errors.Error, nats.errors.Error) as exc:
                result.errors.append(f"tap {target.name}: jetstream stream {target.stream}: {type(exc).__name__} {exc}")
    finally:
        await nc.close()


async def _first_from(js: Any, stream: str, seq: int, subject: str) -> datetime | None:
    """The server's store time of the first message on `subject` at or after `seq`."""
    import nats.js.errors

    try:
        msg = await js.get_msg(stream, seq=max(1, seq), subject=subject, next=True)
    except nats.js.errors.NotFoundError:
        return None
    return msg.time


# -- the scheduler's job -------------------------------------------------------------------------
def jobs(context: AppContext, environ: Mapping[str, str] | None = None) -> list[ScheduledJob]:
    """`queues.probe` every probe_interval when a taps file is configured (none: no job).

    A broken taps file never stops the scheduler (its other jobs keep running): the job logs
    the file's error once (`file:line: what`), skips its runs until the file is fixed, and each
    run reads the file again, so a fix is picked up without a restart."""
    path = context.settings.taps_file
    if path is None:
        return []
    env = os.environ if environ is None else environ
    reported: list[str] = []

    def current() -> TapsConfig | None:
        try:
            targets = load_taps(path)
        except ConfigError as exc:
            if str(exc) not in reported:
                reported[:] = [str(exc)]
                log.error("queue probe: not probing: %s", exc)
            return None
        reported.clear()
        return targets

    first = current()
    interval = first.probe_interval_seconds if first is not None else DEFAULT_PROBE_INTERVAL

    def run(now: datetime) -> ProbeResult:
        targets = current()
        return ProbeResult() if targets is None else probe(context.engine, targets, now=now, environ=env)

    return [ScheduledJob("queues.probe", run, interval)]
