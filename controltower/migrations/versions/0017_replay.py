"""Core branch: placeholder reserved for issue 14 (filled in by its change).

Revision ID: 0017_replay
Revises: 0016_exceptions
"""

revision = "0017_replay"
down_revision = "0016_exceptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
