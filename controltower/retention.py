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

Batches walk a table's own key (its primary key, or the columns that name a row), never `ctid`,
which Citus does not support on distributed tables; statements that touch a distributed table
route by its distribution column (correlation ids passed as arrays) or run on every shard. Each
table is one step: a step that fails is logged and reported (`Plan.failed`, and
`RetentionError` once every other step has run), and the others still run.

`plan()` says what would go (`controltower retention --dry-run`); `apply()` does it. The
scheduler runs `apply` hourly in the leader. Composition-free: only schema knowledge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower import distribute, grants, linking, migrate
from controltower.errors import ControlTowerError
from controltower.identity import LOCK_BUSINESS
from controltower.settings import Settings

log = logging.getLogger(__name__)
BATCH = 5_000
METRICS_MINUTES_KEEP = timedelta(days=91)  # /v1/sla windows reach 90 days back
QUEUE_SAMPLES_KEEP = timedelta(days=7)

# (table, time column, setting that bounds it or a fixed age, the key a batch is chosen by)
_DERIVED = (
    ("sla_rollup_minute", "minute", None, ("sla", "channel", "minute")),
    ("event_rollup_minute", "minute", None, ("minute", "channel", "flow", "stage", "status")),
    ("sla_samples", "completed_at", None, ("sla", "correlation_id")),
    ("sla_rollup_hour", "hour", "retention_rollups", ("sla", "channel", "hour")),
    ("event_rollup_hour", "hour", "retention_rollups", ("hour", "channel", "flow", "stage", "status")),
    ("alert_events", "at", "retention_alerts", ("id",)),
    ("alert_notifications", "created_at", "retention_alerts", ("id",)),
    ("alert_audit", "at", "retention_alerts", ("id",)),
    # resolved incidents (open ones have no resolved_at), their alerts and timeline by cascade
    ("incidents", "resolved_at", "retention_alerts", ("id",)),
    ("event_conflicts", "last_seen_at", "retention_events", ("correlation_id", "event_id", "incoming_hash")),
    # read by the SLA job within minutes of being written; kept longer while the job lags
    # (see _journal_cutoff); no primary key: a batch takes every row of a (business, time) pair
    ("identity_changes", "changed_at", timedelta(days=1), ("business_id", "changed_at")),
    # queue probes: the queue SLAs read the last hour, a dead-letter queue's last empty sample
    # (a DLQ non-empty for a week reads as non-empty for 7 days)
    ("queue_samples", "at", QUEUE_SAMPLES_KEEP, ("queue", "at")),
)


def _batch_delete(table: str, key: tuple[str, ...], where: str) -> str:
    """One batch: at most `:n` rows of `table` matching `where`, chosen and deleted by `key` (on
    Citus the choice is a subplan and the DELETE runs on each shard); answers how many went."""
    cols = ", ".join(key)
    return f"""
        WITH gone AS (
            DELETE FROM {table} WHERE {where} AND ({cols}) IN (SELECT {cols} FROM {table} WHERE {where} LIMIT :n)
            RETURNING 1)
        SELECT count(*) FROM gone
    """  # noqa: S608 (table, key and condition are constants of this module)


# One batch of whole business transactions past retention: the next `:n` old transactions after
# the cursor (transactions_last_event_idx, on every shard, merged in order).
_EXPIRE_CANDIDATES = sa.text("""
SELECT last_event_at, correlation_id, business_id FROM transactions
WHERE last_event_at < :c AND (last_event_at, correlation_id) > (:after_at, :after_cid)
ORDER BY last_event_at, correlation_id
LIMIT :n
""")
# Every member of those businesses (transactions_business_idx; members live on any shard) and
# whether it is still active: a business goes only when none is.
_MEMBERS = sa.text("""
SELECT business_id, correlation_id, last_event_at >= :c AS active FROM transactions
WHERE business_id = ANY(CAST(:bids AS text[]))
""")
# What goes with a business: its members' rows by correlation id (routed to their shards; keys,
# distributed by value, by transaction_keys_correlation_idx on every shard), its SLA open items
# by business id.
_EXPIRE_ROWS = (
    sa.text("DELETE FROM transaction_milestones WHERE correlation_id = ANY(CAST(:cids AS text[]))"),
    sa.text("DELETE FROM transaction_keys WHERE correlation_id = ANY(CAST(:cids AS text[]))"),
    sa.text("DELETE FROM sla_deadlines WHERE correlation_id = ANY(CAST(:cids AS text[]))"),
    sa.text("DELETE FROM sla_open_items WHERE correlation_id = ANY(CAST(:bids AS text[]))"),
)
_EXPIRE_TRANSACTIONS = sa.text("DELETE FROM transactions WHERE correlation_id = ANY(CAST(:cids AS text[]))")
# On a cluster keeping business_members (controltower.distribute.MEMBERS) the members come from
# there (the businesses' shards) and their activity from their rows (their shards), instead of
# transactions_business_idx on every shard; the member rows go with the business.
_MEMBER_IDS = sa.text(
    f"SELECT business_id, correlation_id FROM {distribute.MEMBERS} WHERE business_id = ANY(CAST(:bids AS text[]))"  # noqa: S608
)
_ACTIVE = sa.text(
    "SELECT correlation_id FROM transactions WHERE correlation_id = ANY(CAST(:cids AS text[])) AND last_event_at >= :c"
)
_EXPIRE_MEMBERS = sa.text(f"DELETE FROM {distribute.MEMBERS} WHERE business_id = ANY(CAST(:bids AS text[]))")  # noqa: S608

# Deadlines (metrics' sla_deadlines) past the transactions' retention whose transaction is gone
# (removed before deadlines went with it, or raced with it): they would otherwise stay forever.
# (co-located with transactions on Citus: the NOT EXISTS runs on each shard)
_ORPHAN_DEADLINES = "d.due_at < :c AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.correlation_id = d.correlation_id)"


@dataclass
class Plan:
    partitions: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, datetime] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # step (a table or partition) -> its error's first line

    def summary(self) -> str:
        lines = [f"event partitions to drop: {', '.join(self.partitions) or 'none'}"]
        for table, n in self.rows.items():
            lines.append(f"{table}: {n:,} rows older than {self.cutoffs[table]:%Y-%m-%d %H:%M}")
        for step, error in self.failed.items():
            lines.append(f"{step}: FAILED: {error}")
        return "\n".join(lines)


class RetentionError(ControlTowerError):
    """Some retention steps failed (the others ran); `plan.failed` names them."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        failed = "; ".join(f"{step}: {error}" for step, error in plan.failed.items())
        super().__init__(f"retention: {len(plan.failed)} step(s) failed, the others ran: {failed}")


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
    for table, _, setting, _key in _DERIVED:
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
        for table, column, _, _key in _DERIVED:
            if _exists(conn, table):
                result.rows[table] = conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE {column} < :c"),  # noqa: S608 (constants)
                    {"c": result.cutoffs[table]},
                ).scalar_one()
    return result


def apply(engine: Engine, settings: Settings, now: datetime | None = None) -> Plan:
    """Drop old partitions, delete expired rows in batches, create partitions ahead. Each table
    is a step of its own: one that fails is logged and the others still run; then, when any
    failed, RetentionError (its `plan.failed` says which and why)."""
    now = now or datetime.now(UTC)
    todo = plan(engine, settings, now)

    def step(name: str, run: Callable[[], object]) -> None:
        try:
            run()
        except sa.exc.SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            todo.failed[name] = first
            log.error("retention: %s failed, the other tables go on: %s", name, first)

    for name in todo.partitions:
        step(name, lambda name=name: _drop_partition(engine, name))
    step("event_ids", lambda: _batched(
        engine, "event_ids", _batch_delete("event_ids", ("correlation_id", "event_id"), "occurred_at < :c"),
        todo.cutoffs["event_ids"]))
    step("transactions", lambda: _expire_businesses(engine, todo.cutoffs["transactions"]))
    with engine.connect() as conn:
        present = {t for t in ("sla_deadlines", *(d[0] for d in _DERIVED)) if _exists(conn, t)}
    if "sla_deadlines" in present:
        step("sla_deadlines", lambda: _batched(
            engine, "sla_deadlines", _batch_delete("sla_deadlines d", ("d.sla", "d.correlation_id"), _ORPHAN_DEADLINES),
            todo.cutoffs["sla_deadlines"]))
    for table, column, _, key in _DERIVED:
        if table in present:
            step(table, lambda table=table, column=column, key=key: _batched(
                engine, table, _batch_delete(table, key, f"{column} < :c"), todo.cutoffs[table]))
    step("partitions ahead", lambda: migrate.ensure_partitions_ahead(engine, now=now))
    if todo.failed:
        raise RetentionError(todo)
    return todo


def _drop_partition(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        # DETACH first so concurrent readers of `events` never wait on the DROP; a process
        # role (not the owner) goes through the owner's function (controltower.grants)
        grants.drop_event_partition(conn, name)
    log.info("retention: dropped partition %s", name)


def _expire_businesses(engine: Engine, cutoff: datetime) -> int:
    total = 0
    after_at, after_cid = datetime(1970, 1, 1, tzinfo=UTC), ""
    while True:
        for attempt in range(1, 4):
            try:
                with engine.begin() as conn:
                    cand = conn.execute(
                        _EXPIRE_CANDIDATES, {"c": cutoff, "n": BATCH, "after_at": after_at, "after_cid": after_cid}
                    ).all()
                    gone = 0
                    expired = _idle(conn, sorted({r.business_id for r in cand}), cutoff)
                    if expired:
                        # the locks ingest takes before it links into a business (controltower.linking);
                        # once held, the businesses are read again: a late event may have just linked a
                        # new, active member into one, and then that business stays
                        conn.exec_driver_sql(linking.LOCK_SQL, (LOCK_BUSINESS, linking.business_lock_ids(expired))).all()
                        gone = _expire(conn, expired, cutoff)
                break
            except sa.exc.OperationalError as exc:  # a deadlock with a linking batch: the batch again
                if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) or attempt == 3:
                    raise
        total += gone
        if len(cand) < BATCH:
            break
        after_at, after_cid = cand[-1].last_event_at, cand[-1].correlation_id
    if total:
        log.info("retention: transactions: %d rows removed", total)
    return total


def _members(conn: Connection, bids: list[str], cutoff: datetime) -> tuple[list[str], list[str]]:
    """Of the businesses `bids`, those with no active member, and those businesses' members."""
    active: set[str] = set()
    members: dict[str, list[str]] = {}
    if bids and distribute.has_members(conn):
        business = {cid: bid for bid, cid in conn.execute(_MEMBER_IDS, {"bids": bids}).tuples()}
        for cid, bid in business.items():
            members.setdefault(bid, []).append(cid)
        if business:
            active = {business[cid] for (cid,) in conn.execute(_ACTIVE, {"cids": sorted(business), "c": cutoff})}
    elif bids:
        for bid, cid, is_active in conn.execute(_MEMBERS, {"bids": bids, "c": cutoff}):
            members.setdefault(bid, []).append(cid)
            if is_active:
                active.add(bid)
    idle = [b for b in bids if b in members and b not in active]
    return idle, sorted(cid for b in idle for cid in members[b])


def _idle(conn: Connection, bids: list[str], cutoff: datetime) -> list[str]:
    return _members(conn, bids, cutoff)[0]


def _expire(conn: Connection, bids: list[str], cutoff: datetime) -> int:
    """Remove the businesses of `bids` still idle (read again under their locks), whole."""
    idle, cids = _members(conn, bids, cutoff)
    if not cids:
        return 0
    for statement in _EXPIRE_ROWS:
        conn.execute(statement, {"cids": cids, "bids": idle})
    if distribute.has_members(conn):
        conn.execute(_EXPIRE_MEMBERS, {"bids": idle})
    return conn.execute(_EXPIRE_TRANSACTIONS, {"cids": cids}).rowcount


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
