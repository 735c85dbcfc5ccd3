"""Core branch: what distributing on Citus needs (placeholder: filled in by issue #15 work).

Revision ID: 0020_distributed
Revises: 0018_compact_events
"""

revision = "0020_distributed"
down_revision = "0018_compact_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
