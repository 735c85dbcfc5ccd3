"""Event identity: idempotency by (correlation_id, event_id), and conflicts made visible.

`events` is partitioned by day on `occurred_at`, so its unique key must include the time and
cannot by itself stop the same event id arriving with another time. `event_ids` holds one row
per (correlation_id, event_id) with the stored event's time and content hash; ingest inserts
there first (`ON CONFLICT DO NOTHING RETURNING`) and writes to `events` only what was new.
`event_conflicts` records an id re-sent with different content (masked content only).
`ct_event_hash` defines "same content" once, for ingest and for this backfill.

Revision ID: 0005_event_identity
Revises: 0001_foundation
"""

from alembic import op

revision = "0005_event_identity"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


# Existing events claim their ids; the earliest received wins where an id was stored twice.
BACKFILL = """
INSERT INTO event_ids (correlation_id, event_id, occurred_at, content_hash)
SELECT DISTINCT ON (correlation_id, event_id)
       correlation_id, event_id, occurred_at,
       ct_event_hash(occurred_at, order_id, channel, flow, stage, status, system,
                     latency_ms, error_code, error_message, attributes, payload,
                     trace_id, span_id, parent_span_id)
FROM events
ORDER BY correlation_id, event_id, received_at, occurred_at
"""


def upgrade() -> None:
    op.execute(
        """
        -- The content of an event, apart from its identity and where/when it was received:
        -- the row's text form is canonical (jsonb keys sorted, the time as epoch seconds).
        CREATE FUNCTION ct_event_hash(
            occurred_at timestamptz, order_id text, channel text, flow text, stage text,
            status text, system text, latency_ms double precision, error_code text,
            error_message text, attributes jsonb, payload jsonb, trace_id text, span_id text,
            parent_span_id text
        ) RETURNS bytea
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT substr(sha256(convert_to(ROW(
                extract(epoch FROM occurred_at), order_id, channel, flow, stage, status, system,
                latency_ms, error_code, error_message, attributes, payload, trace_id, span_id,
                parent_span_id)::text, 'UTF8')), 1, 16)
        $$;

        CREATE TABLE event_ids (
            correlation_id  text NOT NULL,
            event_id        text NOT NULL,
            occurred_at     timestamptz NOT NULL,
            content_hash    bytea NOT NULL,
            CONSTRAINT event_ids_pkey PRIMARY KEY (correlation_id, event_id)
        );
        -- retention deletes by time; rows arrive roughly in time order, so BRIN is enough
        CREATE INDEX event_ids_occurred_brin ON event_ids USING brin (occurred_at);

        CREATE TABLE event_conflicts (
            correlation_id        text NOT NULL,
            event_id              text NOT NULL,
            incoming_hash         bytea NOT NULL,
            stored_hash           bytea NOT NULL,
            stored_occurred_at    timestamptz NOT NULL,
            incoming_occurred_at  timestamptz NOT NULL,
            changed               text[] NOT NULL,
            incoming              jsonb NOT NULL,
            source                text NOT NULL,
            first_seen_at         timestamptz NOT NULL,
            last_seen_at          timestamptz NOT NULL,
            count                 bigint NOT NULL,
            CONSTRAINT event_conflicts_pkey PRIMARY KEY (correlation_id, event_id, incoming_hash)
        );
        CREATE INDEX event_conflicts_last_seen_idx ON event_conflicts (last_seen_at);
        """
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE event_conflicts; DROP TABLE event_ids;"
        " DROP FUNCTION ct_event_hash(timestamptz, text, text, text, text, text, text,"
        " double precision, text, text, jsonb, jsonb, text, text, text);"
    )
