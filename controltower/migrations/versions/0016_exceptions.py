"""Exception work queue: failure groups, their occurrences and the audit of what people did.

`exception_groups` holds one row per failure signature (channel, milestone, error code and the
normalised message): its class, state (open | snoozed | resolved), counters, first and last
seen, and what people set on it (assignee, tags, snooze, resolution). The scheduler's grouping
job writes it; the dashboard and the API change only the state columns, through
`controltower.exceptionops`, in the same transaction as the `exception_actions` row that audits
the change. `exception_occurrences` is one row per (group, correlation id, source): the failed
event, overdue breach or orphan behind the group, with the milestone(s) its business
transaction still awaits (`awaits`) and when it reached one (`resolved_at`).

Revision ID: 0016_exceptions
Revises: 0015_broker_taps
"""

from alembic import op

revision = "0016_exceptions"
down_revision = "0015_broker_taps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE exception_groups (
            id                bigint GENERATED ALWAYS AS IDENTITY,
            signature         text NOT NULL,
            channel           text NOT NULL,
            milestone         text NOT NULL,
            error_code        text NOT NULL DEFAULT '',
            message           text NOT NULL,
            sample_message    text,
            class             text NOT NULL,
            state             text NOT NULL DEFAULT 'open',
            first_seen_at     timestamptz NOT NULL,
            last_seen_at      timestamptz NOT NULL,
            occurrence_count  bigint NOT NULL DEFAULT 0,
            open_count        bigint NOT NULL DEFAULT 0,
            opened_at         timestamptz NOT NULL,
            assignee          text,
            tags              text[] NOT NULL DEFAULT '{}',
            snoozed_until     timestamptz,
            resolved_at       timestamptz,
            resolved_by       text,
            resolution        text,
            resolution_note   text,
            reopen_count      integer NOT NULL DEFAULT 0,
            updated_at        timestamptz NOT NULL,
            CONSTRAINT exception_groups_pkey PRIMARY KEY (id),
            CONSTRAINT exception_groups_signature_key UNIQUE (signature),
            CONSTRAINT exception_groups_state_check CHECK (state IN ('open', 'snoozed', 'resolved'))
        );
        CREATE INDEX exception_groups_state_idx ON exception_groups (state, last_seen_at);
        CREATE INDEX exception_groups_channel_idx ON exception_groups (channel, state);

        CREATE TABLE exception_occurrences (
            group_id        bigint NOT NULL REFERENCES exception_groups (id) ON DELETE CASCADE,
            correlation_id  text NOT NULL,
            source          text NOT NULL,
            event_id        text,
            at              timestamptz NOT NULL,
            first_at        timestamptz NOT NULL,
            count           integer NOT NULL DEFAULT 1,
            awaits          text[] NOT NULL,
            error_code      text,
            message         text,
            seen_at         timestamptz NOT NULL,
            resolved_at     timestamptz,
            CONSTRAINT exception_occurrences_pkey PRIMARY KEY (group_id, correlation_id, source)
        );
        CREATE INDEX exception_occurrences_correlation_idx ON exception_occurrences (correlation_id);
        CREATE INDEX exception_occurrences_open_idx ON exception_occurrences (group_id) WHERE resolved_at IS NULL;

        CREATE TABLE exception_actions (
            id          bigint GENERATED ALWAYS AS IDENTITY,
            group_id    bigint NOT NULL REFERENCES exception_groups (id) ON DELETE CASCADE,
            at          timestamptz NOT NULL,
            actor       text NOT NULL,
            action      text NOT NULL,
            via         text NOT NULL,
            detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT exception_actions_pkey PRIMARY KEY (id)
        );
        CREATE INDEX exception_actions_group_idx ON exception_actions (group_id, id);
        CREATE INDEX exception_actions_at_idx ON exception_actions (at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE exception_actions; DROP TABLE exception_occurrences; DROP TABLE exception_groups;")
