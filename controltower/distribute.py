"""Distributing the schema on a Citus cluster (`controltower migrate --distributed`).

Run it on the coordinator after the migrations. It checks that the `citus` extension and at
least one worker are there, then makes each table what `LAYOUT` says, skipping what already is
(so a second run is a no-op and a table added by a later migration is picked up by the next).
Every table of the schema is in `LAYOUT` (a test fails on one that is not), decided one by one:

- **distributed**, one co-location group, by the column that keeps a transaction's rows
  together: every table that grows with traffic. `events` and its identity (`event_ids`,
  `event_conflicts`), `transactions`, `transaction_milestones` and the SLA state hashed by the
  correlation id (`sla_deadlines`) or the business id it names (`sla_samples`,
  `sla_open_items`) live on one shard per transaction, so ingest's merges and the transaction
  view are single-shard. `transaction_keys` is hashed by `value` instead: search and linking
  look a value up (one shard); only the transaction view's key list fans out.
- **reference** (a copy on every node): a small table that a statement joins with a
  distributed one, on any column, so the join runs on the shards: `sla_definitions` (ingest's
  deadline attributes, the SLA job's pairs, the open-breaches page), `identity_hubs` (linking
  reads it beside `transaction_keys`, signals beside the keys), `identity_changes` (the rollup
  job joins the businesses it names with their members and events). The price: every write is
  a commit on every node, which these tables can afford (definitions change on deploy, hubs and
  the journal only when a link changes).
- **local** (a plain table on the coordinator): every other table. Only the scheduler, the CLI,
  the collector's alert routes or the dashboard read and write it, on its own or joined with a
  temp table of the same session: rollups and health (`sla_rollup_*`, `event_rollup_*`,
  `sla_status`, `hop_health`, `freshness_state`, `metrics_watermarks`, `signal_*`), alert
  state, history and outbox (`alert_*`, `incident*`), the exceptions desk, replay requests and
  raw payloads, taps (`tap_quarantine`, `queue_samples`) and `api_keys`. A write there is one
  local statement, not a two-phase commit across every node as on a reference table. A
  reader that joins one with a distributed table still runs on Citus (the local rows it
  filters are sent once as an intermediate result); a correlated subquery from it into a
  distributed table does not, but Citus refuses that from a reference table too: such a
  statement joins instead. A local table may hold foreign keys to another local one
  (incidents, exception groups), which a reference table could not.

Why not everything by the business id: a late link merges two businesses, and their rows
would have to move between shards (see docs/scaling.md). What a business's readers need by
business id is its member list, so that alone is kept by it: `business_members`
(`MEMBERS`), one (business id, correlation id) row per transaction, distributed by the business
id and created only here (one server reads `transactions_business_idx` instead). A merge moves
the smaller side's member rows, a few bytes each; the members' own rows stay where they are.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower.errors import ConfigError

log = logging.getLogger(__name__)

# the co-location anchor: every distributed table shares its shard ranges
ANCHOR = "transactions"

# table -> distribution column, in creation order (the anchor first)
DISTRIBUTED: dict[str, str] = {
    "transactions": "correlation_id",
    "events": "correlation_id",
    "event_ids": "correlation_id",
    "event_conflicts": "correlation_id",
    "transaction_milestones": "correlation_id",
    "transaction_keys": "value",
    "sla_deadlines": "correlation_id",
    "sla_samples": "correlation_id",
    "sla_open_items": "correlation_id",
}

REFERENCE: tuple[str, ...] = (
    "sla_definitions",
    "identity_hubs",
    "identity_changes",
)

# coordinator-local: read and written by the scheduler, the CLI, alert routes and the dashboard alone
LOCAL: tuple[str, ...] = (
    "alembic_version", "api_keys",
    # metrics room: rollups, health and signals, written by the SLA job only
    "sla_rollup_minute", "sla_rollup_hour", "event_rollup_minute", "event_rollup_hour", "freshness_state",
    "metrics_watermarks", "sla_status", "hop_health", "signal_orphans", "signal_orders", "signal_order_hours",
    # alerts room: state, history, outbox, tickets, incidents (foreign keys among themselves)
    "alert_state", "alert_events", "alert_notifications", "alert_silences", "alert_audit", "alert_tickets",
    "alert_evaluations", "scheduler_health", "incidents", "incident_alerts", "incident_events",
    # the exceptions desk (foreign keys among themselves), replay, broker taps
    "exception_groups", "exception_occurrences", "exception_actions", "replay_requests", "raw_payloads",
    "tap_quarantine", "queue_samples",
)

# every table of the schema and what it is on a cluster
LAYOUT: dict[str, str] = {
    **dict.fromkeys(DISTRIBUTED, "distributed"),
    **dict.fromkeys(REFERENCE, "reference"),
    **dict.fromkeys(LOCAL, "local"),
}

# functions the shards call (ingest's hash, the deadline parser, business-day due times)
SHARD_FUNCTIONS: tuple[str, ...] = ("ct_event_hash", "ct_deadline", "ct_business_due")

SHARD_COUNT = 32


@dataclass
class DistributeResult:
    distributed: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    workers: int = 0
    citus_version: str = ""


def citus_version(conn: Connection) -> str | None:
    """The installed citus extension's version, or None on plain PostgreSQL."""
    return conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).scalar()


_ON_CITUS: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def on_citus(conn: Connection) -> bool:
    """True when this connection's database has the citus extension (asked once per engine):
    readers whose best statement differs between one server and a cluster choose by it."""
    known = _ON_CITUS.get(conn.engine)
    if known is None:
        known = _ON_CITUS[conn.engine] = citus_version(conn) is not None
    return known


def is_distributed(engine: Engine) -> bool:
    """True when `events` is a Citus distributed table in this database."""
    with engine.connect() as conn:
        if citus_version(conn) is None:
            return False
        return bool(conn.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass)"
        )).scalar())


def _check(conn: Connection) -> tuple[str, int]:
    version = citus_version(conn)
    if version is None:
        raise ConfigError(
            "migrate --distributed: the citus extension is not installed in this database "
            "(run CREATE EXTENSION citus on the coordinator and every worker; install Citus from its vendor's packages)"
        )
    workers = conn.execute(sa.text("SELECT count(*) FROM citus_get_active_worker_nodes()")).scalar_one()
    if not workers:
        raise ConfigError(
            "migrate --distributed: the coordinator knows no active worker node "
            "(add them with SELECT citus_add_node('host', port))"
        )
    return version, int(workers)


def _kinds(conn: Connection) -> dict[str, str]:
    """What each table already is: 'h' distributed (hash), 'n' reference, 'local' otherwise."""
    rows = conn.execute(sa.text(
        "SELECT logicalrelid::regclass::text AS name, partmethod FROM pg_dist_partition"
    ))
    return {r.name: r.partmethod for r in rows}


def distribute(engine: Engine, *, shard_count: int = SHARD_COUNT) -> DistributeResult:
    """Make the schema distributed as LAYOUT says; returns what changed (re-running changes nothing).
    `shard_count` applies to the co-location group when its anchor is first distributed."""
    result = DistributeResult()
    with engine.connect() as conn:
        result.citus_version, result.workers = _check(conn)
        conn.commit()
        kinds = _kinds(conn)
        for fn in SHARD_FUNCTIONS:
            # propagate the function to the workers (a no-op when it already is)
            signature = conn.execute(sa.text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = :n"
                " AND p.pronamespace = current_schema()::regnamespace"
            ), {"n": fn}).scalars().all()
            for sig in signature:
                conn.execute(sa.text("SELECT create_distributed_function(:sig)"), {"sig": sig})
        conn.commit()
        conn.execute(sa.text("SELECT set_config('citus.shard_count', :n, false)"), {"n": str(shard_count)})
        for table, column in DISTRIBUTED.items():
            if kinds.get(table) == "h":
                result.already.append(table)
                continue
            colocate = "none" if table == ANCHOR else ANCHOR
            conn.execute(
                sa.text("SELECT create_distributed_table(CAST(:t AS regclass), :c, colocate_with => :w)"),
                {"t": table, "c": column, "w": colocate},
            )
            conn.commit()
            result.distributed.append(table)
        for table in REFERENCE:
            if kinds.get(table) == "n":
                result.already.append(table)
                continue
            conn.execute(sa.text("SELECT create_reference_table(CAST(:t AS regclass))"), {"t": table})
            conn.commit()
            result.reference.append(table)
        _create_staging(conn, kinds, result)
        _create_members(conn, kinds, result)
    _HAS_MEMBERS.pop(engine, None)  # asked again by the next reader
    return result


def worker_urls(admin_url: str) -> list[str]:
    """URLs of the primary workers the coordinator at `admin_url` knows (same user and password)."""
    base = sa.engine.make_url(admin_url)
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0 ORDER BY nodeid"
            ))
            return [base.set(host=r.nodename, port=r.nodeport).render_as_string(hide_password=False) for r in rows]
    finally:
        engine.dispose()


def create_database(admin_url: str, name: str) -> list[str]:
    """Create database `name` on every worker the coordinator at `admin_url` knows and on the
    coordinator, each with the citus extension, and add the nodes to it (what a new database on
    a cluster needs before `distribute`); returns the workers' admin URLs (for `drop_database`).
    `name` is an identifier the caller chose (tests, benchmarks), never user input."""
    workers = worker_urls(admin_url)
    for url in workers:
        _autocommit(url, f'CREATE DATABASE "{name}"')
        _autocommit(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), "CREATE EXTENSION citus")
    _autocommit(admin_url, f'CREATE DATABASE "{name}"')
    coordinator = sa.engine.make_url(admin_url)
    own = coordinator.set(database=name).render_as_string(hide_password=False)
    _autocommit(own, "CREATE EXTENSION citus")
    engine = sa.create_engine(own, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                         {"h": coordinator.host or "localhost", "p": coordinator.port or 5432})
            for url in workers:
                w = sa.engine.make_url(url)
                conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": w.host, "p": w.port})
    finally:
        engine.dispose()
    return workers


def drop_database(admin_url: str, workers: list[str], name: str) -> None:
    """Drop database `name` from the coordinator and the workers `create_database` made it on."""
    for url in [admin_url, *workers]:
        _autocommit(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _autocommit(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()

# -- ingest's staging tables ------------------------------------------------------------------
# On plain PostgreSQL the collectors stage each batch in per-connection temporary tables; on
# Citus a temporary table lives on the coordinator only, so every INSERT … SELECT from it would
# be pulled there and re-sent to each shard. Here they are permanent, UNLOGGED (a crash only
# loses batches not yet committed, which their senders retry) and distributed like the tables
# they feed, so each step of a batch runs shard by shard (collectors.statements, which creates
# the temporary ones from the same columns). `batch` tells concurrent batches' rows apart.
# (INCLUDING COMPRESSION: payloads reach the lz4 columns of events compressed with lz4)
STAGING_COLUMNS = "batch bigint NOT NULL, ord integer NOT NULL, fresh boolean NOT NULL, LIKE events INCLUDING COMPRESSION"
KEYS_COLUMNS = "batch bigint NOT NULL, value text, kind text, correlation_id text, first_seen_at timestamptz"
STAGING: dict[str, tuple[str, str]] = {
    # table -> (columns, distribution column)
    "ct_batch": (STAGING_COLUMNS, "correlation_id"),
    "ct_keys": (KEYS_COLUMNS, "value"),
}


def _create_staging(conn: Connection, kinds: dict[str, str], result: DistributeResult) -> None:
    for table, (columns, column) in STAGING.items():
        if kinds.get(table) == "h":
            result.already.append(table)
            continue
        conn.execute(sa.text(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} ({columns})"))
        conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {table}_batch ON {table} (batch)"))
        conn.execute(
            sa.text("SELECT create_distributed_table(CAST(:t AS regclass), :c, colocate_with => :w)"),
            {"t": table, "c": column, "w": ANCHOR},
        )
        conn.commit()
        result.distributed.append(table)


# -- the member list of each business transaction ---------------------------------------------
# `transactions.business_id` says which business a correlation id belongs to; on one server
# `transactions_business_idx` answers the converse. On a cluster that index is on every shard
# (a business's members hash anywhere), so every reader by business id would ask all of them.
# This table answers it from one shard: one row per transaction, distributed by the business id
# (co-located with `transactions`, whose row of the same id names the business). Ingest adds a
# new transaction's row, linking moves a member's row with its `business_id`, retention removes
# a business's rows with it: always in the same database transaction as the `transactions`
# write it mirrors, under the same business locks (collectors.store, controltower.linking,
# controltower.retention; `controltower migrate --distributed` fills it from `transactions`).
MEMBERS = "business_members"
_MEMBERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {MEMBERS} (
    business_id text NOT NULL,
    correlation_id text NOT NULL,
    PRIMARY KEY (business_id, correlation_id)
)"""
MEMBERS_FILL = f"""
INSERT INTO {MEMBERS} (business_id, correlation_id)
SELECT business_id, correlation_id FROM transactions
ON CONFLICT DO NOTHING"""  # noqa: S608 (a module constant)

# the statements that keep it (psycopg placeholders: linking and ingest run them on a raw cursor)
MEMBERS_CHUNK = 5000  # rows per INSERT (two parameters each, under PostgreSQL's 65,535)


def add_members(cur: Any, bids: Sequence[str], cids: Sequence[str]) -> None:
    """Insert member rows (bids[i], cids[i]) with a multi-row VALUES list: Citus routes each row
    to its shard and sends each worker one statement (an INSERT … SELECT FROM unnest would be
    planned through intermediate results: 60 ms instead of a few for a batch of 1,000)."""
    rows = sorted(zip(bids, cids, strict=True))
    for at in range(0, len(rows), MEMBERS_CHUNK):
        chunk = rows[at:at + MEMBERS_CHUNK]
        values = ", ".join(["(%s, %s)"] * len(chunk))
        cur.execute(
            f"INSERT INTO {MEMBERS} (business_id, correlation_id) VALUES {values} ON CONFLICT DO NOTHING",  # noqa: S608
            [v for row in chunk for v in row],
        )


MEMBERS_REMOVE = f"""
DELETE FROM {MEMBERS} m USING unnest(%s::text[], %s::text[]) AS u(b, c)
WHERE m.business_id = u.b AND m.correlation_id = u.c"""  # noqa: S608 (bids, cids)


def has_members(conn: Connection) -> bool:
    """True when this database keeps `business_members` (a distributed one; asked once per engine)."""
    known = _HAS_MEMBERS.get(conn.engine)
    if known is None:
        known = _HAS_MEMBERS[conn.engine] = bool(conn.execute(sa.text(
            "SELECT to_regclass(:t) IS NOT NULL"), {"t": MEMBERS}).scalar())
    return known


_HAS_MEMBERS: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _create_members(conn: Connection, kinds: dict[str, str], result: DistributeResult) -> None:
    if kinds.get(MEMBERS) == "h":
        result.already.append(MEMBERS)
        return
    conn.execute(sa.text(_MEMBERS_DDL))
    conn.execute(
        sa.text("SELECT create_distributed_table(CAST(:t AS regclass), 'business_id', colocate_with => :w)"),
        {"t": MEMBERS, "w": ANCHOR},
    )
    conn.execute(sa.text(MEMBERS_FILL))
    conn.commit()
    result.distributed.append(MEMBERS)
