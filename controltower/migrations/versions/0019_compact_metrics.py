"""Metrics branch: compact storage of samples and rollups (placeholder: filled in by issue #15 work).

Revision ID: 0019_compact_metrics
Revises: 0009_business_calendars
"""

revision = "0019_compact_metrics"
down_revision = "0009_business_calendars"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
