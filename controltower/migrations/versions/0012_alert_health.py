"""Alerting watches itself: the last successful evaluation cycle and the last error per rule.

Revision ID: 0012_alert_health
Revises: 0011_alerts_more
"""

from alembic import op

revision = "0012_alert_health"
down_revision = "0011_alerts_more"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- one row per rule, plus rule = '' for the evaluation cycle as a whole
        CREATE TABLE alert_evaluations (
            rule                  text NOT NULL,
            last_run_at           timestamptz,
            last_success_at       timestamptz,
            last_error            text,
            last_error_at         timestamptz,
            failing_since         timestamptz,
            consecutive_failures  integer NOT NULL DEFAULT 0,
            ignored_amounts_total bigint NOT NULL DEFAULT 0,
            interval_seconds      double precision,
            CONSTRAINT alert_evaluations_pkey PRIMARY KEY (rule)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE alert_evaluations;")
