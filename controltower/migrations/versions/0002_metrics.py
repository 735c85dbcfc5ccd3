"""Metrics branch: the current SLA table and per-hop health.

Revision ID: 0002_metrics
Revises: 0001_foundation
"""

from alembic import op

revision = "0002_metrics"
down_revision = "0001_foundation"
branch_labels = ("metrics",)
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sla_status (
            sla                     text NOT NULL,
            channel                 text NOT NULL,
            "window"                text NOT NULL,
            kind                    text NOT NULL,
            computed_at             timestamptz NOT NULL,
            count                   bigint,
            p50_ms                  double precision,
            p95_ms                  double precision,
            p99_ms                  double precision,
            target_ms               bigint,
            within_target_ratio     double precision,
            open_breaches           integer,
            oldest_breach_ms        bigint,
            value                   double precision,
            threshold               double precision,
            health                  text NOT NULL,
            reason                  text,
            objective               double precision,
            error_budget_remaining  double precision,
            burn_rate_short         double precision,
            burn_rate_long          double precision,
            details                 jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT sla_status_pkey PRIMARY KEY (sla, channel, "window")
        );
        CREATE TABLE hop_health (
            channel      text NOT NULL,
            hop          text NOT NULL,
            position     integer NOT NULL,
            computed_at  timestamptz NOT NULL,
            volume       bigint NOT NULL,
            backlog      bigint NOT NULL,
            p95_ms       double precision,
            health       text NOT NULL,
            reason       text,
            CONSTRAINT hop_health_pkey PRIMARY KEY (channel, hop)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE hop_health; DROP TABLE sla_status;")
