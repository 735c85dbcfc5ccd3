"""Core branch: compact storage of events (issue #15, one kilobyte per event).

- `events` loses its primary key (correlation_id, event_id, occurred_at): `event_ids` already
  makes `(correlation_id, event_id)` unique whatever the time (ingest inserts there first and
  stores in `events` only the ids that insert returned), so the key only repeated every id a
  third time. Every reader finds an event by its correlation id (and a time range the partition
  pruning uses): `events_correlation_idx (correlation_id)` serves them, with B-tree
  deduplication storing each correlation id once per leaf for all its events.
- `events_received_at_idx` (B-tree) becomes `events_received_at_brin` (BRIN, 16 pages per
  range): a daily partition is written in arrival order and never updated or deleted from
  (retention drops whole partitions), so `received_at` follows the physical order and the
  metrics job's `received_at > :since` reads only the recent block ranges.
- `attributes` and `payload` are compressed with lz4 once they are TOASTed (a row past ~2 KB),
  on the parent (new daily partitions inherit it) and every existing partition (an ALTER of
  a partitioned table's column compression does not reach its partitions). Servers built
  without lz4 keep the default (pglz).

Existing data: the index builds read every partition once, under the same locks as the
first `migrate` (run it in a quiet moment on a big database). Re-running is harmless.

Revision ID: 0018_compact_events
Revises: 0017_replay
"""

from alembic import op
from sqlalchemy import text

revision = "0018_compact_events"
down_revision = "0017_replay"
branch_labels = None
depends_on = None

COMPRESSED = ("attributes", "payload")


def _partitions() -> list[str]:
    rows = op.get_bind().execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
    ))
    return [r[0] for r in rows]


def _has_lz4() -> bool:
    return bool(op.get_bind().execute(text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )).scalar())


def _set_compression(method: str) -> None:
    for table in ["events", *_partitions()]:
        for column in COMPRESSED:
            op.execute(f'ALTER TABLE "{table}" ALTER COLUMN {column} SET COMPRESSION {method}')


def upgrade() -> None:
    op.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey")
    op.execute("CREATE INDEX IF NOT EXISTS events_correlation_idx ON events (correlation_id)")
    op.execute("DROP INDEX IF EXISTS events_received_at_idx")
    op.execute(
        "CREATE INDEX IF NOT EXISTS events_received_at_brin ON events USING brin (received_at)"
        " WITH (pages_per_range = 16, autosummarize = on)"
    )
    if _has_lz4():
        _set_compression("lz4")


def downgrade() -> None:
    if _has_lz4():
        _set_compression("default")
    op.execute("DROP INDEX IF EXISTS events_received_at_brin")
    op.execute("CREATE INDEX IF NOT EXISTS events_received_at_idx ON events (received_at)")
    op.execute("DROP INDEX IF EXISTS events_correlation_idx")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (correlation_id, event_id, occurred_at)")
