"""Metrics branch: hourly event counts, so a day's rate SLAs read 24 rows per series.

Revision ID: 0004_event_rollup_hour
Revises: 0003_rollups
"""

from alembic import op

revision = "0004_event_rollup_hour"
down_revision = "0003_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_rollup_hour (
            hour     timestamptz NOT NULL,
            channel  text NOT NULL,
            flow     text NOT NULL,
            stage    text NOT NULL,
            status   text NOT NULL,
            count    bigint NOT NULL,
            CONSTRAINT event_rollup_hour_pkey PRIMARY KEY (hour, channel, flow, stage, status)
        );
        INSERT INTO event_rollup_hour
        SELECT date_trunc('hour', minute), channel, flow, stage, status, sum(count)
        FROM event_rollup_minute GROUP BY 1, 2, 3, 4, 5;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_rollup_hour")
