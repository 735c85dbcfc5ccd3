"""Sinks: where simulated events go. The product's own public entry points, nothing private.

- `HttpSink`: `POST /v1/events` in batches of at most 1000, retrying 429/503 after the
  `Retry-After` they carry; a batch refused record by record (400 with every record in
  `rejected`) is counted and logged, and the run goes on; optionally a share of plain, current events as OTLP spans
  through `collectors.instrument.flow_step`, so the span path is exercised too.
- `FileSink`: a 3PL's shipment feed (fulfilment.shipped) as JSONL or CSV files in a drop
  folder, written whole then renamed so a watcher never reads half a file.
- `StoreSink`: backfill straight into `EventStore.ingest` (same validation, masking and rows
  as the HTTP path, without the network).

Every sink counts what the product answered in `totals`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from sqlalchemy.engine import Engine

from controltower.errors import ControlTowerError
from controltower.event import FIELDS
from controltower.settings import Settings
from simulator.records import SimEvent

log = logging.getLogger(__name__)
MAX_BATCH = 1000
MAX_RETRY_WAIT_S = 30.0
# A span is stamped with the wall clock, so only events this close to real now go as spans.
SPAN_MAX_AGE = timedelta(seconds=60)


class EmitError(ControlTowerError):
    """The product refused a batch for good (not a retryable 429/503)."""


@dataclass
class Totals:
    """What the product answered, summed over every batch."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    spans: int = 0
    files: int = 0
    rejections: list[str] = field(default_factory=list)

    def add(self, sent: int, answer: dict[str, Any]) -> None:
        self.sent += sent
        self.accepted += int(answer.get("accepted", 0))
        self.duplicates += int(answer.get("duplicates", 0))
        rejected = answer.get("rejected") or []
        self.rejected += len(rejected)
        self.rejections.extend(str(r.get("error", r)) for r in rejected[: max(0, 20 - len(self.rejections))])

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "accepted": self.accepted, "duplicates": self.duplicates,
            "rejected": self.rejected, "spans": self.spans, "files": self.files,
            "rejection_samples": self.rejections,
        }


class Sink(Protocol):
    totals: Totals

    def send(self, events: Sequence[SimEvent]) -> None: ...

    def close(self) -> None: ...


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class HttpSink:
    """Posts canonical records to a collector; retries while it says "later"."""

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        span_share: float = 0.0,
        stop: threading.Event | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.totals = Totals()
        self.span_share = span_share
        self.stop = stop or threading.Event()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)
        self._spans = _SpanEmitter(self.endpoint, api_key) if span_share > 0 else None

    def send(self, events: Sequence[SimEvent]) -> None:
        records = []
        now = datetime.now(UTC)
        for event in events:
            if self._spans is not None and self._as_span(event, now):
                self._spans.emit(event.record)
                self.totals.spans += 1
            else:
                records.append(event.record)
        for batch in _chunks(records, MAX_BATCH):
            answer = self._post(list(batch))
            self.totals.add(len(batch), answer)
            rejected = answer.get("rejected") or []
            if rejected:
                first = rejected[0]
                log.warning(
                    "%s/v1/events: %d of %d records rejected (first: %s); going on",
                    self.endpoint, len(rejected), len(batch), first.get("error", first) if isinstance(first, dict) else first,
                )

    def _as_span(self, event: SimEvent, now: datetime) -> bool:
        """Plain, current events whose id hashes into the share (deterministic per event)."""
        if not event.plain or now - datetime.fromtimestamp(event.at, UTC) > SPAN_MAX_AGE:
            return False
        digest = hashlib.sha256(event.record["event_id"].encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.span_share

    def _post(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        body = orjson.dumps(batch)
        url = f"{self.endpoint}/v1/events"
        delay = 0.5
        while True:
            try:
                response = self.client.post(url, content=body, headers={"Content-Type": "application/json"})
            except httpx.TransportError as exc:
                wait, reason = delay, f"{url} unreachable ({type(exc).__name__})"
                delay = min(delay * 2, MAX_RETRY_WAIT_S)
            else:
                if response.status_code in (429, 503):
                    wait, reason = _retry_after(response, delay), f"{url} answered {response.status_code}"
                else:
                    return _answer(url, response, len(batch))
            if self.stop.wait(wait):
                raise EmitError(f"stopped while retrying: {reason}")

    def close(self) -> None:
        self.client.close()
        if self._spans is not None:
            self._spans.close()


def _answer(url: str, response: httpx.Response, sent: int) -> dict[str, Any]:
    """The ingest answer. A 400 is an answer too: every record rejected (each with its reason in
    `rejected`), or the body refused as a whole (`error`, no per-record list: then every record
    counts as rejected with that reason). Anything else the product will not take is an error."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code in (200, 400) and isinstance(answer, dict) and "accepted" in answer:
        if response.status_code == 400 and not answer.get("rejected"):
            reason = str(answer.get("error") or "the body was refused")
            answer = {**answer, "rejected": [{"index": i, "error": reason} for i in range(sent)]}
        return answer
    raise EmitError(f"{url} answered {response.status_code}: {response.text[:200]}")


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(MAX_RETRY_WAIT_S, max(0.1, float(response.headers.get("Retry-After", default))))
    except ValueError:
        return default


class _SpanEmitter:
    """One OpenTelemetry SDK provider per emitting system (service.name is per resource)."""

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        self.endpoint = endpoint
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.providers: dict[str, Any] = {}

    def _tracer(self, system: str) -> Any:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if system not in self.providers:
            provider = TracerProvider(resource=Resource.create({"service.name": system}))
            exporter = OTLPSpanExporter(endpoint=f"{self.endpoint}/v1/traces", headers=self.headers)
            provider.add_span_processor(BatchSpanProcessor(exporter))
            self.providers[system] = provider
        return self.providers[system].get_tracer("simulator")

    def emit(self, record: dict[str, Any]) -> None:
        from collectors.instrument import flow_step

        with flow_step(
            record["flow"], record["stage"], channel=record.get("channel"),
            correlation_id=record["correlation_id"], order_id=record.get("order_id"),
            system=record["system"], attributes=record.get("attributes"),
            tracer=self._tracer(record["system"]),
        ):
            pass

    def close(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()


class FileSink:
    """A 3PL's shipment feed: fulfilment.shipped records written as files into a drop folder."""

    def __init__(
        self, folder: Path, *, fmt: str = "jsonl", every_records: int = 200, every_seconds: float = 10.0
    ) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"file format {fmt!r} is not jsonl or csv")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.fmt = folder, fmt
        self.every_records, self.every_seconds = every_records, every_seconds
        self.totals = Totals()
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()

    @staticmethod
    def wants(event: SimEvent) -> bool:
        """What a 3PL reports by file: its own shipments."""
        r = event.record
        return event.milestone == "fulfilment.shipped" and r.get("attributes", {}).get("location") == "3pl-west"

    def send(self, events: Sequence[SimEvent]) -> None:
        """Queue records; a file is cut per N records or every few seconds, as a 3PL batches."""
        self._pending.extend(e.record for e in events)
        due = time.monotonic() - self._flushed >= self.every_seconds
        if len(self._pending) >= self.every_records or due:
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one file (an atomic rename, so watchers see it whole)."""
        if not self._pending:
            return
        first = self._pending[0]["occurred_at"].replace(":", "").replace("-", "")[:15]
        name = f"3pl-west-shipments-{first}-{self.totals.files + 1:05d}.{self.fmt}"
        text = _jsonl(self._pending) if self.fmt == "jsonl" else _csv(self._pending)
        part = self.folder / (name + ".part")
        part.write_text(text, encoding="utf-8")
        os.replace(part, self.folder / name)
        self.totals.sent += len(self._pending)
        self.totals.files += 1
        self._pending = []
        self._flushed = time.monotonic()

    def close(self) -> None:
        self.flush()


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def _csv(records: list[dict[str, Any]]) -> str:
    """Canonical columns plus one `attributes.X` column per attribute seen."""
    keys = sorted({k for r in records for k in r.get("attributes", {})})
    columns = [f for f in FIELDS if f not in ("attributes", "payload")] + [f"attributes.{k}" for k in keys]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        attrs = r.get("attributes", {})
        writer.writerow(
            [r.get(c, "") if not c.startswith("attributes.") else attrs.get(c[11:], "") for c in columns]
        )
    return out.getvalue()


class StoreSink:
    """Backfill through the collectors' store: validation, masking and idempotency included."""

    def __init__(self, engine: Engine, settings: Settings, *, batch_size: int = 5000) -> None:
        from collectors.store import EventStore
        from controltower.masking import Masker, MaskingRules

        self.store = EventStore(engine, settings, Masker(MaskingRules.for_settings(settings)))
        self.batch_size = batch_size
        self.totals = Totals()

    def send(self, events: Sequence[SimEvent]) -> None:
        for batch in _chunks([e.record for e in events], self.batch_size):
            result = self.store.ingest(list(batch), source="simulator", now=datetime.now(UTC))
            self.totals.add(len(batch), result.to_json())

    def close(self) -> None:
        """Nothing is buffered: every `send` is committed before it returns."""

