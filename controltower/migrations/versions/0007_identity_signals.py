"""Metrics branch: the identity graph's signals, orphan business transactions and channel orders
with their ERP documents (duplicate orders), kept per business transaction by the metrics job.

Both tables are derived (from transactions, milestones, keys and events) and rebuilt when their
watermark is gone: `signal_orphans` holds the *candidates* (an identity key, no origin milestone)
and marks them orphans once the grace period has passed (`orphaned_at`), so a tick never scans
every business transaction; `signal_orders` holds one row per business transaction that reached
`order.received`, with the distinct ERP documents it carries (two or more: a duplicate order),
and `signal_order_hours` their counts per UTC hour and channel, so a long window's duplicate
order rate reads one row per hour.

Revision ID: 0007_identity_signals
Revises: 0004_event_rollup_hour
"""

from alembic import op

revision = "0007_identity_signals"
down_revision = "0004_event_rollup_hour"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE signal_orphans (
            business_id     text PRIMARY KEY,
            channel         text,
            system          text,
            first_event_at  timestamptz NOT NULL,
            orphaned_at     timestamptz
        );
        CREATE INDEX signal_orphans_candidate_idx ON signal_orphans (first_event_at) WHERE orphaned_at IS NULL;
        CREATE INDEX signal_orphans_orphaned_idx ON signal_orphans (orphaned_at);

        CREATE TABLE signal_orders (
            business_id    text PRIMARY KEY,
            channel        text,
            received_at    timestamptz NOT NULL,
            erp_documents  text[] NOT NULL
        );
        CREATE INDEX signal_orders_received_idx ON signal_orders (received_at);
        CREATE INDEX signal_orders_duplicate_idx ON signal_orders (received_at) WHERE cardinality(erp_documents) >= 2;

        CREATE TABLE signal_order_hours (
            hour        timestamptz NOT NULL,
            channel     text NOT NULL,
            orders      bigint NOT NULL,
            duplicates  bigint NOT NULL,
            CONSTRAINT signal_order_hours_pkey PRIMARY KEY (hour, channel)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE signal_order_hours; DROP TABLE signal_orders; DROP TABLE signal_orphans;")
