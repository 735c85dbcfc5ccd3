"""Tickets opened by ticket receivers: (receiver, dedup key) -> the ticket and whether it is open.

Revision ID: 0014_alert_tickets
Revises: 0013_incidents
"""

from alembic import op

revision = "0014_alert_tickets"
down_revision = "0013_incidents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE alert_tickets (
            receiver    text NOT NULL,
            dedup_key   text NOT NULL,
            ticket_key  text NOT NULL,
            ticket_id   text,
            state       text NOT NULL,
            opened_at   timestamptz NOT NULL,
            closed_at   timestamptz,
            CONSTRAINT alert_tickets_pkey PRIMARY KEY (receiver, dedup_key)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE alert_tickets;")
