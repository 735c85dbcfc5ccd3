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

The metrics room judges the series (metrics.queues); this module only measures. It reads the
taps.yaml format of the design (only the keys it needs) until the taps' own parser replaces
`load_targets`. A broker that cannot be reached is reported in the result (and logged), never
raised: the other broker's queues are still sampled. Secrets: a broker URL comes from the
environment variable `url_env` names; a `url` with a password is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from controltower import yamlfile
from controltower.context import AppContext
from controltower.errors import ConfigError
from controltower.jobs import ScheduledJob
from controltower.schema.brokers import queue_samples
from controltower.settings import parse_duration

log = logging.getLogger(__name__)
BROKERS = ("rabbitmq", "jetstream")
DEFAULT_PROBE_INTERVAL = 30.0
TIMEOUT = 5.0  # seconds per broker connection and request: a probe must not hang a scheduler tick
_TARGET_KEYS = {"name", "broker", "url", "url_env", "queue", "dead_letter_queue", "stream", "durable",
                "dead_letter_subject", "channel", "hop", "peek"}


@dataclass(frozen=True)
class Target:
    """What the probe needs of one tap."""

    name: str
    broker: str
    url: str | None = None
    url_env: str | None = None
    queue: str | None = None  # rabbitmq
    dead_letter_queue: str | None = None  # rabbitmq
    stream: str | None = None  # jetstream
    durable: str | None = None  # jetstream
    dead_letter_subject: str | None = None  # jetstream
    channel: str | None = None
    hop: str | None = None
    peek: bool = True  # rabbitmq: look at the first message for its age (see the module's note)

    def broker_url(self, environ: Mapping[str, str]) -> str:
        if self.url_env:
            value = environ.get(self.url_env)
            if not value:
                raise ConfigError(f"tap {self.name}: environment variable {self.url_env} is not set")
            return value
        assert self.url is not None
        return self.url


@dataclass(frozen=True)
class Targets:
    targets: tuple[Target, ...]
    probe_interval_seconds: float = DEFAULT_PROBE_INTERVAL


@dataclass
class ProbeResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_targets(path: Path | str) -> Targets:
    """The probed queues of a taps.yaml (the design's format; other tap keys are left to the taps)."""
    return parse_targets(yamlfile.load(path))


def parse_targets(doc: yamlfile.Located) -> Targets:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("taps"), list):
        raise doc.error("expected a mapping with a `taps:` list")
    interval = DEFAULT_PROBE_INTERVAL
    if "probe_interval" in data:
        try:
            interval = parse_duration(str(data["probe_interval"]), where="probe_interval")
        except ConfigError as exc:
            raise doc.error(str(exc), "probe_interval") from None
        if interval <= 0:
            raise doc.error("probe_interval: must be greater than zero", "probe_interval")
    targets, seen = [], set()
    for i, item in enumerate(data["taps"]):
        targets.append(_target(doc, item, ("taps", i), seen))
    return Targets(tuple(targets), interval)


def _target(doc: yamlfile.Located, item: Any, path: tuple[Any, ...], seen: set[str]) -> Target:
    if not isinstance(item, dict):
        raise doc.error("each tap must be a mapping", *path)
    fields = {k: v for k, v in item.items() if k in _TARGET_KEYS}
    for key, value in fields.items():
        if key != "peek" and (not isinstance(value, str) or not value.strip()):
            raise doc.error(f"{key}: expected text, got {value!r}", *path, key)
    name = fields.get("name")
    if not name:
        raise doc.error("a tap needs a `name`", *path)
    if name in seen:
        raise doc.error(f"duplicate tap name {name!r}", *path, "name")
    seen.add(name)
    if fields.get("broker") not in BROKERS:
        raise doc.error(f"tap {name}: broker {fields.get('broker')!r} is not one of {', '.join(BROKERS)}", *path, "broker")
    if ("url" in fields) == ("url_env" in fields):
        raise doc.error(f"tap {name}: give exactly one of `url_env` (an environment variable) or `url`", *path)
    if "url" in fields and urlsplit(fields["url"]).password:
        raise doc.error(f"tap {name}: url carries a password: put the URL in an environment variable named by url_env",
                        *path, "url")
    needed = ("queue",) if fields["broker"] == "rabbitmq" else ("stream", "durable")
    for key in needed:
        if key not in fields:
            raise doc.error(f"tap {name}: a {fields['broker']} tap needs `{key}`", *path)
    if "peek" in fields and not isinstance(fields["peek"], bool):
        raise doc.error(f"peek: expected true or false, got {fields['peek']!r}", *path, "peek")
    return Target(**fields)


def probe(engine: Engine, targets: Targets, *, now: datetime, environ: Mapping[str, str]) -> ProbeResult:
    """Sample every target's queues at `now` and store the rows (one per queue)."""
    result = ProbeResult()
    for broker, prober in (("rabbitmq", _probe_rabbitmq), ("jetstream", _probe_jetstream)):
        by_url: dict[str, list[Target]] = {}
        for target in targets.targets:
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


def _row(target: Target, queue: str, kind: str, now: datetime, depth: int | None, age_ms: int | None,
         pending: int | None = None, ack_pending: int | None = None) -> dict[str, Any]:
    return {"at": now, "queue": queue, "kind": kind, "broker": target.broker, "channel": target.channel,
            "hop": target.hop, "depth": depth, "oldest_age_ms": age_ms, "pending": pending, "ack_pending": ack_pending}


def _age_ms(now: datetime, then: datetime | None) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds() * 1000))


# -- RabbitMQ ------------------------------------------------------------------------------------
def _probe_rabbitmq(url: str, targets: list[Target], now: datetime, result: ProbeResult) -> None:
    import pika
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException

    params = pika.URLParameters(url)
    # stack_timeout bounds the TCP connect and the AMQP handshake together: a broker that accepts
    # and never answers costs TIMEOUT, not pika's 15 s (and its error is not an AMQPError)
    params.socket_timeout = params.blocked_connection_timeout = params.stack_timeout = TIMEOUT
    params.connection_attempts = 1
    where = _where(url)
    try:
        connection = pika.BlockingConnection(params)
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
def _probe_jetstream(url: str, targets: list[Target], now: datetime, result: ProbeResult) -> None:
    import nats.errors

    try:
        asyncio.run(_jetstream(url, targets, now, result))
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        result.errors.append(f"jetstream {_where(url)}: cannot connect ({type(exc).__name__})")


async def _jetstream(url: str, targets: list[Target], now: datetime, result: ProbeResult) -> None:
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

    def current() -> Targets | None:
        try:
            targets = load_targets(path)
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
