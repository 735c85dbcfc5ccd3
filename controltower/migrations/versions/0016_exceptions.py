"""Core branch: placeholder reserved for issue 14 (filled in by its change).

Revision ID: 0016_exceptions
Revises: 0015_broker_taps
"""

revision = "0016_exceptions"
down_revision = "0015_broker_taps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
