"""Hostile review of the identity graph on ingest: big batches, concurrent batches sharing a
correlation id, and relink agreeing with ingest on what may link. Real Postgres, no mocks."""

from __future__ import annotations

import threading
import time

import psycopg
import sqlalchemy as sa

from collectors.store import EventStore
from controltower import linking
from tests.collectors.test_linking import NOW, ev, groups, model


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


def _waiting_on_lock(engine: sa.Engine, pid_of: set[int]) -> bool:
    with engine.connect() as conn:
        waiting = set(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )).scalars())
    return bool(waiting - pid_of)


def test_one_new_correlation_id_in_two_concurrent_batches_joins_its_business(engine, settings, database_url):
    """Batch A stores new correlation id C (no link); batch B, concurrently, brings C a key it
    shares with a business of two. B decided C joins that business while C had no row yet; when
    B's upsert then finds A's row, C must still end up in the business (the model's partition)."""
    store = EventStore(engine, settings)
    d = [ev("d1", 0, "D-1", "order", "received", order_id="SO-1"),
         ev("d2", 1, "D-2", "order", "erp_posted", order_id="SO-1")]
    store.ingest(d, source="api", now=NOW)
    a = ev("a1", 5, "C", "order", "received", erp_document="DOC-ALONE")
    b = ev("b1", 6, "C", "order", "erp_posted", status="error", order_id="SO-1")
    # hold A just before its commit: its milestone row (C, order.received) is taken by us
    blocker = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=False)
    blocker.execute("INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)"
                    " VALUES ('C', 'order.received', now(), 'amazon', now())")
    blocker_pid = blocker.info.backend_pid
    errors: list[BaseException] = []

    def send(record):
        try:
            EventStore(engine, settings).ingest([record], source="api", now=NOW)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    ta = threading.Thread(target=send, args=(a,))
    ta.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_lock(engine, {blocker_pid}) and time.monotonic() < deadline:
        time.sleep(0.02)
    tb = threading.Thread(target=send, args=(b,))
    tb.start()
    time.sleep(0.5)  # B links while C has no committed row, then waits on A's row
    blocker.rollback()
    blocker.close()
    ta.join(20)
    tb.join(20)
    assert not errors
    assert groups(engine) == model(d + [a, b], limit=settings.link_fanout_limit) == {frozenset({"D-1", "D-2", "C"})}


def _relink(engine, settings):
    def connect():
        return engine.begin()

    class _Conn:
        def __init__(self):
            self.ctx = engine.begin()

        def __enter__(self):
            return self.ctx.__enter__().connection.driver_connection

        def __exit__(self, *exc):
            return self.ctx.__exit__(*exc)

    return linking.relink(_Conn, kinds=settings.linking_keys, limit=settings.link_fanout_limit, now=NOW)


def test_relink_refuses_what_ingest_refused(engine, settings):
    """Values ingest refuses (placeholders padded with tabs or no-break spaces, floats) must not
    link when relink (or a split) recomputes the graph from the stored keys."""
    store = EventStore(engine, settings)
    records = [
        ev("t1", 0, "TAB-1", "order", "received", order_id="\tn/a"),
        ev("t2", 1, "TAB-2", "order", "received", order_id="\tn/a"),
        ev("n1", 2, "NBSP-1", "order", "received", erp_document="unknown\u00a0"),
        ev("n2", 3, "NBSP-2", "order", "received", erp_document="unknown\u00a0"),
        # two 22-digit tracking numbers sent as JSON numbers: floats, the same after rounding
        ev("f1", 4, "F-1", "order", "received", tracking_number=9400111899223397791234.0),
        ev("f2", 5, "F-2", "order", "received", tracking_number=9400111899223397791235.0),
    ]
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted == 6
    assert result.link.refused == {"placeholder": 4, "malformed": 2}
    expected = model(records, limit=settings.link_fanout_limit)
    assert all(len(g) == 1 for g in expected)
    assert groups(engine) == expected
    _relink(engine, settings)
    assert groups(engine) == expected


def test_a_split_refuses_what_ingest_refused(engine, settings):
    """The split path (a value turning into a hub) recomputes a region from stored keys: the
    refused values there must not link either."""
    settings = settings.with_(link_fanout_limit=2)
    store = EventStore(engine, settings)
    records = [
        ev("a", 0, "A", "order", "received", order_id="SO-H", erp_document="\tnull"),
        ev("b", 1, "B", "order", "received", order_id="SO-H", erp_document="\tnull"),
    ]
    store.ingest(records, source="api", now=NOW)
    assert groups(engine) == {frozenset({"A", "B"})}
    hub = [ev("c", 2, "C", "order", "received", order_id="SO-H")]
    store.ingest(hub, source="api", now=NOW)
    assert groups(engine) == model(records + hub, limit=2) == {frozenset({"A"}), frozenset({"B"}), frozenset({"C"})}
