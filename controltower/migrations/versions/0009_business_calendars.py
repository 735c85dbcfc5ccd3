"""Metrics branch: placeholder reserved for issue 13 (filled in by its change).

Revision ID: 0009_business_calendars
Revises: 0008_hop_causes
"""

revision = "0009_business_calendars"
down_revision = "0008_hop_causes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
