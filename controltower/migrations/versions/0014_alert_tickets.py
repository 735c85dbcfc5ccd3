"""Alerts branch: placeholder reserved for issue 13 (filled in by its change).

Revision ID: 0014_alert_tickets
Revises: 0013_incidents
"""

revision = "0014_alert_tickets"
down_revision = "0013_incidents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
