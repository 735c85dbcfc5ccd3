"""Compact storage (migrations 0018, 0019): what replaced the dropped keys and indexes is in
place on existing and new partitions, stored events round-trip, and idempotency still holds
without a key on `events`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from collectors.store import EventStore
from controltower import migrate

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _index_defs(conn: sa.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(sa.text(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE x.indrelid = CAST(:t AS regclass)"), {"t": table})
    return dict(rows.all())


def _has_lz4(conn: sa.Connection) -> bool:
    return bool(conn.execute(sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar())


def test_events_keep_one_index_by_correlation_id_and_a_brin_on_received_at(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS events_20261103"))
    assert migrate.ensure_partitions(engine, [date(2026, 11, 3)]) == 1  # made after the migration
    with engine.connect() as conn:
        for table in ("events", "events_20261103"):
            defs = _index_defs(conn, table)
            assert not any("UNIQUE" in d for d in defs.values()), defs
            assert any("btree (correlation_id)" in d for d in defs.values()), defs
            assert any("brin (received_at)" in d and "pages_per_range='16'" in d for d in defs.values()), defs
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p'")).scalar() == 0


def test_payloads_compress_with_lz4_on_every_partition_and_round_trip(engine, settings):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS events_20261122"))
    with engine.connect() as conn:
        lz4 = _has_lz4(conn)
    # ~6 KB of repetitive text: TOASTed and compressed whatever the method
    note = "carrier said: parcel delayed at hub; " * 160
    events = [{"event_id": f"z{i}", "occurred_at": (T0 + timedelta(minutes=i)).isoformat(), "correlation_id": "Z-1",
               "channel": "ebay", "flow": "order", "stage": "received", "status": "ok",
               "attributes": {"sku": f"SKU-{i}"}, "payload": {"note": note, "i": i}} for i in range(3)]
    result = EventStore(engine, settings).ingest(events, source="api", now=T0 + timedelta(hours=1))
    assert result.accepted == 3
    with engine.connect() as conn:
        methods = conn.execute(sa.text(
            "SELECT DISTINCT c.relname, a.attname, a.attcompression FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname IN ('events', 'events_20261122') AND a.attname IN ('attributes', 'payload')")).all()
        stored = conn.execute(sa.text(
            "SELECT payload ->> 'note', (payload ->> 'i')::int, pg_column_compression(payload), pg_column_size(payload) "
            "FROM events WHERE correlation_id = 'Z-1' ORDER BY event_id")).all()
    assert {m for _, _, m in methods} == ({"l"} if lz4 else {""}), methods
    assert [(n, i) for n, i, _, _ in stored] == [(note, 0), (note, 1), (note, 2)]
    assert {c for _, _, c, _ in stored} == {"lz4" if lz4 else "pglz"}
    assert all(size < len(note) / 4 for *_, size in stored)


def test_an_id_sent_twice_is_stored_once_without_a_key_on_events(engine, settings):
    store = EventStore(engine, settings)
    record = {"event_id": "d1", "occurred_at": T0.isoformat(), "correlation_id": "D-1", "channel": "ebay",
              "flow": "order", "stage": "received", "status": "ok"}
    first = store.ingest([record, record], source="api", now=T0)
    again = store.ingest([record], source="api", now=T0 + timedelta(minutes=1))
    assert (first.accepted, first.duplicates, again.accepted, again.duplicates) == (1, 1, 0, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events WHERE correlation_id = 'D-1'")).scalar() == 1


def test_minute_rollups_are_keyed_time_first_without_extra_indexes(engine):
    with engine.connect() as conn:
        sla = _index_defs(conn, "sla_rollup_minute")
        counts = _index_defs(conn, "event_rollup_minute")
    assert list(sla) == ["sla_rollup_minute_pkey"] and "(minute, sla, channel)" in sla["sla_rollup_minute_pkey"]
    assert list(counts) == ["event_rollup_minute_pkey"]


def test_migration_0018_keeps_existing_partitions_data(engine, settings):
    """Down to 0017 and up again on a database that holds events: the rows stay, the indexes and
    the compression reach the partitions that existed before."""
    from alembic import command

    from controltower.migrate import _config

    events = [{"event_id": f"m{i}", "occurred_at": (T0 - timedelta(days=i)).isoformat(), "correlation_id": f"M-{i}",
               "channel": "pos", "flow": "order", "stage": "received", "status": "ok"} for i in range(3)]
    assert EventStore(engine, settings).ingest(events, source="api", now=T0).accepted == 3
    with engine.connect() as conn:
        command.downgrade(_config(conn), "0017_replay")
        conn.commit()
        assert "events_pkey" in _index_defs(conn, "events")
        command.upgrade(_config(conn), "heads")
        conn.commit()
        assert migrate.current_heads(conn) == migrate.expected_heads()
        n = conn.execute(sa.text("SELECT count(*) FROM events WHERE correlation_id LIKE 'M-%'")).scalar()
        parts = _index_defs(conn, f"events_{(T0 - timedelta(days=2)):%Y%m%d}")
        lz4 = _has_lz4(conn)
        method = conn.execute(sa.text(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = 'payload'"),
            {"t": f"events_{(T0 - timedelta(days=2)):%Y%m%d}"}).scalar()
    assert n == 3
    assert any("btree (correlation_id)" in d for d in parts.values()) and not any("UNIQUE" in d for d in parts.values())
    assert method == ("l" if lz4 else "")
