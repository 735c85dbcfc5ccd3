"""The replay executor: sends approved, due replay requests, records the outcome and the lineage.

Run by `controltower replay run` (once), `controltower tap` and the scheduler. Each request is
claimed with `FOR UPDATE SKIP LOCKED` and its row lock is held while it is sent, so two executors
never send one request; a per-flow advisory lock makes the rate limit (`rate_per_minute`, a
sliding minute of sent requests) exact across executors. Before sending, the duplicate guard is
checked again (the order may have posted since the request): refused unless confirmed.

Targets:
- dlq: the message is found in the tap's RabbitMQ dead-letter queue by its `message_id` (or the
  canonical body's event_id, or the id `collectors.deadletters` gave the dead_letter event made of
  it), republished with publisher confirms to the tap's `source_exchange`
  (default exchange: the tap's queue) with header `x-controltower-replay-of`, then acked in the
  DLQ. Finding it walks the DLQ with basic_get, holding the others unacked and requeueing them at
  the end: O(depth) messages read per replay, and the held ones are invisible to other DLQ
  consumers meanwhile (and come back flagged redelivered). Fine for the DLQ depths ops replay by
  hand (hundreds); a DLQ of millions wants a holding queue instead.
- http: the original from the raw store (decrypted here, only here) POSTed to the flow's endpoint
  (`replay.endpoints.<flow>.url_env`, `token_env` as a Bearer token); 2xx is sent.
After a send, a lineage event goes through the EventStore: same correlation id and flow, stage
`replayed`, system `controltower`, attributes replay_of / replay_by / replay_id / replay_produces.
It never logs a broker URL, an endpoint URL, a token or a body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
import pika
import pika.exceptions
import sqlalchemy as sa
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from sqlalchemy.engine import Connection, Engine

from collectors.deadletters import REPLAY_ID_HEADER, is_dead_letter_of
from collectors.rawstore import RawStore
from collectors.taps.broker import rabbit_parameters
from controltower.errors import ControlTowerError
from controltower.replayconfig import ReplayConfig
from controltower.replayops import (
    REPLAY_OF_HEADER,
    duplicate_reason,
    other_replay,
    reached,
    replayed_reason,
)
from controltower.schema.replay import replay_requests

log = logging.getLogger(__name__)

NOT_FOUND_RETRIES = 3  # a DLQ message another executor holds for a moment is looked for again
NOT_FOUND_DELAY = timedelta(seconds=30)
BROKER_TIMEOUT = 10.0  # seconds: connect, handshake and each broker round trip of a DLQ move
MAX_DLQ_WALK = 10_000  # messages read from a DLQ looking for one: bounds the time and what is held unacked
_DEATH_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                  "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")


class ReplayTap(Protocol):
    """What the executor needs of a tap (collectors.taps.config.TapConfig has it)."""

    name: str
    broker: str
    queue: str | None
    dead_letter_queue: str | None
    source_exchange: str | None

    def broker_url(self, environ: Mapping[str, str]) -> str: ...


class Sink(Protocol):
    def ingest(self, records: list[dict[str, Any]], *, source: str, now: datetime) -> Any: ...


@dataclass
class Outcome:
    status: str  # sent | failed | refused | retry
    text: str


@dataclass
class RunReport:
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.sent)} sent, {len(self.failed)} failed, {len(self.refused)} refused, "
                f"{len(self.deferred)} deferred")


_CLAIM = (sa.select(replay_requests)
          .where(replay_requests.c.status == "approved", replay_requests.c.not_before <= sa.bindparam("now"))
          .order_by(replay_requests.c.not_before, replay_requests.c.id)
          .limit(1).with_for_update(skip_locked=True))
_SENT_IN_WINDOW = sa.text(
    "SELECT count(*), min(sent_at) FROM replay_requests WHERE flow = :flow AND status = 'sent' AND sent_at > :since"
)


class Executor:
    def __init__(self, engine: Engine, sink: Sink, config: ReplayConfig, taps: Mapping[str, ReplayTap], *,
                 environ: Mapping[str, str], raw: RawStore | None = None, http_timeout: float = 10.0) -> None:
        self.engine, self.sink, self.config, self.taps = engine, sink, config, taps
        self.environ, self.raw, self.http_timeout = environ, raw, http_timeout

    def run_once(self, now: datetime, *, limit: int = 100, clock: Callable[[], datetime] | None = None) -> RunReport:
        """Send what is due at `now` (at most `limit` requests); returns what happened to which id.

        With `clock`, each request is handled at the clock's time (the first at `now`): a run
        sending slowly (DLQ walks, slow endpoints) records when each replay really went out, which
        the rate limit of every executor counts."""
        report = RunReport()
        skipped: list[int] = []
        for i in range(limit):
            if clock is not None and i:
                now = max(now, clock())
            with self.engine.begin() as conn:
                row = conn.execute(_CLAIM.where(replay_requests.c.id.notin_(skipped)), {"now": now}).first()
                if row is None:
                    break
                outcome = self._handle(conn, row, now)
                self._record(conn, row, outcome, now)
            if outcome.status == "sent":
                report.sent.append(row.id)
                self._lineage(row, now)
            elif outcome.status == "refused":
                report.refused.append(row.id)
            elif outcome.status == "failed":
                report.failed.append(row.id)
            else:
                report.deferred.append(row.id)
                skipped.append(row.id)
        return report

    # -- one request --------------------------------------------------------------------------
    def _handle(self, conn: Connection, row: Any, now: datetime) -> Outcome:
        flow = self.config.flow(row.flow)
        if flow is None:
            return Outcome("refused", f"flow {row.flow} has no replay configured any more")
        if flow.approval and not row.approved_by:  # the flow needs approval since the request was made
            return Outcome("refused", f"flow {row.flow} needs approval by a second person now: request it again")
        if not row.confirm_duplicate:
            at, order = reached(conn, row.correlation_id, flow.produces)
            if at is not None:
                return Outcome("refused", duplicate_reason(row.flow, order or row.correlation_id, flow.produces, at))
        # one executor at a time counts and sends a flow's replays: the rate limit holds across processes
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"replay:{row.flow}"})
        # under that lock, a replay of the same message sent meanwhile is seen (two requests raced)
        other = other_replay(conn, row.correlation_id, row.event_id, exclude=row.id)
        if other is not None and other.status == "sent" and not row.confirm_duplicate:
            return Outcome("refused", replayed_reason(other))
        count, oldest = conn.execute(_SENT_IN_WINDOW, {"flow": row.flow, "since": now - timedelta(minutes=1)}).one()
        if count >= flow.rate_per_minute:
            wait_until = oldest + timedelta(minutes=1)
            conn.execute(replay_requests.update().where(replay_requests.c.id == row.id).values(
                not_before=wait_until, updated_at=now))
            return Outcome("deferred", f"rate limit {flow.rate_per_minute}/min")
        try:
            if row.target == "dlq":
                return self._from_dlq(row)
            if row.target == "http":
                return self._post(conn, row)
        except ControlTowerError as exc:
            return Outcome("failed", str(exc))
        return Outcome("failed", f"unknown target {row.target!r}")

    def _record(self, conn: Connection, row: Any, outcome: Outcome, now: datetime) -> None:
        t = replay_requests
        if outcome.status == "deferred":
            return
        attempts = row.attempts + 1
        if outcome.status == "retry":
            if attempts < NOT_FOUND_RETRIES:
                conn.execute(t.update().where(t.c.id == row.id).values(
                    attempts=attempts, not_before=now + NOT_FOUND_DELAY, outcome=outcome.text, updated_at=now))
                return
            outcome.status = "failed"
        conn.execute(t.update().where(t.c.id == row.id).values(
            status=outcome.status, attempts=attempts, outcome=outcome.text, updated_at=now,
            sent_at=now if outcome.status == "sent" else None))

    def _lineage(self, row: Any, now: datetime) -> None:
        flow = self.config.flow(row.flow)
        attributes = {"replay_of": row.event_id, "replay_by": row.requested_by, "replay_id": str(row.id),
                      "replay_target": row.target}
        if row.approved_by:
            attributes["replay_approved_by"] = row.approved_by
        if flow is not None:
            attributes["replay_produces"] = flow.produces
        record = {"event_id": f"replay-{row.id}", "occurred_at": now.isoformat(), "correlation_id": row.correlation_id,
                  "flow": row.flow, "stage": "replayed", "status": "ok", "system": "controltower",
                  "attributes": attributes}
        if row.channel:
            record["channel"] = row.channel
        try:
            self.sink.ingest([record], source="replay", now=now)
        except ControlTowerError as exc:  # sent is sent: the story misses one line, the request row has it
            log.warning("replay %s: lineage event not stored: %s", row.id, exc)

    # -- targets --------------------------------------------------------------------------------
    def _from_dlq(self, row: Any) -> Outcome:
        tap = self.taps.get(row.tap or "")
        if tap is None:
            return Outcome("failed", f"tap {row.tap!r} is not in the taps file")
        if tap.broker != "rabbitmq" or not tap.dead_letter_queue:
            return Outcome("failed", f"tap {tap.name}: DLQ replay needs a rabbitmq tap with dead_letter_queue")
        try:
            return move_from_dlq(tap, row.event_id, row.message_id, row.id, self.environ)
        except (pika.exceptions.AMQPError, OSError) as exc:
            return Outcome("failed", f"tap {tap.name}: broker error {type(exc).__name__}")

    def _post(self, conn: Connection, row: Any) -> Outcome:
        endpoint = self.config.endpoints.get(row.flow)
        if endpoint is None:
            return Outcome("failed", f"replay.endpoints.{row.flow} is not configured")
        if self.raw is None:
            raise ControlTowerError("the raw store key (CONTROLTOWER_RAW_STORE_KEY) is not set: cannot decrypt")
        message = self.raw.load(conn, row.correlation_id, row.event_id)
        if message is None:
            return Outcome("failed", "the stored original is gone (raw_store_days passed, or never stored)")
        url = self.environ.get(endpoint.url_env)
        if not url:
            return Outcome("failed", f"{endpoint.url_env} is not set")
        if urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).hostname:
            return Outcome("failed", f"{endpoint.url_env} is not an http:// or https:// URL")
        headers = {"Content-Type": message.content_type or "application/json",
                   "X-Controltower-Replay-Of": row.event_id, "X-Controltower-Replay-Id": str(row.id)}
        if endpoint.token_env:
            token = self.environ.get(endpoint.token_env)
            if not token:
                return Outcome("failed", f"{endpoint.token_env} is not set")
            headers["Authorization"] = f"Bearer {token}"
        # Only the status is read: an endless or huge answer cannot hold the executor (and its row
        # locks) or its memory. Redirects are not followed: the token goes to the configured URL only.
        try:
            with httpx.Client(timeout=self.http_timeout, follow_redirects=False, trust_env=False) as client, \
                    client.stream("POST", url, content=message.body, headers=headers) as response:
                status, phrase = response.status_code, response.reason_phrase
        except httpx.HTTPError as exc:
            return Outcome("failed", f"POST to ${endpoint.url_env}: {type(exc).__name__}")
        if 200 <= status < 300:
            return Outcome("sent", f"POST to ${endpoint.url_env}: HTTP {status}")
        return Outcome("failed", f"POST to ${endpoint.url_env}: HTTP {status} {phrase}")


def _matches(props: Any, body: bytes, event_id: str, message_id: str | None) -> bool:
    if props.message_id and props.message_id in (event_id, message_id):
        return True
    if is_dead_letter_of(event_id, props.message_id, body):  # an event the dead-letter browser made of it
        return True
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    records = doc.get("events") if isinstance(doc, dict) and "events" in doc else doc
    records = records if isinstance(records, list) else [records]
    return any(isinstance(r, dict) and r.get("event_id") == event_id for r in records)


def move_from_dlq(tap: ReplayTap, event_id: str, message_id: str | None, replay_id: int,
                  environ: Mapping[str, str]) -> Outcome:
    """Move one message from the tap's DLQ back to its source, exactly once: republish (confirmed),
    then ack in the DLQ; every other message read on the way is requeued."""
    dlq = tap.dead_letter_queue or ""
    try:
        connection = pika.BlockingConnection(rabbit_parameters(tap.broker_url(environ), BROKER_TIMEOUT))
    except AMQPConnectorException as exc:
        return Outcome("failed", f"tap {tap.name}: cannot connect to the broker ({type(exc).__name__})")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        held: list[int] = []
        found = None
        while len(held) < MAX_DLQ_WALK:
            method, props, body = channel.basic_get(dlq, auto_ack=False)
            if method is None:
                break
            if _matches(props, body, event_id, message_id):
                found = (method, props, body)
                break
            held.append(method.delivery_tag)
        try:
            if found is None:
                where = f"the first {MAX_DLQ_WALK:,} messages of {dlq}" if len(held) >= MAX_DLQ_WALK else dlq
                return Outcome("retry", f"message {event_id} not found in {where}")
            method, props, body = found
            headers = {k: v for k, v in (props.headers or {}).items() if k not in _DEATH_HEADERS}
            headers[REPLAY_OF_HEADER] = event_id
            headers[REPLAY_ID_HEADER] = str(replay_id)
            exchange = tap.source_exchange or ""
            routing_key = tap.queue or ""
            deaths = (props.headers or {}).get("x-death") or []
            if exchange and deaths and deaths[0].get("routing-keys"):
                routing_key = deaths[0]["routing-keys"][0]
            properties = pika.BasicProperties(
                content_type=props.content_type, content_encoding=props.content_encoding, headers=headers,
                delivery_mode=props.delivery_mode or 2, message_id=props.message_id, timestamp=props.timestamp,
                correlation_id=props.correlation_id, type=props.type, app_id=props.app_id)
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            channel.basic_ack(method.delivery_tag)
            where = f"exchange {exchange}" if exchange else f"queue {routing_key}"
            return Outcome("sent", f"moved from {dlq} to {where}")
        finally:
            if held:  # one frame for all of them; requeued, they keep their places in the DLQ
                channel.basic_nack(held[-1], multiple=True, requeue=True)
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
        return Outcome("failed", f"the broker refused the republish of {event_id} (unroutable or nacked); "
                                 f"it stays in {dlq}")
    finally:
        if connection.is_open:
            connection.close()
