"""Tables written by `metrics/` (SLA definitions, rollups, health); read by app and alerts."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from controltower.schema.base import metadata

# Written by metrics when it loads slas.yaml; the core's transaction view reads it to give
# each transaction its SLA verdicts without importing metrics.
sla_definitions = sa.Table(
    "sla_definitions",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("from_milestone", sa.Text),
    sa.Column("to_milestone", sa.Text),
    sa.Column("default_target_ms", sa.BigInteger),
    sa.Column("targets_ms", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("deadline_attribute", sa.Text),
    sa.Column("objective", sa.Float),
    sa.Column("description", sa.Text),
    sa.Column("definition", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# The current SLA table: one row per SLA, channel and window, recomputed by the scheduler's
# metrics job. `/v1/sla`, the dashboard and the alert evaluator read it.
sla_status = sa.Table(
    "sla_status",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("window", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("count", sa.BigInteger),
    sa.Column("p50_ms", sa.Float),
    sa.Column("p95_ms", sa.Float),
    sa.Column("p99_ms", sa.Float),
    sa.Column("target_ms", sa.BigInteger),
    sa.Column("within_target_ratio", sa.Float),
    sa.Column("open_breaches", sa.Integer),
    sa.Column("oldest_breach_ms", sa.BigInteger),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("health", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("objective", sa.Float),
    sa.Column("error_budget_remaining", sa.Float),
    sa.Column("burn_rate_short", sa.Float),
    sa.Column("burn_rate_long", sa.Float),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.PrimaryKeyConstraint("sla", "channel", "window", name="sla_status_pkey"),
)

# Where is the delay: per channel and hop (marketplace ingestion, middleware, ERP posting,
# warehouse release, carrier confirmation, channel confirmation) volume, backlog and health.
hop_health = sa.Table(
    "hop_health",
    metadata,
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("hop", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),
    sa.Column("backlog", sa.BigInteger, nullable=False),
    sa.Column("p95_ms", sa.Float),
    sa.Column("health", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    # 0008: the SLA judging the hop and its usual cause (alert incidents group by them)
    sa.Column("sla", sa.Text),
    sa.Column("cause", sa.Text),
    sa.PrimaryKeyConstraint("channel", "hop", name="hop_health_pkey"),
)

TS = sa.DateTime(timezone=True)

# Derived by the metrics job from events and transaction_milestones; rebuildable.
metrics_watermarks = sa.Table(
    "metrics_watermarks",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", TS, nullable=False),
)

sla_samples = sa.Table(
    "sla_samples",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("completed_at", TS, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("due_at", TS),
    sa.Column("met", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint("sla", "correlation_id", name="sla_samples_pkey"),
    sa.Index("sla_samples_completed_idx", "sla", "channel", "completed_at"),
)

sla_open_items = sa.Table(
    "sla_open_items",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.Column("calendar", sa.Text),  # the business calendar of due_at (NULL: a target or a promise)
    sa.PrimaryKeyConstraint("sla", "correlation_id", name="sla_open_items_pkey"),
    sa.Index("sla_open_items_due_idx", "sla", "channel", "due_at"),
)

sla_deadlines = sa.Table(
    "sla_deadlines",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("sla", "correlation_id", name="sla_deadlines_pkey"),
)

sla_rollup_minute = sa.Table(
    "sla_rollup_minute",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("minute", TS, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("met", sa.BigInteger, nullable=False),
    sa.Column("hist", JSONB, nullable=False),
    # 0019: time first, serving the time ranges and the exact rows (no separate time index)
    sa.PrimaryKeyConstraint("minute", "sla", "channel", name="sla_rollup_minute_pkey"),
)

sla_rollup_hour = sa.Table(
    "sla_rollup_hour",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("hour", TS, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("met", sa.BigInteger, nullable=False),
    sa.Column("hist", JSONB, nullable=False),
    sa.PrimaryKeyConstraint("sla", "channel", "hour", name="sla_rollup_hour_pkey"),
)

event_rollup_minute = sa.Table(
    "event_rollup_minute",
    metadata,
    sa.Column("minute", TS, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    # 0019: the key's minute range serves every reader (no (channel, minute) index)
    sa.PrimaryKeyConstraint("minute", "channel", "flow", "stage", "status", name="event_rollup_minute_pkey"),
)

freshness_state = sa.Table(
    "freshness_state",
    metadata,
    sa.Column("sla", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("last_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("sla", "channel", "key", name="freshness_state_pkey"),
)

event_rollup_hour = sa.Table(
    "event_rollup_hour",
    metadata,
    sa.Column("hour", TS, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("hour", "channel", "flow", "stage", "status", name="event_rollup_hour_pkey"),
)

# The identity graph's signals (metrics/signals.py), one row per business transaction, named by
# its business_id (readers show its canonical member): orphan candidates, orphans once
# `orphaned_at` is set; channel orders with the distinct ERP documents they carry.
signal_orphans = sa.Table(
    "signal_orphans",
    metadata,
    sa.Column("business_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text),
    sa.Column("system", sa.Text),
    sa.Column("first_event_at", TS, nullable=False),
    sa.Column("orphaned_at", TS),
    sa.Index("signal_orphans_candidate_idx", "first_event_at", postgresql_where=sa.text("orphaned_at IS NULL")),
    sa.Index("signal_orphans_orphaned_idx", "orphaned_at"),
)

signal_orders = sa.Table(
    "signal_orders",
    metadata,
    sa.Column("business_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("erp_documents", ARRAY(sa.Text), nullable=False),
    sa.Index("signal_orders_received_idx", "received_at"),
    sa.Index(
        "signal_orders_duplicate_idx", "received_at", postgresql_where=sa.text("cardinality(erp_documents) >= 2")
    ),
)

# Orders and duplicate orders per UTC hour and channel ("unknown": none known), from signal_orders.
signal_order_hours = sa.Table(
    "signal_order_hours",
    metadata,
    sa.Column("hour", TS, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("orders", sa.BigInteger, nullable=False),
    sa.Column("duplicates", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("hour", "channel", name="signal_order_hours_pkey"),
)
