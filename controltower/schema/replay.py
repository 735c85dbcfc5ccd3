"""Tables of guarded replay (0017): requests written by the dashboard and the CLI through
`controltower.replayops`, updated by the collectors' executor; the opt-in raw store."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BYTEA

from controltower.schema.base import metadata

TS = sa.DateTime(timezone=True)

# One row per message to replay. target: dlq (RabbitMQ dead-letter queue back to its source) |
# http (the stored raw payload POSTed to the flow's endpoint). batch: the id shared by a bulk
# request (cancel stops the rest). event_id: the occurrence replayed (the lineage's replay_of).
replay_requests = sa.Table(
    "replay_requests",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("tap", sa.Text),
    sa.Column("flow", sa.Text, nullable=False),
    sa.Column("channel", sa.Text),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text),
    sa.Column("group_id", sa.BigInteger),
    sa.Column("batch", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("needs_approval", sa.Boolean, nullable=False),
    sa.Column("confirm_duplicate", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("approved_by", sa.Text),
    sa.Column("approved_at", TS),
    sa.Column("not_before", TS, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("sent_at", TS),
    sa.Column("outcome", sa.Text),
    sa.Column("cancelled_by", sa.Text),
    sa.Column("updated_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("id", name="replay_requests_pkey"),
    sa.CheckConstraint(
        "status IN ('requested', 'approved', 'sent', 'failed', 'refused', 'cancelled')",
        name="replay_requests_status_check",
    ),
    sa.Index("replay_requests_due_idx", "status", "not_before"),
    sa.Index("replay_requests_correlation_idx", "correlation_id"),
    sa.Index("replay_requests_batch_idx", "batch"),
    sa.Index("replay_requests_group_idx", "group_id"),
)

# The opt-in raw store: the original message (body and headers), Fernet-encrypted.
raw_payloads = sa.Table(
    "raw_payloads",
    metadata,
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("tap", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text),
    sa.Column("stored_at", TS, nullable=False),
    sa.Column("ciphertext", BYTEA, nullable=False),
    sa.PrimaryKeyConstraint("correlation_id", "event_id", name="raw_payloads_pkey"),
    sa.Index("raw_payloads_stored_idx", "stored_at"),
)
