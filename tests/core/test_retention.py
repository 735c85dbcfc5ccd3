"""Retention: old partitions are dropped whole, expired rows go in batches, recent data stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from collectors.store import EventStore
from controltower import migrate, retention
from metrics import definitions, jobs

NOW = datetime.now(UTC).replace(microsecond=0)


def rec(cid: str, at: datetime, stage: str = "received", **attributes: str) -> dict:
    return {"event_id": f"{cid}-{stage}", "occurred_at": at.isoformat(), "correlation_id": cid,
            "channel": "amazon", "flow": "order", "stage": stage, "attributes": attributes}


def count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_retention_drops_old_partitions_and_expired_rows(engine, settings):
    settings = settings.with_(max_event_age=60 * 86400.0, retention_events=10 * 86400.0,
                              retention_transactions=20 * 86400.0)
    store = EventStore(engine, settings)
    old, middle, recent = NOW - timedelta(days=40), NOW - timedelta(days=15), NOW - timedelta(hours=1)
    store.ingest([rec("OLD", old), rec("MID", middle), rec("NEW", recent)], source="test", now=NOW)
    jobs.refresh(engine, definitions.load(), NOW)
    old_part, mid_part = f"events_{old:%Y%m%d}", f"events_{middle:%Y%m%d}"

    todo = retention.plan(engine, settings, NOW)
    assert old_part in todo.partitions and mid_part in todo.partitions
    assert f"events_{recent:%Y%m%d}" not in todo.partitions
    assert todo.rows["transactions"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 3  # dry run changed nothing

    retention.apply(engine, settings, NOW)
    with engine.connect() as conn:
        parts = migrate.event_partitions(conn)
        tx = [r[0] for r in conn.execute(sa.text("SELECT correlation_id FROM transactions ORDER BY 1"))]
        keys_left = conn.execute(sa.text("SELECT count(*) FROM transaction_milestones WHERE correlation_id = 'OLD'")).scalar()
        events_left = [r[0] for r in conn.execute(sa.text("SELECT correlation_id FROM events ORDER BY 1"))]
    assert old_part not in parts and mid_part not in parts
    assert f"events_{(NOW + timedelta(days=3)):%Y%m%d}" in parts  # still created ahead
    assert tx == ["MID", "NEW"] and keys_left == 0
    assert events_left == ["NEW"]


def test_retention_prunes_event_ids_conflicts_and_deadlines(engine, settings):
    settings = settings.with_(max_event_age=60 * 86400.0, retention_events=10 * 86400.0,
                              retention_transactions=20 * 86400.0)
    store = EventStore(engine, settings)
    old, middle, recent = NOW - timedelta(days=40), NOW - timedelta(days=15), NOW - timedelta(hours=1)
    ship_by = (NOW + timedelta(days=1)).date().isoformat()
    store.ingest([rec("OLD", old, expected_ship_date=ship_by), rec("MID", middle, expected_ship_date=ship_by),
                  rec("NEW", recent, expected_ship_date=ship_by)], source="test", now=NOW)
    # the old id re-sent with other content long ago, the recent one just now
    store.ingest([rec("OLD", old, note="x")], source="test", now=NOW - timedelta(days=39))
    store.ingest([rec("NEW", recent, note="y")], source="test", now=NOW)
    jobs.refresh(engine, definitions.load(), NOW)
    with engine.begin() as conn:  # a deadline left behind by a transaction removed before this rule
        conn.execute(sa.text("INSERT INTO sla_deadlines VALUES ('ship_by_expected_date', 'GONE', :t),"
                             " ('ship_by_expected_date', 'RACING', :now)"), {"t": NOW - timedelta(days=200), "now": NOW})
    assert count(engine, "SELECT count(*) FROM sla_deadlines") == 5
    assert count(engine, "SELECT count(*) FROM event_conflicts") == 2

    todo = retention.plan(engine, settings, NOW)
    assert todo.rows["event_ids"] == 2  # OLD and MID: their days' partitions go
    assert todo.rows["sla_deadlines"] == 2  # OLD's (its transaction expires) and GONE's
    assert todo.rows["event_conflicts"] == 1
    retention.apply(engine, settings, NOW)

    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT correlation_id FROM event_ids ORDER BY 1")).scalars().all()
        deadlines = conn.execute(sa.text("SELECT correlation_id FROM sla_deadlines ORDER BY 1")).scalars().all()
        conflicts = conn.execute(sa.text("SELECT correlation_id FROM event_conflicts")).scalars().all()
    # RACING: no transaction yet but not past retention (its transaction may be committing)
    assert ids == ["NEW"] and deadlines == ["MID", "NEW", "RACING"] and conflicts == ["NEW"]
    # the freed ids are free again only because their events are gone with their partitions
    assert count(engine, "SELECT count(*) FROM events WHERE correlation_id IN ('OLD', 'MID')") == 0


def test_deadline_sweep_is_batched(engine, settings, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 3)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sla_deadlines SELECT 's', 'G' || g, :t FROM generate_series(1, 10) g"),
                     {"t": NOW - timedelta(days=400)})
    retention.apply(engine, settings, NOW)
    assert count(engine, "SELECT count(*) FROM sla_deadlines") == 0


def test_a_business_transaction_expires_whole_and_only_when_every_member_is_idle(engine, settings, monkeypatch):
    settings = settings.with_(max_event_age=60 * 86400.0, retention_transactions=20 * 86400.0)
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches: the walk by time must go on
    store = EventStore(engine, settings)
    old, recent = NOW - timedelta(days=30), NOW - timedelta(hours=1)
    store.ingest([
        # one business: the order is old, the ERP posting (same order number) recent: kept whole
        {**rec("KEEP-A", old), "order_id": "SO-KEEP"},
        {**rec("KEEP-B", recent, "erp_posted"), "order_id": "SO-KEEP"},
        # one business whose members are all old: it goes whole, with its keys
        {**rec("GO-A", old), "order_id": "SO-GO"},
        {**rec("GO-B", old, "erp_posted"), "order_id": "SO-GO"},
        *[rec(f"SOLO-{i}", old) for i in range(5)],
    ], source="test", now=NOW)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO identity_changes VALUES ('x', :old), ('y', :now)"), {"old": old, "now": NOW})
    retention.apply(engine, settings, NOW)
    with engine.connect() as conn:
        tx = [r[0] for r in conn.execute(sa.text("SELECT correlation_id FROM transactions ORDER BY 1"))]
        keys = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT value FROM transaction_keys ORDER BY 1"))]
        journal = [r[0] for r in conn.execute(sa.text("SELECT business_id FROM identity_changes"))]
    assert tx == ["KEEP-A", "KEEP-B"]
    assert keys == ["SO-KEEP"]
    assert "x" not in journal and "y" in journal  # the journal keeps a day


def test_the_identity_journal_is_kept_while_the_metrics_job_has_not_read_it(engine, settings):
    old = NOW - timedelta(days=3)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO identity_changes VALUES ('unread', :t)"), {"t": old})
        # the scheduler was down: the rollups last ran four days ago
        conn.execute(sa.text("INSERT INTO metrics_watermarks VALUES ('rollups', :t)"), {"t": NOW - timedelta(days=4)})
    retention.apply(engine, settings, NOW)
    assert count(engine, "SELECT count(*) FROM identity_changes WHERE business_id = 'unread'") == 1
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE metrics_watermarks SET value = :t"), {"t": NOW})
    retention.apply(engine, settings, NOW)
    assert count(engine, "SELECT count(*) FROM identity_changes WHERE business_id = 'unread'") == 0


def test_one_table_failing_is_reported_and_the_others_still_go(engine, settings, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches each
    old = NOW - timedelta(days=400)
    # (its own transaction: Citus propagates a function only before any multi-shard write in one)
    with engine.begin() as conn:
        # the minute rollups (the first derived table: event ids, transactions and deadlines come
        # before it, the other rollups, the journal and the queue samples after) refuse every
        # delete, as a broken table would
        conn.execute(sa.text(
            "CREATE FUNCTION ct_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'sla_rollup_minute is broken'; END $$"))
        conn.execute(sa.text(
            "CREATE TRIGGER ct_test_refuse BEFORE DELETE ON sla_rollup_minute FOR EACH ROW EXECUTE FUNCTION ct_test_refuse()"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO queue_samples (at, queue, kind, broker) SELECT :t + g * interval '1 second', 'q', 'main', 'rabbit'"
                " FROM generate_series(1, 5) g"), {"t": old})
            conn.execute(sa.text(
                "INSERT INTO sla_rollup_minute SELECT 's', 'amazon', :t + g * interval '1 minute', 1, 1, '{}'"
                " FROM generate_series(1, 5) g"), {"t": old})
            conn.execute(sa.text("INSERT INTO identity_changes SELECT 'B' || g, :t FROM generate_series(1, 5) g"), {"t": old})
            conn.execute(sa.text("INSERT INTO sla_deadlines SELECT 's', 'G' || g, :t FROM generate_series(1, 5) g"), {"t": old})
        with pytest.raises(retention.RetentionError) as raised:
            retention.apply(engine, settings, NOW)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER ct_test_refuse ON sla_rollup_minute"))
            conn.execute(sa.text("DROP FUNCTION ct_test_refuse()"))
    assert list(raised.value.plan.failed) == ["sla_rollup_minute"]
    assert "sla_rollup_minute is broken" in raised.value.plan.failed["sla_rollup_minute"]
    assert "sla_rollup_minute: sla_rollup_minute is broken" in str(raised.value)
    assert count(engine, "SELECT count(*) FROM sla_rollup_minute") == 5  # nothing of the broken table went
    # the tables before and after it were pruned whole, in batches
    assert count(engine, "SELECT count(*) FROM queue_samples") == 0
    assert count(engine, "SELECT count(*) FROM identity_changes") == 0
    assert count(engine, "SELECT count(*) FROM sla_deadlines") == 0
    # and once the table is repaired, the next run finishes the job
    assert retention.apply(engine, settings, NOW).failed == {}
    assert count(engine, "SELECT count(*) FROM sla_rollup_minute") == 0
