"""Database roles by process: what the collector, the scheduler and the dashboard may do, and no more.

Owns the privilege policy (`POLICY`: per process, which tables it reads and which it writes,
down to columns) and applying it to a PostgreSQL role (`apply`), which is what
`controltower grant PROCESS ROLE` runs as the schema's owner after `controltower migrate`.
Applying first revokes everything the role held on the schema, so the result is exactly the
policy, and running it again (every deploy) is harmless.

Two things need more than table privileges, and go through owner-defined functions instead of
ownership: creating an event partition on demand (the collector, for an event older or newer
than the partitions made ahead) and dropping an expired one (the scheduler's retention). Both
are `SECURITY DEFINER` functions whose owner is the schema's owner, with a pinned
`search_path`, executable only by the roles granted here. No process role gets CREATE on the
schema, ownership of a table, or membership in the owner's role.

It does not create tables or decide retention; it must not be called by a process at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from controltower.distribute import MEMBERS, STAGING
from controltower.errors import ControlTowerError

PROCESSES = ("collector", "scheduler", "dashboard")
# Hash-only key material: the collector checks keys; nobody else needs to read them.
SECRET_TABLES = frozenset({"api_keys"})
ACK_COLUMNS = ("acknowledged_by", "acknowledged_at")
# what a person changes on a replay request: approve, cancel
REPLAY_DECISION_COLUMNS = ("status", "approved_by", "approved_at", "cancelled_by", "outcome", "updated_at")

# Every table the schema has or is about to have, so the policy is total: a test fails when a
# migration adds a table no line below mentions. Tables that do not exist (yet) are skipped.
METRICS_TABLES = (
    "sla_samples", "sla_open_items", "sla_deadlines", "sla_rollup_minute", "sla_rollup_hour",
    "event_rollup_minute", "event_rollup_hour", "freshness_state", "metrics_watermarks",
    "sla_status", "hop_health", "sla_definitions", "signal_orphans", "signal_orders",
    "signal_order_hours",
)
INGEST_TABLES = (
    "events", "transactions", "transaction_milestones", "transaction_keys", "event_ids", "event_conflicts",
    "identity_hubs", "identity_changes",
)
ALERT_TABLES = ("alert_state", "alert_events", "alert_notifications", "alert_silences", "alert_audit", "alert_tickets")
INCIDENT_TABLES = ("incidents", "incident_alerts", "incident_events")
ALERT_HEALTH_TABLES = ("alert_evaluations", "scheduler_health")
BROKER_TABLES = ("tap_quarantine", "queue_samples")  # broker taps and queue probes (collectors)
REPLAY_TABLES = ("replay_requests", "raw_payloads")  # guarded replay (controltower.replayops, collectors.replay)
EXCEPTION_TABLES = ("exception_groups", "exception_occurrences", "exception_actions")  # metrics grouping job
# What people change on an exception group (controltower.exceptionops), besides its audit row.
EXCEPTION_STATE_COLUMNS = ("state", "assignee", "tags", "snoozed_until", "resolved_at", "resolved_by", "resolution",
                           "resolution_note", "reopen_count", "opened_at", "updated_at")
KNOWN_TABLES = frozenset(
    {*METRICS_TABLES, *INGEST_TABLES, *ALERT_TABLES, *INCIDENT_TABLES, *ALERT_HEALTH_TABLES, *BROKER_TABLES,
     *EXCEPTION_TABLES, *REPLAY_TABLES, *SECRET_TABLES, *STAGING, MEMBERS, "alembic_version"}
)

ENSURE_PARTITION = "ct_ensure_event_partition(date)"
DROP_PARTITION = "ct_drop_event_partition(date)"


@dataclass(frozen=True)
class Write:
    """Privileges on one table; `columns` narrows UPDATE to those columns."""

    table: str
    privileges: tuple[str, ...]
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    reads_secrets: bool
    writes: tuple[Write, ...]
    functions: tuple[str, ...] = ()
    temporary: bool = False  # temp tables (COPY staging, rollup scratch)
    summary: str = ""
    refuses: tuple[str, ...] = field(default=())  # documented examples, checked by the tests


# What alertops.acknowledge and acknowledge_incident need (row lock via column UPDATE, event
# row, audit row; the incident's state and its timeline).
_ACKNOWLEDGE = (
    Write("alert_state", ("UPDATE",), ACK_COLUMNS),
    Write("alert_events", ("INSERT",)),
    Write("alert_audit", ("INSERT",)),
    Write("incidents", ("UPDATE",), ("state", *ACK_COLUMNS, "updated_at")),
    Write("incident_events", ("INSERT",)),
)
# What exceptionops' actions need (assign, comment, tag, snooze, resolve, reopen): as acknowledging.
_EXCEPTION_ACTIONS = (
    Write("exception_groups", ("UPDATE",), EXCEPTION_STATE_COLUMNS),
    Write("exception_actions", ("INSERT",)),
)

POLICY: dict[str, Policy] = {
    "collector": Policy(
        reads_secrets=True,
        writes=(
            Write("events", ("INSERT",)),
            *(Write(t, ("INSERT", "UPDATE")) for t in INGEST_TABLES if t != "events"),
            *_ACKNOWLEDGE,  # POST /v1/alerts/{fingerprint}/ack, POST /v1/incidents/{id}/ack
            *(Write(t, ("INSERT",)) for t in BROKER_TABLES),  # `controltower tap`: quarantine, queue probes
            # replay: requests (CLI), the executor's outcomes, the opt-in raw store and its retention
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in REPLAY_TABLES),
            *_EXCEPTION_ACTIONS,  # POST /v1/exceptions/{id}/{action}
            # on a Citus cluster ingest stages batches in distributed tables (they exist only there)
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in STAGING),
            Write(MEMBERS, ("INSERT", "DELETE")),  # a cluster's member lists: new transactions, links
        ),
        functions=(ENSURE_PARTITION,),
        temporary=True,
        summary="ingest (events, transactions, milestones, keys), on-demand partitions, alert acknowledge",
    ),
    "scheduler": Policy(
        reads_secrets=False,
        writes=(
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in METRICS_TABLES),
            Write("alert_state", ("INSERT", "UPDATE", "DELETE")),
            Write("alert_events", ("INSERT", "DELETE")),
            Write("alert_notifications", ("INSERT", "UPDATE", "DELETE")),
            Write("alert_audit", ("DELETE",)),
            Write("alert_tickets", ("INSERT", "UPDATE", "DELETE")),  # ticket receivers (alerts.ticketing)
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in INCIDENT_TABLES),
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in ALERT_HEALTH_TABLES),
            # retention: expired transactions and their rows, batched
            *(Write(t, ("DELETE",)) for t in INGEST_TABLES if t not in ("events", "event_conflicts")),
            Write("event_conflicts", ("DELETE",)),
            Write(MEMBERS, ("DELETE",)),  # a cluster's member lists (exists only there)
            *(Write(t, ("INSERT", "DELETE")) for t in BROKER_TABLES),  # taps run by the scheduler; retention
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in REPLAY_TABLES),  # replay executor, raw store
            *(Write(t, ("INSERT", "UPDATE", "DELETE")) for t in EXCEPTION_TABLES),  # grouping, auto-resolve
        ),
        functions=(ENSURE_PARTITION, DROP_PARTITION),
        temporary=True,
        summary="metrics rollups and SLA table, alert evaluation and delivery, retention",
    ),
    "dashboard": Policy(
        reads_secrets=False,
        writes=(*_ACKNOWLEDGE, Write("alert_silences", ("INSERT",)), *_EXCEPTION_ACTIONS,
                # replay requests, approvals and cancels (controltower.replayops)
                Write("replay_requests", ("INSERT", "UPDATE"), REPLAY_DECISION_COLUMNS)),
        summary="reads every table but the key hashes; acknowledges alerts and creates silences",
    ),
}

# The scheduler's retention drops whole expired day partitions: DETACH needs ownership of
# `events`, so it goes through this owner-defined function, which drops nothing but a
# partition of `events` named for the day it is given, and never one of the last two days
# (live ingest), whatever the caller asks.
_DROP_FUNCTION = """
CREATE OR REPLACE FUNCTION ct_drop_event_partition(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    part text := 'events_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF day >= current_date - 1 THEN
        RAISE EXCEPTION 'ct_drop_event_partition: refusing to drop %, not older than yesterday', part;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname = part
    ) THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER TABLE events DETACH PARTITION %I', part);
    EXECUTE format('DROP TABLE %I', part);
    RETURN true;
END;
$$
"""


class GrantError(ControlTowerError):
    """The role cannot be given a process's privileges (missing, superuser, or the owner itself)."""


def _existing(conn: Connection, schema: str) -> set[str]:
    rows = conn.execute(
        sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
    )
    return {r[0] for r in rows} - _partitions(conn)


def _partitions(conn: Connection) -> set[str]:
    rows = conn.execute(sa.text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"))
    return {r[0] for r in rows}


def _sequences_of(conn: Connection, table: str, schema: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
            "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND t.relname = :t AND n.nspname = :s"
        ),
        {"t": table, "s": schema},
    )
    return [r[0] for r in rows]


def _check_role(conn: Connection, role: str) -> None:
    row = conn.execute(
        sa.text("SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if row is None:
        raise GrantError(
            f"role {role!r} does not exist (CREATE ROLE {role} LOGIN PASSWORD '…' first, "
            "or pass --password-env VAR to create it)"
        )
    if row[0]:
        raise GrantError(f"role {role!r} is a superuser: privileges would not limit it; use a plain login role")
    if row[1]:
        raise GrantError(f"role {role!r} is the role running this command (the schema's owner); use a separate role")


def ensure_login(conn: Connection, role: str, password: str) -> bool:
    """Create `role` as a plain login role with `password`, or reset the password of an existing
    role this command may limit (never a superuser's or the owner's); True when created."""
    if not password:
        raise GrantError(f"role {role!r}: the password is empty")
    raw = conn.connection.driver_connection
    exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists:
        _check_role(conn, role)
        statement = sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}")
    else:
        statement = sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}"
        )
    raw.execute(statement.format(sql.Identifier(role), sql.Literal(password)))  # type: ignore[union-attr]
    return not exists


def statements(conn: Connection, process: str, role: str) -> list[sql.Composed]:
    """The REVOKE/GRANT statements that give `role` exactly `process`'s privileges (tables that exist)."""
    if process not in POLICY:
        raise GrantError(f"process {process!r}: expected one of {', '.join(PROCESSES)}")
    policy = POLICY[process]
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    tables = _existing(conn, schema)
    who, ns, db = sql.Identifier(role), sql.Identifier(schema), sql.Identifier(database)
    out = [
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(ns, who),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(ns, who),
        sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM {}").format(ns, who),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} REVOKE ALL ON TABLES FROM {}").format(ns, who),
        sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(ns, who),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ns, who),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, who),
    ]
    if policy.temporary:
        out.append(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, who))
    readable = sorted(t for t in tables if policy.reads_secrets or t not in SECRET_TABLES)
    if readable:
        out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(map(sql.Identifier, readable)), who))
    for write in policy.writes:
        if write.table not in tables:
            continue
        for privilege in write.privileges:
            columns = sql.SQL("")
            if write.columns and privilege == "UPDATE":
                columns = sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, write.columns)))
            out.append(sql.SQL("GRANT {}{} ON {} TO {}").format(sql.SQL(privilege), columns, sql.Identifier(write.table), who))
        if "INSERT" in write.privileges:
            for sequence in _sequences_of(conn, write.table, schema):
                out.append(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(sequence), who))
    for function in policy.functions:
        name = function.split("(")[0]
        out.append(sql.SQL("GRANT EXECUTE ON FUNCTION {}(date) TO {}").format(sql.Identifier(name), who))
    return out


def install_functions(conn: Connection) -> None:
    """Make the partition functions run as their owner, callable only by roles granted them."""
    schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    raw = conn.connection.driver_connection
    ns = sql.Identifier(schema)
    raw.execute(sql.SQL(_DROP_FUNCTION).format(schema=ns))  # type: ignore[union-attr]
    raw.execute(  # type: ignore[union-attr]
        sql.SQL("ALTER FUNCTION ct_ensure_event_partition(date) SECURITY DEFINER SET search_path = {}, pg_temp").format(ns)
    )
    for function in ("ct_ensure_event_partition", "ct_drop_event_partition"):
        raw.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(date) FROM PUBLIC").format(sql.Identifier(function)))  # type: ignore[union-attr]


def apply(conn: Connection, process: str, role: str) -> list[str]:
    """Give `role` exactly `process`'s privileges on this database; returns the statements run."""
    _check_role(conn, role)
    install_functions(conn)
    raw = conn.connection.driver_connection
    done = []
    for statement in statements(conn, process, role):
        raw.execute(statement)  # type: ignore[union-attr]
        done.append(statement.as_string(raw))
    return done


def drop_event_partition(conn: Connection, day_name: str) -> None:
    """Detach and drop one day partition of `events` (retention), as owner or through the function."""
    has_function = conn.execute(sa.text("SELECT to_regprocedure(:f) IS NOT NULL"), {"f": DROP_PARTITION}).scalar_one()
    owner = conn.execute(
        sa.text("SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = 'events'::regclass")
    ).scalar_one()
    if has_function and not owner:
        day = day_name.removeprefix("events_")
        conn.execute(sa.text("SELECT ct_drop_event_partition(to_date(:d, 'YYYYMMDD'))"), {"d": day})
        return
    quoted = '"' + day_name.replace('"', '""') + '"'
    conn.execute(sa.text(f"ALTER TABLE events DETACH PARTITION {quoted}"))
    conn.execute(sa.text(f"DROP TABLE {quoted}"))
