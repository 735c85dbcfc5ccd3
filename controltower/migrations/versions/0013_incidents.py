"""Alerts branch: placeholder reserved for issue 13 (filled in by its change).

Revision ID: 0013_incidents
Revises: 0012_alert_health
"""

revision = "0013_incidents"
down_revision = "0012_alert_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
