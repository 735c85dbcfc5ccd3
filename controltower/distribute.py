"""Distributing the schema on a Citus cluster (`controltower migrate --distributed`).

Run it on the coordinator after the migrations. It checks that the `citus` extension and at
least one worker are there, then makes each table what `LAYOUT` says, skipping what already is
(so a second run is a no-op and a table added by a later migration is picked up by the next):

- **distributed**, one co-location group, by the column that keeps a transaction's rows
  together: every table that grows with traffic. `events` and its identity (`event_ids`,
  `event_conflicts`), `transactions`, `transaction_milestones` and the SLA state hashed by the
  correlation id (`sla_deadlines`) or the business id it names (`sla_samples`,
  `sla_open_items`) live on one shard per transaction, so ingest's merges and the transaction
  view are single-shard. `transaction_keys` is hashed by `value` instead: search and linking
  look a value up (one shard); only the transaction view's key list fans out.
- **reference** (a copy on every node): small tables that a statement joins with a distributed
  one (a join with a reference table runs on the shards).
- **local** (everything else: stays on the coordinator): tables only the scheduler, the CLI
  or the dashboard read and write on their own (rollups, alert state and outbox, incidents,
  exceptions desk, replay, taps). A write there is one local statement, not a two-phase
  commit across every node as on a reference table.

Why not everything by the business id: a late link merges two businesses, and their rows
would have to move between shards (see docs/scaling.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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
    return result


# -- ingest's staging tables ------------------------------------------------------------------
# On plain PostgreSQL the collectors stage each batch in per-connection temporary tables; on
# Citus a temporary table lives on the coordinator only, so every INSERT … SELECT from it would
# be pulled there and re-sent to each shard. Here they are permanent, UNLOGGED (a crash only
# loses batches not yet committed, which their senders retry) and distributed like the tables
# they feed, so each step of a batch runs shard by shard (collectors.statements, which creates
# the temporary ones from the same columns). `batch` tells concurrent batches' rows apart.
STAGING_COLUMNS = "batch bigint NOT NULL, ord integer NOT NULL, fresh boolean NOT NULL, LIKE events"
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
