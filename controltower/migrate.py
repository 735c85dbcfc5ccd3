"""Applying migrations and keeping event partitions ahead of time.

Owns the Alembic configuration (every room's branch lives in `controltower/migrations`) and
the partition calendar. It does not write any room's data.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
PARTITIONS_AHEAD_DAYS = 7
_MIGRATE_LOCK = 0x43540001  # advisory lock id: one migrating process at a time


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def expected_heads() -> set[str]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return set(ScriptDirectory.from_config(cfg).get_heads())


def current_heads(conn: Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


def is_current(engine: Engine) -> bool:
    with engine.connect() as conn:
        return current_heads(conn) == expected_heads()


def upgrade(engine: Engine, *, now: datetime | None = None) -> list[str]:
    """Apply every pending migration (all branches) and create partitions ahead; return new heads."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATE_LOCK})
        conn.commit()
        try:
            before = current_heads(conn)
            if before != expected_heads():
                command.upgrade(_config(conn), "heads")
                conn.commit()
            after = current_heads(conn)
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATE_LOCK})
            conn.commit()
    ensure_partitions_ahead(engine, now=now)
    return sorted(after - before)


def ensure_partitions(engine: Engine, days: set[date] | list[date]) -> int:
    """Create the daily partitions for `days` that do not exist yet; return how many were made."""
    made = 0
    for day in sorted(set(days)):
        with engine.begin() as conn:
            made += bool(conn.execute(sa.text("SELECT ct_ensure_event_partition(:d)"), {"d": day}).scalar())
    return made


def ensure_partitions_ahead(engine: Engine, *, now: datetime | None = None, ahead: int = PARTITIONS_AHEAD_DAYS) -> int:
    today = (now or datetime.now().astimezone()).date()
    return ensure_partitions(engine, [today + timedelta(days=i) for i in range(-1, ahead + 1)])


def event_partitions(conn: Connection) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
        )
    )
    return [r[0] for r in rows]
