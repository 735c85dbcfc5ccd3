"""Tables of the broker taps (written by `collectors/`, read by `metrics/` and `app/`)."""

from __future__ import annotations

import sqlalchemy as sa

from controltower.schema.base import metadata

TS = sa.DateTime(timezone=True)

# Messages a tap could not turn into a canonical event, with the reason (0015). The message
# itself went to the broker's quarantine queue/subject (`moved_to`) before it was acknowledged.
tap_quarantine = sa.Table(
    "tap_quarantine",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("tap", sa.Text, nullable=False),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text),
    sa.Column("moved_to", sa.Text),
    sa.Column("preview", sa.Text),  # masked and cut: for recognising the message, not for replay
    sa.PrimaryKeyConstraint("id", name="tap_quarantine_pkey"),
    sa.Index("tap_quarantine_received_idx", "tap", "received_at"),
)

# Depth probes (0015): one row per probe and queue. kind: queue | dlq | consumer.
# broker: rabbitmq | jetstream. depth: messages ready (RabbitMQ) or in the stream for the
# consumer (JetStream num_pending); oldest_age_ms from message timestamps where known;
# pending / ack_pending: JetStream consumer counts.
queue_samples = sa.Table(
    "queue_samples",
    metadata,
    sa.Column("at", TS, nullable=False),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("broker", sa.Text, nullable=False),
    sa.Column("channel", sa.Text),
    sa.Column("hop", sa.Text),
    sa.Column("depth", sa.BigInteger),
    sa.Column("oldest_age_ms", sa.BigInteger),
    sa.Column("pending", sa.BigInteger),
    sa.Column("ack_pending", sa.BigInteger),
    sa.PrimaryKeyConstraint("queue", "at", name="queue_samples_pkey"),
    sa.Index("queue_samples_at_idx", "at"),
)
