"""Tables written by `collectors/` (events, event identity, transactions, milestones, keys) and
the CLI (api_keys).

`events` is range-partitioned by `occurred_at` into daily partitions (`events_YYYYMMDD`,
created ahead by `migrate` and on demand by ingest through `ct_ensure_event_partition`);
`event_ids` makes `(correlation_id, event_id)` unique whatever the time (so `events` itself has
no key: readers find events by correlation id), and `event_conflicts` shows ids re-sent with
other content. Every unique key includes `correlation_id` so the schema can be distributed by it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB

from controltower.schema.base import metadata

TS = sa.DateTime(timezone=True)

events = sa.Table(
    "events",
    metadata,
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("order_id", sa.Text),
    sa.Column("channel", sa.Text, nullable=True),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("system", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("attributes", JSONB, nullable=False),
    sa.Column("payload", JSONB),
    sa.Column("trace_id", sa.Text),
    sa.Column("span_id", sa.Text),
    sa.Column("parent_span_id", sa.Text),
    sa.Column("source", sa.Text, nullable=False),
    # 0018: no primary key (event_ids is the key); one deduplicated entry per correlation id
    # and leaf, and a BRIN on received_at (each daily partition is written in arrival order)
    sa.Index("events_correlation_idx", "correlation_id"),
    sa.Index(
        "events_received_at_brin", "received_at", postgresql_using="brin",
        postgresql_with={"pages_per_range": 16, "autosummarize": "on"},
    ),
    postgresql_partition_by="RANGE (occurred_at)",
)

# One row per stored event id, whatever its time: ingest inserts here first and stores in
# `events` only the ids this insert returned (idempotency by (correlation_id, event_id)).
event_ids = sa.Table(
    "event_ids",
    metadata,
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("content_hash", BYTEA, nullable=False),
    sa.PrimaryKeyConstraint("correlation_id", "event_id", name="event_ids_pkey"),
    sa.Index("event_ids_occurred_brin", "occurred_at", postgresql_using="brin"),
)

# An event id re-sent with different content (not stored): one row per distinct incoming content,
# with the names of the fields that differ from the stored event and their incoming (masked) values.
event_conflicts = sa.Table(
    "event_conflicts",
    metadata,
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("incoming_hash", BYTEA, nullable=False),
    sa.Column("stored_hash", BYTEA, nullable=False),
    sa.Column("stored_occurred_at", TS, nullable=False),
    sa.Column("incoming_occurred_at", TS, nullable=False),
    sa.Column("changed", ARRAY(sa.Text), nullable=False),
    sa.Column("incoming", JSONB, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("first_seen_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("correlation_id", "event_id", "incoming_hash", name="event_conflicts_pkey"),
    sa.Index("event_conflicts_last_seen_idx", "last_seen_at"),
)

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("correlation_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, nullable=True),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("order_id", sa.Text),
    sa.Column("first_event_at", TS, nullable=False),
    sa.Column("first_event_id", sa.Text, nullable=False),
    sa.Column("last_event_at", TS, nullable=False),
    sa.Column("last_event_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("last_milestone", sa.Text, nullable=False),
    sa.Column("last_system", sa.Text),
    sa.Column("event_count", sa.Integer, nullable=False),
    sa.Column("error_count", sa.Integer, nullable=False),
    sa.Column("retry_count", sa.Integer, nullable=False),
    sa.Column("dead_letter_count", sa.Integer, nullable=False),
    sa.Column("last_error_at", TS),
    sa.Column("last_error_code", sa.Text),
    sa.Column("last_error_message", sa.Text),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("business_id", sa.Text, nullable=False),
    sa.Column("channel_at", TS),
    sa.Column("channel_event_id", sa.Text),
    sa.Index("transactions_channel_first_idx", "channel", "first_event_at"),
    sa.Index("transactions_last_event_idx", "last_event_at"),
    sa.Index("transactions_updated_idx", "updated_at"),
    sa.Index("transactions_order_idx", "order_id"),
    sa.Index("transactions_business_idx", "business_id"),
)

# The earliest successful time each milestone (`flow.stage`) was reached, one row per
# transaction and milestone: SLA latency and open-breach queries read it through its indexes.
transaction_milestones = sa.Table(
    "transaction_milestones",
    metadata,
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("milestone", sa.Text, nullable=False),
    sa.Column("reached_at", TS, nullable=False),
    sa.Column("channel", sa.Text, nullable=True),
    sa.Column("recorded_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("correlation_id", "milestone", name="transaction_milestones_pkey"),
    sa.Index("transaction_milestones_lookup_idx", "milestone", "channel", "reached_at"),
    sa.Index("transaction_milestones_recorded_idx", "recorded_at"),
)

# Every business key seen for a transaction (order id, marketplace order number, SKU,
# tracking number, ERP document, settlement id, ...): search resolves a key here first.
transaction_keys = sa.Table(
    "transaction_keys",
    metadata,
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("first_seen_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("value", "kind", "correlation_id", name="transaction_keys_pkey"),
    sa.Index("transaction_keys_correlation_idx", "correlation_id"),
)

# One row per identity value seen on more correlation IDs than the fan-out limit: links none.
identity_hubs = sa.Table(
    "identity_hubs",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("fanout", sa.BigInteger, nullable=False),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
)

# Journal of business ids that gained or lost members (old and new id of every re-keyed member).
identity_changes = sa.Table(
    "identity_changes",
    metadata,
    sa.Column("business_id", sa.Text, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("identity_changes_changed_idx", "changed_at"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("prefix", sa.Text, nullable=False, unique=True),
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("scopes", ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", TS),
    sa.Column("revoked_at", TS),
    sa.Column("last_used_at", TS),
)
