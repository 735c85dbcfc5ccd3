"""Retention: keep every table bounded without long DELETEs.

- raw events: whole daily partitions older than `retention_events` are detached and dropped
  (instant, no vacuum debt); partitions ahead are created on the same run; the event ids of
  the dropped days (`event_ids`) follow in bounded batches, and recorded conflicts after the
  same age;
- transactions, milestones, keys, open items and promised deadlines: whole business
  transactions whose every member's last event is older than `retention_transactions` (a
  business is kept while any member is active, so its name never outlives it), removed in
  bounded batches walking the old transactions by time; deadlines left without a transaction
  (from before this rule) are swept in batches too; the identity journal after a day;
- derived metrics: minute rollups and samples after the longest SLA window they serve, hourly
  rollups after `retention_rollups`; alert history after `retention_alerts`; queue probe
  samples after 7 days.

`plan()` says what would go (`controltower retention --dry-run`); `apply()` does it. The
scheduler runs `apply` hourly in the leader. Composition-free: only schema knowledge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower import grants, linking, migrate
from controltower.identity import LOCK_BUSINESS
from controltower.settings import Settings

log = logging.getLogger(__name__)
BATCH = 5_000
METRICS_MINUTES_KEEP = timedelta(days=91)  # /v1/sla windows reach 90 days back
QUEUE_SAMPLES_KEEP = timedelta(days=7)

# (table, time column, setting that bounds it or a fixed age); batched deletes by ctid range
_DERIVED = (
    ("sla_rollup_minute", "minute", None),
    ("event_rollup_minute", "minute", None),
    ("sla_samples", "completed_at", None),
    ("sla_rollup_hour", "hour", "retention_rollups"),
    ("event_rollup_hour", "hour", "retention_rollups"),
    ("alert_events", "at", "retention_alerts"),
    ("alert_notifications", "created_at", "retention_alerts"),
    ("alert_audit", "at", "retention_alerts"),
    # resolved incidents (open ones have no resolved_at), their alerts and timeline by cascade
    ("incidents", "resolved_at", "retention_alerts"),
    ("event_conflicts", "last_seen_at", "retention_events"),
    # read by the SLA job within minutes of being written; kept longer while the job lags
    # (see _journal_cutoff)
    ("identity_changes", "changed_at", timedelta(days=1)),
    # queue probes: the queue SLAs read the last hour, a dead-letter queue's last empty sample
    # (a DLQ non-empty for a week reads as non-empty for 7 days)
    ("queue_samples", "at", QUEUE_SAMPLES_KEEP),
)

# One batch of whole business transactions past retention: the next `:n` old transactions after
# the cursor, and of their businesses those without any member still active; answers them, how
# many old transactions were looked at and where the walk stands.
_EXPIRE_CANDIDATES = """
WITH cand AS (
    SELECT last_event_at, correlation_id, business_id FROM transactions
    WHERE last_event_at < :c AND (last_event_at, correlation_id) > (:after_at, :after_cid)
    ORDER BY last_event_at, correlation_id
    LIMIT :n
), expired AS (
    SELECT DISTINCT business_id FROM cand c
    WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.business_id = c.business_id AND t.last_event_at >= :c)
)
SELECT (SELECT coalesce(array_agg(business_id ORDER BY business_id), '{}') FROM expired), (SELECT count(*) FROM cand),
       (SELECT last_event_at FROM cand ORDER BY last_event_at DESC, correlation_id DESC LIMIT 1),
       (SELECT correlation_id FROM cand ORDER BY last_event_at DESC, correlation_id DESC LIMIT 1)
"""
# ... and, once their linking locks are held (a late event may have just linked a new member into
# one: it is active, so that business stays), the whole businesses still expired go.
_EXPIRE_BUSINESSES = """
WITH expired AS (
    SELECT b AS business_id FROM unnest(CAST(:expired AS text[])) AS b
    WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.business_id = b AND t.last_event_at >= :c)
), gone AS (
    DELETE FROM transactions WHERE business_id IN (SELECT business_id FROM expired) RETURNING correlation_id
), m AS (DELETE FROM transaction_milestones WHERE correlation_id IN (SELECT correlation_id FROM gone))
, k AS (DELETE FROM transaction_keys WHERE correlation_id IN (SELECT correlation_id FROM gone))
, s AS (DELETE FROM sla_open_items WHERE correlation_id IN (SELECT business_id FROM expired))
, d AS (DELETE FROM sla_deadlines WHERE correlation_id IN (SELECT correlation_id FROM gone))
SELECT count(*) FROM gone
"""

# Deadlines (metrics' sla_deadlines) past the transactions' retention whose transaction is gone
# (removed before deadlines went with it, or raced with it): they would otherwise stay forever.
_ORPHAN_DEADLINES = """
    FROM sla_deadlines d
    WHERE d.due_at < :c
      AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.correlation_id = d.correlation_id)
"""


@dataclass
class Plan:
    partitions: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, datetime] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"event partitions to drop: {', '.join(self.partitions) or 'none'}"]
        for table, n in self.rows.items():
            lines.append(f"{table}: {n:,} rows older than {self.cutoffs[table]:%Y-%m-%d %H:%M}")
        return "\n".join(lines)


def _partition_day(name: str) -> date | None:
    try:
        return datetime.strptime(name.removeprefix("events_"), "%Y%m%d").date()
    except ValueError:
        return None


def _exists(conn: Connection, table: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one()


def _oldest_kept_day(settings: Settings, now: datetime) -> date:
    return (now - timedelta(seconds=settings.retention_events)).astimezone(UTC).date()


def _cutoffs(settings: Settings, now: datetime) -> dict[str, datetime]:
    transactions = now - timedelta(seconds=settings.retention_transactions)
    out = {
        "transactions": transactions,
        # the ids of events in dropped partitions: before the first kept (UTC) day
        "event_ids": datetime.combine(_oldest_kept_day(settings, now), time(), UTC),
        "sla_deadlines": transactions,
    }
    for table, _, setting in _DERIVED:
        if isinstance(setting, timedelta):
            out[table] = now - setting
        else:
            out[table] = now - (timedelta(seconds=getattr(settings, setting)) if setting else METRICS_MINUTES_KEEP)
    return out


# The identity journal is what the metrics job reads to re-attribute merges: never prune what
# the rollups or the signals (their current watermark) have not read yet.
_JOURNAL_READ_UP_TO = """
SELECT least((SELECT value FROM metrics_watermarks WHERE name = 'rollups'),
             (SELECT max(value) FROM metrics_watermarks WHERE name LIKE 'signals%')) - interval '1 hour'
"""


def plan(engine: Engine, settings: Settings, now: datetime | None = None) -> Plan:
    now = now or datetime.now(UTC)
    result = Plan(cutoffs=_cutoffs(settings, now))
    oldest_kept = _oldest_kept_day(settings, now)
    with engine.connect() as conn:
        if _exists(conn, "metrics_watermarks"):
            read = conn.execute(sa.text(_JOURNAL_READ_UP_TO)).scalar()
            if read is not None:
                result.cutoffs["identity_changes"] = min(result.cutoffs["identity_changes"], read)
        for name in migrate.event_partitions(conn):
            day = _partition_day(name)
            if day is not None and day < oldest_kept:
                result.partitions.append(name)
        result.rows["transactions"] = conn.execute(
            sa.text("SELECT count(*) FROM transactions WHERE last_event_at < :c"), {"c": result.cutoffs["transactions"]}
        ).scalar_one()
        result.rows["event_ids"] = conn.execute(
            sa.text("SELECT count(*) FROM event_ids WHERE occurred_at < :c"), {"c": result.cutoffs["event_ids"]}
        ).scalar_one()
        if _exists(conn, "sla_deadlines"):
            result.rows["sla_deadlines"] = conn.execute(
                sa.text("""SELECT count(*) FROM sla_deadlines d
                           WHERE EXISTS (SELECT 1 FROM transactions t
                                         WHERE t.correlation_id = d.correlation_id AND t.last_event_at < :c)
                              OR (d.due_at < :c AND NOT EXISTS (SELECT 1 FROM transactions t
                                                                WHERE t.correlation_id = d.correlation_id))"""),
                {"c": result.cutoffs["sla_deadlines"]},
            ).scalar_one()
        for table, column, _ in _DERIVED:
            if _exists(conn, table):
                result.rows[table] = conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE {column} < :c"),  # noqa: S608 (constants)
                    {"c": result.cutoffs[table]},
                ).scalar_one()
    return result


def apply(engine: Engine, settings: Settings, now: datetime | None = None) -> Plan:
    """Drop old partitions, delete expired rows in batches, create partitions ahead."""
    now = now or datetime.now(UTC)
    todo = plan(engine, settings, now)
    for name in todo.partitions:
        with engine.begin() as conn:
            # DETACH first so concurrent readers of `events` never wait on the DROP; a process
            # role (not the owner) goes through the owner's function (controltower.grants)
            grants.drop_event_partition(conn, name)
        log.info("retention: dropped partition %s", name)
    _batched(engine, "event_ids", """
        WITH gone AS (
            DELETE FROM event_ids WHERE ctid IN (SELECT ctid FROM event_ids WHERE occurred_at < :c LIMIT :n)
            RETURNING 1)
        SELECT count(*) FROM gone
    """, todo.cutoffs["event_ids"])
    _expire_businesses(engine, todo.cutoffs["transactions"])
    with engine.connect() as conn:
        deadlines = _exists(conn, "sla_deadlines")
    if deadlines:
        _batched(engine, "sla_deadlines", f"""
            WITH gone AS (
                DELETE FROM sla_deadlines WHERE ctid IN (SELECT d.ctid {_ORPHAN_DEADLINES} LIMIT :n)
                RETURNING 1)
            SELECT count(*) FROM gone
        """, todo.cutoffs["sla_deadlines"])  # noqa: S608 (a constant above)
    for table, column, _ in _DERIVED:
        with engine.connect() as conn:
            if not _exists(conn, table):
                continue
        _batched(engine, table, f"""
            WITH gone AS (
                DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} < :c LIMIT :n)
                RETURNING 1)
            SELECT count(*) FROM gone
        """, todo.cutoffs[table])  # noqa: S608 (table and column are constants above)
    migrate.ensure_partitions_ahead(engine, now=now)
    return todo


def _expire_businesses(engine: Engine, cutoff: datetime) -> int:
    total = 0
    after_at, after_cid = datetime(1970, 1, 1, tzinfo=UTC), ""
    while True:
        for attempt in range(1, 4):
            try:
                with engine.begin() as conn:
                    expired, looked, last_at, last_cid = conn.execute(
                        sa.text(_EXPIRE_CANDIDATES),
                        {"c": cutoff, "n": BATCH, "after_at": after_at, "after_cid": after_cid},
                    ).one()
                    gone = 0
                    if expired:
                        # the locks ingest takes before it links into a business (controltower.linking)
                        conn.exec_driver_sql(linking.LOCK_SQL, (LOCK_BUSINESS, linking.business_lock_ids(expired))).all()
                        gone = conn.execute(sa.text(_EXPIRE_BUSINESSES), {"c": cutoff, "expired": expired}).scalar_one()
                break
            except sa.exc.OperationalError as exc:  # a deadlock with a linking batch: the batch again
                if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) or attempt == 3:
                    raise
        total += gone
        if looked < BATCH:
            break
        after_at, after_cid = last_at, last_cid
    if total:
        log.info("retention: transactions: %d rows removed", total)
    return total


def _batched(engine: Engine, table: str, sql: str, cutoff: datetime) -> int:
    total = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(sa.text(sql), {"c": cutoff, "n": BATCH}).scalar_one()
        total += n
        if n < BATCH:
            break
    if total:
        log.info("retention: %s: %d rows removed", table, total)
    return total
