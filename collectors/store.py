"""The collectors' write path: validated events into Postgres, durably, in one transaction.

`EventStore` validates and masks records (per-record rejections), then writes a batch in one
transaction: the SQL in `statements` claims each `(correlation_id, event_id)` once, stores
only what was new, records same-id-different-content as a conflict, and merges the new
events into the transaction index (`rows` derives milestone and key rows from them). So a
duplicate, however late or changed, leaves every table as it was. It does not parse request
bodies.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_dumps
from sqlalchemy.engine import Engine

from collectors import statements as sql
from collectors.rows import SeenCache, index_rows
from controltower import distribute, linking, migrate
from controltower.db import is_unavailable
from controltower.errors import EventError, StorageUnavailable
from controltower.event import Event, EventRecord, Limits, event_from_record, parse_event
from controltower.settings import Settings

log = logging.getLogger(__name__)

# the row shape of `events` (bench/ingest.py COPYs the same rows)
COPY_COLUMNS = sql.COPY_COLUMNS
_COPY_TYPES = sql.COPY_TYPES
DEADLINES_REFRESH = timedelta(minutes=5)  # how often the SLA definitions' deadline attributes are re-read


class EventMasker(Protocol):
    def mask_event(self, event: Event) -> int: ...


@dataclass
class IngestResult:
    """`duplicates` counts every record whose id was already stored (or came earlier in the
    batch); `conflicts` is how many of those carried different content (see event_conflicts)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    conflicts: int = 0
    # what the batch did to the identity graph (counted on /metrics, not part of the answer)
    link: linking.LinkResult = field(default_factory=linking.LinkResult, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": [{"index": i, "error": e} for i, e in self.rejected],
        }


@dataclass(frozen=True)
class Written:
    new: int
    duplicates: int
    conflicts: int
    link: linking.LinkResult = field(default_factory=linking.LinkResult)


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
        self.limits = self._make_limits(())
        self._deadlines_read_at: datetime | None = None
        self._known_days: set[date] = set()
        self._keys = SeenCache()
        self._days_lock = threading.Lock()
        self._citus: bool | None = None
        self._members = False  # whether ingest keeps business_members (a cluster; decided with _citus)

    # -- validation -------------------------------------------------------------------------
    def _make_limits(self, sla_deadlines: Iterable[str]) -> Limits:
        s = self.settings
        return Limits(
            max_age=timedelta(seconds=s.max_event_age),
            max_future=timedelta(seconds=s.max_future_skew),
            key_attributes=s.indexed_keys,
            identity_keys=s.linking_keys,
            max_key_values=s.max_key_values,
            deadline_attributes=frozenset(s.deadline_attributes) | frozenset(sla_deadlines),
            deadline_years=(s.deadline_min_year, s.deadline_max_year),
        )

    def _current_limits(self, now: datetime) -> Limits:
        """The limits, with every deadline attribute the loaded SLA definitions use (re-read every
        few minutes, so an SLA added to slas.yaml is enforced without a restart)."""
        read_at = self._deadlines_read_at
        if read_at is None or not read_at <= now < read_at + DEADLINES_REFRESH:
            self._deadlines_read_at = now
            try:
                with self.engine.connect() as conn:
                    names = conn.execute(sa.text(
                        "SELECT DISTINCT deadline_attribute FROM sla_definitions WHERE deadline_attribute IS NOT NULL"
                    )).scalars().all()
            except sa.exc.DBAPIError as exc:  # the write reports an outage; keep the last known set
                log.debug("deadline attributes not re-read: %s", exc)
            else:
                self.limits = self._make_limits(names)
        return self.limits

    def validate(
        self, records: Sequence[Any], *, now: datetime, errors: dict[int, str] | None = None
    ) -> tuple[list[tuple[int, Event]], list[tuple[int, str]]]:
        """Parse records (decoded JSON, or `EventRecord`s) into events; `errors` carries rejections
        found earlier (e.g. bad JSON)."""
        good: list[tuple[int, Event]] = []
        rejected: list[tuple[int, str]] = []
        limit = self.settings.max_batch_events
        limits = self._current_limits(now)
        for index, record in enumerate(records):
            if errors and index in errors:
                rejected.append((index, errors[index]))
                continue
            if index >= limit:
                rejected.append((index, f"batch holds more than {limit} records; send the rest in another request"))
                continue
            try:
                if type(record) is EventRecord:  # decoded and type-checked in one pass (bodies.decode_events)
                    event = event_from_record(record, now=now, limits=limits)
                else:
                    event = parse_event(record, now=now, limits=limits)
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
        written = self.write([e for _, e in good], source=source, now=now)
        return IngestResult(
            accepted=written.new, duplicates=written.duplicates, rejected=rejected, conflicts=written.conflicts,
            link=written.link,
        )

    # -- writing ----------------------------------------------------------------------------
    def ensure_partitions(self, days: Iterable[date]) -> None:
        missing = set(days) - self._known_days
        if not missing:
            return
        with self._days_lock:
            migrate.ensure_partitions(self.engine, missing)
            self._known_days |= missing

    def write(self, events: Sequence[Event], *, source: str, now: datetime) -> Written:
        """Store events (first arrival of an id wins); raises StorageUnavailable when Postgres is away."""
        if not events:
            return Written(0, 0, 0)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self.ensure_partitions({e.occurred_at.astimezone(UTC).date() for e in events})
                return self._write_once(events, source=source, now=now)
            except (sa.exc.DBAPIError, psycopg.Error) as exc:
                # statements on the raw cursor raise psycopg's errors unwrapped
                orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
                if isinstance(orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)) and attempt < attempts:
                    log.info("ingest batch retried after %s", type(orig).__name__)
                    continue
                if isinstance(orig, psycopg.errors.CheckViolation | psycopg.errors.UndefinedTable) and attempt < attempts:
                    # a partition vanished (retention) between our cache and the insert
                    self._known_days.clear()
                    self._keys.clear()
                    continue
                if isinstance(exc, sa.exc.DBAPIError) and is_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {type(orig).__name__}") from exc
                if isinstance(exc, psycopg.OperationalError):
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
                raise
        raise AssertionError("unreachable")

    def _staged_on_citus(self) -> bool:
        """Whether the staging tables are distributed ones (Citus; decided once per store): then
        the store must not create the temporary ones and clears its rows itself."""
        if self._citus is None:
            self._citus = distribute.is_distributed(self.engine)
            with self.engine.connect() as conn:
                self._members = self._citus and distribute.has_members(conn)
        return self._citus

    def _write_once(self, events: Sequence[Event], *, source: str, now: datetime) -> Written:
        citus = self._staged_on_citus()
        batch = secrets.randbits(63)  # tells this batch's staged rows from concurrent ones' (Citus)
        first: dict[tuple[str, str], int] = {}  # the first arrival of each id: its arrival order
        for ord_, event in enumerate(events):
            first.setdefault((event.correlation_id, event.event_id), ord_)
        staged = None
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            if not conn.info.get("ct_staging"):
                if not citus:
                    raw.execute(sql.STAGING_DDL)
                set_json_dumps(_dumps, context=raw)
                # noted once committed: a failed first batch (a deadlock while linking, a cancel)
                # rolls the staging tables back with it, and the next batch must create them again
                staged = conn.info
            with raw.cursor() as cur:
                if citus:
                    # one connection per worker for the whole batch: every step then sees what the
                    # earlier ones wrote (Citus refuses a read of placements a multi-shard write
                    # modified over several connections), and it measured faster (docs/scaling.md)
                    cur.execute("SET LOCAL citus.max_adaptive_executor_pool_size = 1")
                params = {"batch": batch}
                with cur.copy(sql.COPY_BATCH) as copy:
                    copy.set_types(sql.BATCH_TYPES)
                    for ord_, event in enumerate(events):
                        ids = (event.correlation_id, event.event_id)
                        copy.write_row((batch, ord_, first[ids] == ord_, *_row(event, now, source)))
                cur.execute(sql.CLAIM_IDS, params)
                claimed = cur.fetchall()
                if len(claimed) < len(first):
                    got = {(c, e) for c, e in claimed}
                    lost = [o for ids, o in first.items() if ids not in got]
                    cur.execute(sql.UNCLAIMED, {"batch": batch, "ords": lost})
                stored = sorted(first[c, e] for c, e in claimed)
                if stored:
                    cur.execute(sql.INSERT_EVENTS, params)
                conflicts = 0
                if len(stored) < len(events):
                    cur.execute(sql.COUNT_CONFLICTS, params)
                    conflicts = cur.fetchone()[0]  # type: ignore[index]
                    if conflicts:
                        cur.execute(sql.RECORD_CONFLICTS, {"batch": batch, "now": now})
                keys: dict[tuple[str, ...], Any] = {}
                links: set[tuple[str, str, str]] = set()
                refused: Counter[str] = Counter()
                if stored:
                    new = [events[i] for i in stored]
                    all_keys, links, refused = index_rows(new, self.settings.indexed_keys, self.settings.linking_keys)
                    keys = self._keys.fresh(all_keys)
                link = linking.LinkResult()
                if keys:
                    # keys and links first: a new correlation id is then stored with its business
                    with cur.copy(sql.COPY_KEYS) as copy:
                        copy.set_types(sql.KEY_TYPES)
                        for key, at in keys.items():
                            copy.write_row((batch, *key, at))
                    if not links:
                        cur.execute(sql.UPSERT_KEYS, params)
                    else:
                        cur.execute(sql.UPSERT_KEYS_RETURNING, params)
                        inserted = [row[:3] for row in cur.fetchall() if row[3] and row[:3] in links]
                        link = linking.link(
                            cur, inserted, kinds=self.settings.linking_keys,
                            limit=self.settings.link_fanout_limit, now=now, members=self._members,
                        )
                link.refused.update(refused)
                if stored:
                    assigned = sorted(link.assign.items())
                    cur.execute(sql.UPSERT_TRANSACTIONS, {
                        "batch": batch, "now": now,
                        "assign_cids": [c for c, _ in assigned], "assign_bids": [b for _, b in assigned],
                    })
                    if self._members:  # a cluster's member lists: each new transaction's row
                        cur.execute(sql.MEMBERS_OWN, params)
                        if assigned:
                            cur.execute(sql.MEMBERS_ASSIGNED, {"cids": [c for c, _ in assigned]})
                            added = [(b, c) for b, c in cur.fetchall() if b != c]
                            if added:
                                distribute.add_members(cur, [b for b, _ in added], [c for _, c in added])
                    # milestones straight from the stored rows, earliest per milestone
                    cur.execute(sql.UPSERT_MILESTONES, {"batch": batch, "now": now})
                if citus:
                    cur.execute(sql.CLEAR_BATCH, params)
                    if keys:
                        cur.execute(sql.CLEAR_KEYS, params)
        if staged is not None:
            staged["ct_staging"] = True
        # only what is committed may be skipped next time
        self._keys.remember(keys)
        return Written(new=len(stored), duplicates=len(events) - len(stored), conflicts=conflicts, link=link)
