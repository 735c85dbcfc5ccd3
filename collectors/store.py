"""The collectors' write path: validated events into Postgres, durably, in one transaction.

A batch is COPYed into a per-connection staging table, inserted into `events` with
`ON CONFLICT DO NOTHING` (idempotency), and only the rows that were really new update
`transactions`, `transaction_milestones` and `transaction_keys` with set-based, commutative
merges (earliest milestone wins, "last" fields follow the latest `(occurred_at, event_id)`),
so duplicates, late and out-of-order events give the same rows as in-order delivery.
This is the only module of the room that writes SQL. It does not parse request bodies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_dumps
from sqlalchemy.engine import Engine

from controltower import migrate
from controltower.db import is_unavailable
from controltower.errors import EventError, StorageUnavailable
from controltower.event import Event, Limits, parse_event
from controltower.settings import Settings

log = logging.getLogger(__name__)

COPY_COLUMNS = (
    "occurred_at",
    "correlation_id",
    "event_id",
    "received_at",
    "order_id",
    "channel",
    "flow",
    "stage",
    "status",
    "system",
    "latency_ms",
    "error_code",
    "error_message",
    "attributes",
    "payload",
    "trace_id",
    "span_id",
    "parent_span_id",
    "source",
)
_COLS = ", ".join(COPY_COLUMNS)

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ct_stage (LIKE events) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ct_new (
    occurred_at timestamptz, correlation_id text, event_id text, order_id text,
    channel text, flow text, stage text, status text, system text,
    error_code text, error_message text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ct_milestones (
    correlation_id text, milestone text, reached_at timestamptz, channel text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ct_keys (
    value text, kind text, correlation_id text, first_seen_at timestamptz
) ON COMMIT DELETE ROWS;
"""
# Binary COPY types of COPY_COLUMNS, in order.
_COPY_TYPES = (
    "timestamptz", "text", "text", "timestamptz", "text", "text", "text", "text", "text", "text",
    "float8", "text", "text", "jsonb", "jsonb", "text", "text", "text", "text",
)

# The column list is a module constant, not input.
_INSERT_EVENTS = f"""
WITH ins AS (
    INSERT INTO events ({_COLS})
    SELECT DISTINCT ON (correlation_id, event_id, occurred_at) {_COLS}
    FROM ct_stage
    ORDER BY correlation_id, event_id, occurred_at
    ON CONFLICT DO NOTHING
    RETURNING occurred_at, correlation_id, event_id, order_id, channel, flow, stage, status,
              system, error_code, error_message
)
INSERT INTO ct_new SELECT * FROM ins
"""  # noqa: S608

# "first" fields follow the earliest (occurred_at, event_id), "last" fields the latest; counts
# add up only over rows that were new; the latest error follows (time, code, message). Every
# merge below is commutative and associative, so batch boundaries and arrival order don't matter.
_UPSERT_TRANSACTIONS = """
INSERT INTO transactions AS t (
    correlation_id, channel, flow, order_id, first_event_at, first_event_id, last_event_at,
    last_event_id, status, last_milestone, last_system, event_count, error_count, retry_count,
    dead_letter_count, last_error_at, last_error_code, last_error_message, updated_at)
SELECT correlation_id,
       (array_agg(channel ORDER BY occurred_at, event_id))[1],
       (array_agg(flow ORDER BY occurred_at, event_id))[1],
       min(order_id),
       min(occurred_at),
       (array_agg(event_id ORDER BY occurred_at, event_id))[1],
       max(occurred_at),
       (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(status ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(flow || '.' || stage ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(system ORDER BY occurred_at DESC, event_id DESC))[1],
       count(*),
       count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'retry'),
       count(*) FILTER (WHERE status = 'dead_letter'),
       max(occurred_at) FILTER (WHERE status IN ('error', 'dead_letter')),
       (array_agg(error_code ORDER BY occurred_at DESC, coalesce(error_code, '') DESC,
                  coalesce(error_message, '') DESC)
            FILTER (WHERE status IN ('error', 'dead_letter')))[1],
       (array_agg(error_message ORDER BY occurred_at DESC, coalesce(error_code, '') DESC,
                  coalesce(error_message, '') DESC)
            FILTER (WHERE status IN ('error', 'dead_letter')))[1],
       %(now)s
FROM ct_new
GROUP BY correlation_id
ORDER BY correlation_id
ON CONFLICT (correlation_id) DO UPDATE SET
    channel = CASE WHEN (excluded.first_event_at, excluded.first_event_id)
                        < (t.first_event_at, t.first_event_id)
                   THEN excluded.channel ELSE t.channel END,
    flow = CASE WHEN (excluded.first_event_at, excluded.first_event_id)
                     < (t.first_event_at, t.first_event_id)
                THEN excluded.flow ELSE t.flow END,
    first_event_id = CASE WHEN (excluded.first_event_at, excluded.first_event_id)
                               < (t.first_event_at, t.first_event_id)
                          THEN excluded.first_event_id ELSE t.first_event_id END,
    first_event_at = LEAST(t.first_event_at, excluded.first_event_at),
    order_id = LEAST(t.order_id, excluded.order_id),
    status = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                       > (t.last_event_at, t.last_event_id)
                  THEN excluded.status ELSE t.status END,
    last_milestone = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                               > (t.last_event_at, t.last_event_id)
                          THEN excluded.last_milestone ELSE t.last_milestone END,
    last_system = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                            > (t.last_event_at, t.last_event_id)
                       THEN excluded.last_system ELSE t.last_system END,
    last_event_id = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                              > (t.last_event_at, t.last_event_id)
                         THEN excluded.last_event_id ELSE t.last_event_id END,
    last_event_at = GREATEST(t.last_event_at, excluded.last_event_at),
    event_count = t.event_count + excluded.event_count,
    error_count = t.error_count + excluded.error_count,
    retry_count = t.retry_count + excluded.retry_count,
    dead_letter_count = t.dead_letter_count + excluded.dead_letter_count,
    last_error_code = CASE WHEN t.last_error_at IS NULL
                             OR (excluded.last_error_at, coalesce(excluded.last_error_code, ''),
                                 coalesce(excluded.last_error_message, ''))
                              > (t.last_error_at, coalesce(t.last_error_code, ''),
                                 coalesce(t.last_error_message, ''))
                           THEN excluded.last_error_code ELSE t.last_error_code END,
    last_error_message = CASE WHEN t.last_error_at IS NULL
                             OR (excluded.last_error_at, coalesce(excluded.last_error_code, ''),
                                 coalesce(excluded.last_error_message, ''))
                              > (t.last_error_at, coalesce(t.last_error_code, ''),
                                 coalesce(t.last_error_message, ''))
                           THEN excluded.last_error_message ELSE t.last_error_message END,
    last_error_at = GREATEST(t.last_error_at, excluded.last_error_at),
    updated_at = excluded.updated_at
"""

# Milestones and keys are merged with LEAST, so re-applying a duplicate event changes nothing:
# they are computed in Python from every valid event of the batch, not only the new ones.
_UPSERT_MILESTONES = """
INSERT INTO transaction_milestones AS m (correlation_id, milestone, reached_at, channel, recorded_at)
SELECT correlation_id, milestone, reached_at, channel, %(now)s FROM ct_milestones
ORDER BY correlation_id, milestone
ON CONFLICT (correlation_id, milestone) DO UPDATE SET
    reached_at = excluded.reached_at,
    channel = excluded.channel,
    recorded_at = excluded.recorded_at
WHERE (excluded.reached_at, excluded.channel) < (m.reached_at, m.channel)
"""

_UPSERT_KEYS = """
INSERT INTO transaction_keys AS k (value, kind, correlation_id, first_seen_at)
SELECT value, kind, correlation_id, first_seen_at FROM ct_keys
ORDER BY value, kind, correlation_id
ON CONFLICT (value, kind, correlation_id) DO UPDATE SET first_seen_at = excluded.first_seen_at
WHERE excluded.first_seen_at < k.first_seen_at
"""

MAX_KEY_LEN = 256
_CACHE_LIMIT = 100_000  # per cache and process: ~25 MB; skips rows a recent batch already wrote


class _SeenCache:
    """What this process already committed: (key) → earliest value. Lets a batch skip
    milestone and key rows that cannot change anything (a later time than the stored one)."""

    def __init__(self, limit: int = _CACHE_LIMIT) -> None:
        self.limit = limit
        self.data: dict[tuple[str, ...], Any] = {}

    def fresh(self, rows: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], Any]:
        data = self.data
        return {k: v for k, v in rows.items() if k not in data or v < data[k]}

    def remember(self, rows: dict[tuple[str, ...], Any]) -> None:
        if len(self.data) + len(rows) > self.limit:
            self.data.clear()
        self.data.update(rows)

    def clear(self) -> None:
        self.data.clear()


def milestone_rows(events: Sequence[Event]) -> dict[tuple[str, ...], tuple[datetime, str]]:
    """(correlation_id, milestone) → earliest (reached_at, channel) over successful events."""
    out: dict[tuple[str, ...], tuple[datetime, str]] = {}
    for e in events:
        if e.status != "ok":
            continue
        key = (e.correlation_id, e.flow + "." + e.stage)
        value = (e.occurred_at, e.channel)
        if key not in out or value < out[key]:
            out[key] = value
    return out


def key_rows(events: Sequence[Event], kinds: tuple[str, ...]) -> dict[tuple[str, ...], datetime]:
    """(value, kind, correlation_id) → first time seen, for the order id and every key attribute."""
    out: dict[tuple[str, ...], datetime] = {}

    def add(value: Any, kind: str, e: Event) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if not text or len(text) > MAX_KEY_LEN:
            return
        key = (text, kind, e.correlation_id)
        if key not in out or e.occurred_at < out[key]:
            out[key] = e.occurred_at

    for e in events:
        if e.order_id:
            add(e.order_id, "order_id", e)
        attrs = e.attributes
        if not attrs:
            continue
        for kind in kinds:
            value = attrs.get(kind)
            if value is None:
                continue
            if isinstance(value, list):
                for item in value:
                    add(item, kind, e)
            else:
                add(value, kind, e)
    return out


class EventMasker(Protocol):
    def mask_event(self, event: Event) -> int: ...


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"index": i, "error": e} for i, e in self.rejected],
        }


def _row(event: Event, received_at: datetime, source: str) -> tuple[Any, ...]:
    return (
        event.occurred_at,
        event.correlation_id,
        event.event_id,
        received_at,
        event.order_id,
        event.channel,
        event.flow,
        event.stage,
        event.status,
        event.system,
        event.latency_ms,
        event.error_code,
        event.error_message,
        event.attributes,
        event.payload,
        event.trace_id,
        event.span_id,
        event.parent_span_id,
        source,
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _check_json(event: Event) -> None:
    """PostgreSQL's jsonb cannot hold U+0000 or lone surrogates: reject the record, by field."""
    for name in ("attributes", "payload"):
        value = getattr(event, name)
        if value is None:
            continue
        try:
            dumped = orjson.dumps(value)
        except TypeError as exc:
            raise EventError(f"{name}: {exc}") from None
        if b"\\u0000" in dumped:
            raise EventError(f"{name}: contains U+0000, which PostgreSQL cannot store")


class EventStore:
    """Validates, masks and durably stores batches of canonical events."""

    def __init__(self, engine: Engine, settings: Settings, masker: EventMasker | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.masker = masker
        self.limits = Limits(
            max_age=timedelta(seconds=settings.max_event_age),
            max_future=timedelta(seconds=settings.max_future_skew),
        )
        self._known_days: set[date] = set()
        self._milestones = _SeenCache()
        self._keys = _SeenCache()
        self._days_lock = threading.Lock()

    # -- validation -------------------------------------------------------------------------
    def validate(
        self, records: Sequence[Any], *, now: datetime, errors: dict[int, str] | None = None
    ) -> tuple[list[tuple[int, Event]], list[tuple[int, str]]]:
        """Parse records into events; `errors` carries rejections found earlier (e.g. bad JSON)."""
        good: list[tuple[int, Event]] = []
        rejected: list[tuple[int, str]] = []
        limit = self.settings.max_batch_events
        for index, record in enumerate(records):
            if errors and index in errors:
                rejected.append((index, errors[index]))
                continue
            if index >= limit:
                rejected.append((index, f"batch holds more than {limit} records; send the rest in another request"))
                continue
            try:
                event = parse_event(record, now=now, limits=self.limits)
                if self.masker is not None:
                    self.masker.mask_event(event)
                _check_json(event)
            except EventError as exc:
                rejected.append((index, str(exc)))
                continue
            good.append((index, event))
        return good, rejected

    def ingest(
        self,
        records: Sequence[Any],
        *,
        source: str,
        now: datetime,
        errors: dict[int, str] | None = None,
    ) -> IngestResult:
        good, rejected = self.validate(records, now=now, errors=errors)
        accepted, duplicates = self.write([e for _, e in good], source=source, now=now)
        return IngestResult(accepted=accepted, duplicates=duplicates, rejected=rejected)

    # -- writing ----------------------------------------------------------------------------
    def ensure_partitions(self, days: Iterable[date]) -> None:
        missing = set(days) - self._known_days
        if not missing:
            return
        with self._days_lock:
            migrate.ensure_partitions(self.engine, missing)
            self._known_days |= missing

    def write(self, events: Sequence[Event], *, source: str, now: datetime) -> tuple[int, int]:
        """Store events; return (new, duplicates). Raises StorageUnavailable when Postgres is away."""
        if not events:
            return 0, 0
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self.ensure_partitions({e.occurred_at.astimezone(UTC).date() for e in events})
                inserted = self._write_once(events, source=source, now=now)
                return inserted, len(events) - inserted
            except sa.exc.DBAPIError as exc:
                orig = exc.orig
                if isinstance(orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)) and attempt < attempts:
                    log.info("ingest batch retried after %s", type(orig).__name__)
                    continue
                if isinstance(orig, psycopg.errors.CheckViolation | psycopg.errors.UndefinedTable) and attempt < attempts:
                    # a partition vanished (retention) between our cache and the insert
                    self._known_days.clear()
                    self._milestones.clear()
                    self._keys.clear()
                    continue
                if is_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {type(orig).__name__}") from exc
                raise
            except psycopg.OperationalError as exc:
                raise StorageUnavailable(f"database unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def _write_once(self, events: Sequence[Event], *, source: str, now: datetime) -> int:
        milestones = self._milestones.fresh(milestone_rows(events))
        keys = self._keys.fresh(key_rows(events, self.settings.key_attributes))
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            if not conn.info.get("ct_staging"):
                raw.execute(_STAGING_DDL)
                set_json_dumps(_dumps, context=raw)
                conn.info["ct_staging"] = True
            with raw.cursor() as cur:
                with cur.copy(f"COPY ct_stage ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_COPY_TYPES)
                    for event in events:
                        copy.write_row(_row(event, now, source))
                cur.execute(_INSERT_EVENTS)
                inserted = cur.rowcount
                if inserted:
                    cur.execute(_UPSERT_TRANSACTIONS, {"now": now})
                if milestones:
                    with cur.copy("COPY ct_milestones FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(("text", "text", "timestamptz", "text"))
                        for (cid, milestone), (at, channel) in milestones.items():
                            copy.write_row((cid, milestone, at, channel))
                    cur.execute(_UPSERT_MILESTONES, {"now": now})
                if keys:
                    with cur.copy("COPY ct_keys FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(("text", "text", "text", "timestamptz"))
                        for (value, kind, cid), at in keys.items():
                            copy.write_row((value, kind, cid, at))
                    cur.execute(_UPSERT_KEYS)
        # only what is committed may be skipped next time
        self._milestones.remember(milestones)
        self._keys.remember(keys)
        return inserted
