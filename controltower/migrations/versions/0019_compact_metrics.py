"""Metrics branch: compact storage of the minute rollups (issue #15, one kilobyte per event).

- `sla_rollup_minute`: its key becomes (minute, sla, channel), time first, and the separate
  `sla_rollup_minute_time_idx (minute)` goes. Every reader asks for a time range (the SLA
  table's window edges, the dashboard's last hours, retention) or for exact (sla, channel,
  minute) rows (the rollup's recompute), which the time-first key serves alone.
- `event_rollup_minute`: `event_rollup_minute_channel_idx (channel, minute)` goes. Its
  readers (the SLA table's window edges, the volume alert's same hour on earlier days, the
  dashboard's last hours) each read at most an hour's or a day's minutes, all channels at
  once or one of a handful: the primary key's minute range serves them.

Existing data: the key is rebuilt once (the tables are small). Re-running is harmless.

Revision ID: 0019_compact_metrics
Revises: 0009_business_calendars
"""

from alembic import op

revision = "0019_compact_metrics"
down_revision = "0009_business_calendars"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        DO $$
        BEGIN
            IF (SELECT a.attname FROM pg_index x
                JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
                WHERE x.indexrelid = 'sla_rollup_minute_pkey'::regclass) <> 'minute' THEN
                ALTER TABLE sla_rollup_minute DROP CONSTRAINT sla_rollup_minute_pkey;
                ALTER TABLE sla_rollup_minute ADD CONSTRAINT sla_rollup_minute_pkey PRIMARY KEY (minute, sla, channel);
            END IF;
        END
        $$;
    """)
    op.execute("DROP INDEX IF EXISTS sla_rollup_minute_time_idx")
    op.execute("DROP INDEX IF EXISTS event_rollup_minute_channel_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS event_rollup_minute_channel_idx ON event_rollup_minute (channel, minute)")
    op.execute("CREATE INDEX IF NOT EXISTS sla_rollup_minute_time_idx ON sla_rollup_minute (minute)")
    op.execute("ALTER TABLE sla_rollup_minute DROP CONSTRAINT sla_rollup_minute_pkey")
    op.execute("ALTER TABLE sla_rollup_minute ADD CONSTRAINT sla_rollup_minute_pkey PRIMARY KEY (sla, channel, minute)")
