"""Retention: old partitions are dropped whole, expired rows go in batches, recent data stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from collectors.store import EventStore
from controltower import migrate, retention
from metrics import definitions, jobs

NOW = datetime.now(UTC).replace(microsecond=0)


def rec(cid: str, at: datetime, stage: str = "received") -> dict:
    return {"event_id": f"{cid}-{stage}", "occurred_at": at.isoformat(), "correlation_id": cid,
            "channel": "amazon", "flow": "order", "stage": stage}


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
