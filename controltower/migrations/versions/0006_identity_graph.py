"""Identity graph: correlation IDs joined into business transactions by shared identity keys.

`transactions.business_id` names each correlation ID's business transaction: the correlation
ID of one of its members (always a member, so a split piece can never collide with another
business). Ingest maintains it in the same transaction as the events (`controltower.linking`).
`identity_hubs` holds identity values seen on more than the fan-out limit of correlation IDs:
they link none of them. `identity_changes` journals every business id that gained or lost
members, so the SLA job re-attributes exactly those (old and new ids) incrementally.
Events may now come without a channel when they carry an identity key: they take their
business transaction's channel, so the channel columns become nullable.

Revision ID: 0006_identity_graph
Revises: 0005_event_identity
"""

from alembic import op

revision = "0006_identity_graph"
down_revision = "0005_event_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE transactions ADD COLUMN business_id text;
        UPDATE transactions SET business_id = correlation_id;
        ALTER TABLE transactions ALTER COLUMN business_id SET NOT NULL;
        CREATE INDEX transactions_business_idx ON transactions (business_id);

        ALTER TABLE events ALTER COLUMN channel DROP NOT NULL;
        ALTER TABLE transactions ALTER COLUMN channel DROP NOT NULL;
        -- which event gave the channel (the earliest that has one): merges stay commutative
        -- when some events of a correlation id carry no channel
        ALTER TABLE transactions ADD COLUMN channel_at timestamptz, ADD COLUMN channel_event_id text;
        UPDATE transactions SET channel_at = first_event_at, channel_event_id = first_event_id;
        ALTER TABLE transaction_milestones ALTER COLUMN channel DROP NOT NULL;

        CREATE TABLE identity_hubs (
            kind           text NOT NULL,
            value          text NOT NULL,
            fanout         bigint NOT NULL,
            first_seen_at  timestamptz NOT NULL,
            last_seen_at   timestamptz NOT NULL,
            CONSTRAINT identity_hubs_pkey PRIMARY KEY (kind, value)
        );

        CREATE TABLE identity_changes (
            business_id  text NOT NULL,
            changed_at   timestamptz NOT NULL
        );
        CREATE INDEX identity_changes_changed_idx ON identity_changes (changed_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE identity_changes;
        DROP TABLE identity_hubs;
        DROP INDEX transactions_business_idx;
        ALTER TABLE transactions DROP COLUMN business_id, DROP COLUMN channel_at, DROP COLUMN channel_event_id;
        """
    )
