"""Guarded replay: replay requests (with their approvals and outcomes) and the opt-in raw store.

`replay_requests` holds one row per message to replay (a bulk replay of an exception group is
one row per occurrence, paced by `not_before`): who asked, the guards' verdicts (duplicate
confirmed, approval needed and by whom), and what the executor did. Status moves
requested -> approved -> sent | failed | refused | cancelled; a request that needs no approval
starts as approved. The executor claims due rows with FOR UPDATE SKIP LOCKED, so two executors
never send one request twice.

`raw_payloads` is the opt-in raw store (`raw_store: true` on a tap): the original message,
encrypted with Fernet (key from CONTROLTOWER_RAW_STORE_KEY), kept `raw_store_days`; the events
table only ever holds the masked payload, which cannot be replayed.

Revision ID: 0017_replay
Revises: 0016_exceptions
"""

from alembic import op

revision = "0017_replay"
down_revision = "0016_exceptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE replay_requests (
            id                 bigint GENERATED ALWAYS AS IDENTITY,
            created_at         timestamptz NOT NULL,
            requested_by       text NOT NULL,
            target             text NOT NULL,
            tap                text,
            flow               text NOT NULL,
            channel            text,
            correlation_id     text NOT NULL,
            event_id           text NOT NULL,
            message_id         text,
            group_id           bigint,
            batch              text NOT NULL,
            status             text NOT NULL,
            needs_approval     boolean NOT NULL,
            confirm_duplicate  boolean NOT NULL DEFAULT false,
            approved_by        text,
            approved_at        timestamptz,
            not_before         timestamptz NOT NULL,
            attempts           integer NOT NULL DEFAULT 0,
            sent_at            timestamptz,
            outcome            text,
            cancelled_by       text,
            updated_at         timestamptz NOT NULL,
            CONSTRAINT replay_requests_pkey PRIMARY KEY (id),
            CONSTRAINT replay_requests_status_check CHECK
                (status IN ('requested', 'approved', 'sent', 'failed', 'refused', 'cancelled'))
        );
        CREATE INDEX replay_requests_due_idx ON replay_requests (status, not_before);
        CREATE INDEX replay_requests_correlation_idx ON replay_requests (correlation_id);
        CREATE INDEX replay_requests_batch_idx ON replay_requests (batch);
        CREATE INDEX replay_requests_group_idx ON replay_requests (group_id);

        CREATE TABLE raw_payloads (
            correlation_id  text NOT NULL,
            event_id        text NOT NULL,
            tap             text NOT NULL,
            message_id      text,
            stored_at       timestamptz NOT NULL,
            ciphertext      bytea NOT NULL,
            CONSTRAINT raw_payloads_pkey PRIMARY KEY (correlation_id, event_id)
        );
        CREATE INDEX raw_payloads_stored_idx ON raw_payloads (stored_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE raw_payloads; DROP TABLE replay_requests;")
