"""The migrated database matches the SQLAlchemy mirrors; migrations and partitions behave."""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from controltower import distribute, migrate
from controltower.schema import metadata


def test_no_drift_between_migrations_and_mirrors(engine):
    inspector = sa.inspect(engine)
    db_tables = set(inspector.get_table_names()) - {"alembic_version"}
    db_tables = {t for t in db_tables if not t.startswith("events_")}
    # Citus: ingest's distributed staging tables and the member lists (made by distribute, not in the mirrors)
    db_tables -= {*distribute.STAGING, distribute.MEMBERS}
    assert db_tables == set(metadata.tables)
    for table in metadata.sorted_tables:
        db_cols = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(db_cols) == {c.name for c in table.columns}, table.name
        for col in table.columns:
            db_col = db_cols[col.name]
            assert db_col["nullable"] == col.nullable, f"{table.name}.{col.name} nullable"
            assert type(db_col["type"]).__name__ in _compatible(col.type), (
                f"{table.name}.{col.name}: {db_col['type']!r} vs {col.type!r}"
            )
        pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
        assert pk == [c.name for c in table.primary_key.columns], table.name
        db_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= db_indexes, table.name


def _compatible(col_type: sa.types.TypeEngine) -> set[str]:
    name = type(col_type).__name__
    families = {
        "Text": {"TEXT"}, "String": {"TEXT", "VARCHAR"}, "DateTime": {"TIMESTAMP"},
        "Integer": {"INTEGER"}, "BigInteger": {"BIGINT"}, "Float": {"DOUBLE_PRECISION", "DOUBLE", "FLOAT"},
        "JSONB": {"JSONB"}, "ARRAY": {"ARRAY"}, "Boolean": {"BOOLEAN"}, "Double": {"DOUBLE_PRECISION"},
        "INTERVAL": {"INTERVAL"}, "Interval": {"INTERVAL"}, "Date": {"DATE"}, "SmallInteger": {"SMALLINT"},
        "Numeric": {"NUMERIC"}, "UUID": {"UUID"}, "Uuid": {"UUID"}, "BYTEA": {"BYTEA"},
    }
    return families.get(name, {name.upper()})


def test_migrations_are_current_and_idempotent(engine):
    assert migrate.is_current(engine)
    assert migrate.upgrade(engine) == []


def test_partitions_are_created_ahead_and_on_demand(engine):
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    migrate.ensure_partitions_ahead(engine, now=now)
    with engine.connect() as conn:
        parts = migrate.event_partitions(conn)
    assert {"events_20261121", "events_20261122", "events_20261129"} <= set(parts)
    with engine.begin() as conn:  # an earlier test of this session may have stored an event that day
        conn.execute(sa.text("DROP TABLE IF EXISTS events_20261101"))
    assert migrate.ensure_partitions(engine, [date(2026, 11, 1)]) == 1
    assert migrate.ensure_partitions(engine, [date(2026, 11, 1)]) == 0
    with engine.connect() as conn:
        bound = conn.execute(sa.text(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'events_20261101'")).scalar()
    assert bound == "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-11-02 00:00:00+00')"
