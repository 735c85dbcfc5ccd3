"""Metrics branch: per-transaction SLA samples, open items, minute/hour rollups, freshness.

Revision ID: 0003_rollups
Revises: 0002_metrics

Everything here is derived from `events` and `transaction_milestones` by the metrics job and
can be rebuilt from them (`controltower sla --rebuild`).
"""

from alembic import op

revision = "0003_rollups"
down_revision = "0002_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
        CREATE TABLE metrics_watermarks (
            name   text PRIMARY KEY,
            value  timestamptz NOT NULL
        );
        -- one latency sample per SLA and transaction (B reached); exact, rebuilt idempotently
        CREATE TABLE sla_samples (
            sla           text NOT NULL,
            correlation_id text NOT NULL,
            channel       text NOT NULL,
            started_at    timestamptz NOT NULL,
            completed_at  timestamptz NOT NULL,
            latency_ms    double precision NOT NULL,
            due_at        timestamptz,
            met           boolean NOT NULL,
            CONSTRAINT sla_samples_pkey PRIMARY KEY (sla, correlation_id)
        );
        CREATE INDEX sla_samples_completed_idx ON sla_samples (sla, channel, completed_at);
        -- transactions that reached A but not yet B: open breaches once due_at has passed
        CREATE TABLE sla_open_items (
            sla            text NOT NULL,
            correlation_id text NOT NULL,
            channel        text NOT NULL,
            started_at     timestamptz NOT NULL,
            due_at         timestamptz NOT NULL,
            CONSTRAINT sla_open_items_pkey PRIMARY KEY (sla, correlation_id)
        );
        CREATE INDEX sla_open_items_due_idx ON sla_open_items (sla, channel, due_at);
        -- per-transaction promises carried in events (attributes.expected_ship_date, ...)
        CREATE TABLE sla_deadlines (
            sla            text NOT NULL,
            correlation_id text NOT NULL,
            due_at         timestamptz NOT NULL,
            CONSTRAINT sla_deadlines_pkey PRIMARY KEY (sla, correlation_id)
        );
        -- latency histograms: log buckets of ratio 1.02 (key = bucket index), so a percentile
        -- read from them is within 1 % of the exact value
        CREATE TABLE sla_rollup_minute (
            sla      text NOT NULL,
            channel  text NOT NULL,
            minute   timestamptz NOT NULL,
            count    bigint NOT NULL,
            met      bigint NOT NULL,
            hist     jsonb NOT NULL,
            CONSTRAINT sla_rollup_minute_pkey PRIMARY KEY (sla, channel, minute)
        );
        CREATE INDEX sla_rollup_minute_time_idx ON sla_rollup_minute (minute);
        CREATE TABLE sla_rollup_hour (
            sla      text NOT NULL,
            channel  text NOT NULL,
            hour     timestamptz NOT NULL,
            count    bigint NOT NULL,
            met      bigint NOT NULL,
            hist     jsonb NOT NULL,
            CONSTRAINT sla_rollup_hour_pkey PRIMARY KEY (sla, channel, hour)
        );
        -- events per minute by channel, flow, stage and status (throughput, error ratio,
        -- dead letters, retries, silence); minute of occurred_at
        CREATE TABLE event_rollup_minute (
            minute   timestamptz NOT NULL,
            channel  text NOT NULL,
            flow     text NOT NULL,
            stage    text NOT NULL,
            status   text NOT NULL,
            count    bigint NOT NULL,
            CONSTRAINT event_rollup_minute_pkey PRIMARY KEY (minute, channel, flow, stage, status)
        );
        CREATE INDEX event_rollup_minute_channel_idx ON event_rollup_minute (channel, minute);
        -- last successful event per SLA, channel and key (inventory publishing per location)
        CREATE TABLE freshness_state (
            sla      text NOT NULL,
            channel  text NOT NULL,
            key      text NOT NULL,
            last_at  timestamptz NOT NULL,
            CONSTRAINT freshness_state_pkey PRIMARY KEY (sla, channel, key)
        );
        -- recomputing a minute of event counts reads its events by time
        CREATE INDEX events_occurred_brin ON events USING brin (occurred_at);
        -- a promise carried in an event attribute ("2026-11-25" or an RFC 3339 time); a date
        -- means the end of that day (UTC); anything unreadable is no promise at all
        CREATE FUNCTION ct_deadline(raw text) RETURNS timestamptz
        LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            IF raw ~ '^\d{4}-\d{2}-\d{2}$' THEN
                RETURN ((raw::date + 1)::timestamp AT TIME ZONE 'UTC') - interval '1 microsecond';
            END IF;
            IF raw !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*([Zz]|[+-]\d{2}(:?\d{2})?)$' THEN
                RETURN NULL;  -- no offset: ambiguous, not a promise we can judge
            END IF;
            RETURN raw::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION ct_deadline(text); DROP INDEX events_occurred_brin; DROP TABLE freshness_state, event_rollup_minute, sla_rollup_hour,"
        " sla_rollup_minute, sla_deadlines, sla_open_items, sla_samples, metrics_watermarks;"
    )
