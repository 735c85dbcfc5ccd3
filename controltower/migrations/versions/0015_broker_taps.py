"""Broker taps: quarantined messages and queue health samples.

`tap_quarantine` records every message a tap could not turn into a canonical event (bad JSON, a
mapping that finds no correlation id, a record the store rejects) with the reason. The message
itself is not kept here (it may hold personal data): the tap republishes it to the tap's
quarantine queue or subject on the broker before acknowledging it, so nothing acknowledged is
lost; `preview` is a masked, cut excerpt for people to recognise it by.

`queue_samples` holds the depth probes of configured queues, dead-letter queues and JetStream
consumers: one row per probe and queue; the metrics job turns them into the queue SLA kinds.

Revision ID: 0015_broker_taps
Revises: 0006_identity_graph
"""

from alembic import op

revision = "0015_broker_taps"
down_revision = "0006_identity_graph"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE tap_quarantine (
            id            bigint GENERATED ALWAYS AS IDENTITY,
            tap           text NOT NULL,
            received_at   timestamptz NOT NULL,
            reason        text NOT NULL,
            message_id    text,
            moved_to      text,
            preview       text,
            CONSTRAINT tap_quarantine_pkey PRIMARY KEY (id)
        );
        CREATE INDEX tap_quarantine_received_idx ON tap_quarantine (tap, received_at);

        CREATE TABLE queue_samples (
            at              timestamptz NOT NULL,
            queue           text NOT NULL,
            kind            text NOT NULL,
            broker          text NOT NULL,
            channel         text,
            hop             text,
            depth           bigint,
            oldest_age_ms   bigint,
            pending         bigint,
            ack_pending     bigint,
            CONSTRAINT queue_samples_pkey PRIMARY KEY (queue, at)
        );
        CREATE INDEX queue_samples_at_idx ON queue_samples (at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE queue_samples; DROP TABLE tap_quarantine;")
