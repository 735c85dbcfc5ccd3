"""Metrics branch: each hop's SLA and usual cause in `hop_health`, so alert incidents can group by hop.

Revision ID: 0008_hop_causes
Revises: 0007_identity_signals
"""

from alembic import op

revision = "0008_hop_causes"
down_revision = "0007_identity_signals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE hop_health ADD COLUMN sla text, ADD COLUMN cause text")


def downgrade() -> None:
    op.execute("ALTER TABLE hop_health DROP COLUMN cause, DROP COLUMN sla")
