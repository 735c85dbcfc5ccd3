"""Hostile review of the identity graph on ingest: big batches, concurrent batches sharing a
correlation id, and relink agreeing with ingest on what may link. Real Postgres, no mocks."""

from __future__ import annotations

from collectors.store import EventStore
from tests.collectors.test_linking import NOW, ev, groups


def test_a_full_batch_of_identity_values_fits_the_lock_table(engine, settings):
    """20k identity values in one batch (well under max_batch_events): the advisory locks taken
    for them must not exhaust PostgreSQL's shared lock table (out of shared memory)."""
    store = EventStore(engine, settings)
    records = [ev(f"e{i}", i % 300, f"C-{i}", "order", "received", order_id=f"SO-{i // 2}",
                  erp_document=f"D-{i}") for i in range(10_000)]
    result = store.ingest(records, source="api", now=NOW)
    assert (result.accepted, result.rejected) == (10_000, [])
    got = groups(engine)
    assert len(got) == 5_000 and all(len(g) == 2 for g in got)
