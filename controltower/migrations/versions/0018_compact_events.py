"""Core branch: compact storage of events and the transaction index (placeholder: filled in by issue #15 work).

Revision ID: 0018_compact_events
Revises: 0017_replay
"""

revision = "0018_compact_events"
down_revision = "0017_replay"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
