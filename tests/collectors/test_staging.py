"""The write path's staging: each batch's rows under their own batch id, first arrivals stored,
the rest checked for conflicts; on Citus the staging tables are distributed and left empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from collectors.store import EventStore
from controltower import distribute

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)


def ev(eid: str, minutes: float, stage: str, *, status: str = "ok", cid: str = "C1", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": eid, "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(), "correlation_id": cid,
        "channel": "walmart", "flow": "order", "stage": stage, "status": status, "system": "erp", **extra,
    }


def test_first_arrivals_are_stored_and_the_rest_checked_for_conflicts(engine, settings):
    store = EventStore(engine, settings)
    first = store.ingest([ev("e1", 0, "received"), ev("e2", 1, "acknowledged")], source="api", now=NOW)
    assert (first.accepted, first.duplicates, first.conflicts) == (2, 0, 0)

    second = store.ingest([
        ev("e1", 0, "received"),                     # stored before, same content
        ev("e2", 1, "erp_posted"),                   # stored before, another stage: a conflict
        ev("e3", 2, "erp_posted"),                   # new
        ev("e3", 2, "erp_posted", status="error"),   # its repeat in the batch, another status: a conflict
        ev("e4", 3, "shipped", cid="C2", order_id="SO-9"),  # new, another transaction
        ev("e4", 3, "shipped", cid="C2", order_id="SO-9"),  # its repeat, same content
    ], source="api", now=NOW)
    assert (second.accepted, second.duplicates, second.conflicts) == (2, 4, 2)

    with engine.connect() as conn:
        conflicts = conn.execute(sa.text(
            "SELECT correlation_id, event_id, changed, count FROM event_conflicts ORDER BY 1, 2")).all()
        stored = conn.execute(sa.text("SELECT correlation_id, event_id, stage, status FROM events ORDER BY 1, 2")).all()
        counts = conn.execute(sa.text("SELECT correlation_id, event_count FROM transactions ORDER BY 1")).all()
        keys = conn.execute(sa.text("SELECT value, kind, correlation_id FROM transaction_keys")).all()
        milestones = conn.execute(sa.text(
            "SELECT correlation_id, milestone FROM transaction_milestones ORDER BY 1, 2")).all()
    assert conflicts == [("C1", "e2", ["stage"], 1), ("C1", "e3", ["status"], 1)]
    # the first arrival of each id wins
    assert stored == [("C1", "e1", "received", "ok"), ("C1", "e2", "acknowledged", "ok"),
                      ("C1", "e3", "erp_posted", "ok"), ("C2", "e4", "shipped", "ok")]
    assert counts == [("C1", 3), ("C2", 1)]
    assert keys == [("SO-9", "order_id", "C2")]
    assert milestones == [("C1", "order.acknowledged"), ("C1", "order.erp_posted"), ("C1", "order.received"),
                          ("C2", "order.shipped")]

    if distribute.is_distributed(engine):
        # the distributed staging tables keep no batch after its commit
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT (SELECT count(*) FROM ct_batch), (SELECT count(*) FROM ct_keys)")).one()
        assert tuple(left) == (0, 0)


def test_on_citus_the_staging_tables_are_distributed_beside_what_they_feed(engine):
    if not distribute.is_distributed(engine):
        pytest.skip("Citus only (CONTROLTOWER_TEST_CITUS_URL)")
    with engine.connect() as conn:
        layout = {
            name: (column, colocation, persistence)
            for name, column, colocation, persistence in conn.execute(sa.text("""
                SELECT p.logicalrelid::regclass::text, column_to_column_name(p.logicalrelid, p.partkey),
                       p.colocationid, c.relpersistence
                FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
                WHERE p.logicalrelid::regclass::text IN ('ct_batch', 'ct_keys', 'transactions', 'transaction_keys')"""))
        }
    anchor = layout["transactions"][1]
    assert layout["ct_batch"] == ("correlation_id", anchor, "u")
    assert layout["ct_keys"] == ("value", anchor, "u")
    assert layout["transaction_keys"][1] == anchor
    # a second run changes nothing
    again = distribute.distribute(engine)
    assert {"ct_batch", "ct_keys"} <= set(again.already)
    assert again.distributed == []
