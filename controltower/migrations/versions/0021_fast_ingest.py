"""Core branch: the faster write path (placeholder: filled in by issue #15 work).

Revision ID: 0021_fast_ingest
Revises: 0020_distributed
"""

revision = "0021_fast_ingest"
down_revision = "0020_distributed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
