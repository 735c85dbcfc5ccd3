"""Hostile review of the identity graph on ingest: big batches, concurrent batches sharing a
correlation id, and relink agreeing with ingest on what may link. Real Postgres, no mocks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

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


def _Conn(engine):  # noqa: N802 (a connect() for linking.relink: a raw connection in a transaction)
    from contextlib import contextmanager

    @contextmanager
    def connect():
        with engine.begin() as conn:
            yield conn.connection.driver_connection

    return connect


def _relink(engine, settings):
    return linking.relink(_Conn(engine), kinds=settings.linking_keys, limit=settings.link_fanout_limit, now=NOW)


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


def test_retention_racing_a_late_link_leaves_no_business_without_its_name(engine, settings, database_url):
    """Retention expires an idle business of two while a late event links a new correlation id
    into it: either the business stays (it has an active member now) or the newcomer stands
    alone; never a business_id that names no member."""
    from controltower import retention

    settings = settings.with_(retention_transactions=86400.0)
    store = EventStore(engine, settings)
    old = [ev("m1", 0, "M-1", "order", "received", order_id="SO-OLD"),
           ev("m2", 1, "M-2", "order", "erp_posted", order_id="SO-OLD")]
    store.ingest(old, source="api", now=NOW)
    now2 = NOW + timedelta(days=2)
    late = {**ev("x1", 0, "X-LATE", "shipment", "scanned", order_id="SO-OLD"),
            "occurred_at": (now2 - timedelta(minutes=1)).isoformat()}
    blocker = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=False)
    blocker.execute("INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)"
                    " VALUES ('X-LATE', 'shipment.scanned', now(), 'amazon', now())")
    errors: list[BaseException] = []

    def send():
        try:
            EventStore(engine, settings).ingest([late], source="api", now=now2)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    t = threading.Thread(target=send)
    t.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_lock(engine, {blocker.info.backend_pid}) and time.monotonic() < deadline:
        time.sleep(0.02)
    # the late event linked X-LATE into the old business and waits to commit; retention runs now
    done = threading.Thread(target=retention.apply, args=(engine, settings, now2))
    done.start()
    time.sleep(1.0)
    blocker.rollback()
    blocker.close()
    t.join(20)
    done.join(20)
    assert not errors
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions")).all())
    assert "X-LATE" in rows
    assert all(bid in rows for bid in rows.values()), rows


def test_a_late_link_waiting_on_retention_does_not_name_a_removed_member(engine, settings, database_url):
    """The other order: retention holds the idle business (its locks taken, deleting) while the
    late event waits to link into it. The removed members must not be named afterwards."""
    from controltower import retention

    settings = settings.with_(retention_transactions=86400.0)
    store = EventStore(engine, settings)
    # "A-..." sort before the newcomer: a ghost business of one would win the name on a tie
    old = [ev("m1", 0, "A-1", "order", "received", order_id="SO-OLD")]
    store.ingest(old, source="api", now=NOW)
    now2 = NOW + timedelta(days=2)
    late = {**ev("x1", 0, "X-LATE", "shipment", "scanned", order_id="SO-OLD"),
            "occurred_at": (now2 - timedelta(minutes=1)).isoformat()}
    blocker = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=False)
    # retention's delete of the old milestones waits on us, holding its business locks
    blocker.execute("SELECT 1 FROM transaction_milestones WHERE correlation_id = 'A-1' FOR UPDATE").fetchall()
    pids = {blocker.info.backend_pid}
    done = threading.Thread(target=retention.apply, args=(engine, settings, now2))
    done.start()
    deadline = time.monotonic() + 10
    while not _waiting_on_lock(engine, pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    errors: list[BaseException] = []

    def send():
        try:
            EventStore(engine, settings).ingest([late], source="api", now=now2)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(1.0)
    blocker.rollback()
    blocker.close()
    done.join(20)
    t.join(20)
    assert not errors
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions")).all())
    assert rows == {"X-LATE": "X-LATE"}


def test_a_connection_whose_first_batch_failed_still_ingests(migrated_engine, engine, settings, database_url):
    """The staging tables are created in a connection's first batch transaction: when that batch
    fails (a deadlock with a linking batch, a cancel), they are rolled back with it; the next
    batches on the same pooled connection must not fail with `ct_batch does not exist`."""
    from controltower.db import make_engine

    one = make_engine(database_url, pool_size=1, application_name="ct-review-one")
    try:
        blocker = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=False)
        blocker.execute("INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)"
                        " VALUES ('F-1', 'order.received', now(), 'amazon', now())")
        failed: list[BaseException] = []

        def first():
            try:
                EventStore(one, settings).ingest([ev("f1", 0, "F-1", "order", "received", order_id="SO-F")],
                                                 source="api", now=NOW)
            except BaseException as exc:  # noqa: BLE001 (expected: cancelled)
                failed.append(exc)

        t = threading.Thread(target=first)
        t.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_lock(engine, {blocker.info.backend_pid}) and time.monotonic() < deadline:
            time.sleep(0.02)
        blocker.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'ct-review-one'")
        t.join(20)
        blocker.rollback()
        blocker.close()
        assert failed, "the first batch should have been cancelled"
        store = EventStore(one, settings)
        result = store.ingest([ev("g1", 1, "G-1", "order", "received", order_id="SO-F"),
                               ev("g2", 2, "G-2", "order", "erp_posted", order_id="SO-F")], source="api", now=NOW)
        assert result.accepted == 2
        assert groups(engine) == {frozenset({"G-1", "G-2"})}
    finally:
        one.dispose()


def test_odd_identity_values_link_exactly_as_sent(engine, settings):
    """Unicode is compared as sent (NFC and NFD differ), but a placeholder hidden behind a
    zero-width space is still a placeholder; 128 characters link and 129 don't; an integer and
    its decimal string are one value."""
    store = EventStore(engine, settings)
    records = [
        ev("u1", 0, "NFC", "order", "received", erp_document="caf\u00e9-1"),
        ev("u2", 1, "NFD", "order", "received", erp_document="cafe\u0301-1"),
        ev("z1", 2, "ZW-1", "order", "received", erp_document="n/a\u200b"),
        ev("z2", 3, "ZW-2", "order", "received", erp_document="n/a\u200b"),
        ev("k1", 4, "LEN128-1", "order", "received", tracking_number="\u00e9" * 128),
        ev("k2", 5, "LEN128-2", "order", "received", tracking_number="\u00e9" * 128),
        ev("k3", 6, "LEN129-1", "order", "received", tracking_number="\u00e9" * 129),
        ev("k4", 7, "LEN129-2", "order", "received", tracking_number="\u00e9" * 129),
        ev("i1", 8, "INT", "order", "received", erp_document=4500001),
        ev("i2", 9, "STR", "order", "received", erp_document="4500001"),
        ev("i3", 10, "ZERO", "order", "received", erp_document=0),
        ev("i4", 11, "ZERO-S", "order", "received", erp_document="0"),
    ]
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted == len(records)
    expected = {frozenset({"NFC"}), frozenset({"NFD"}), frozenset({"ZW-1"}), frozenset({"ZW-2"}),
                frozenset({"LEN128-1", "LEN128-2"}), frozenset({"LEN129-1"}), frozenset({"LEN129-2"}),
                frozenset({"INT", "STR"}), frozenset({"ZERO"}), frozenset({"ZERO-S"})}
    assert groups(engine) == model(records, limit=settings.link_fanout_limit) == expected
    _relink(engine, settings)
    assert groups(engine) == expected


def test_an_event_resent_with_other_identity_keys_links_nothing(engine, settings):
    """Same (correlation_id, event_id), other keys: a conflict (recorded), never a link."""
    store = EventStore(engine, settings)
    store.ingest([ev("a", 0, "A", "order", "received", order_id="SO-A"),
                  ev("b", 1, "B", "order", "received", order_id="SO-B")], source="api", now=NOW)
    result = store.ingest([ev("a", 0, "A", "order", "received", order_id="SO-B", erp_document="D-X")],
                          source="api", now=NOW)
    assert (result.accepted, result.conflicts) == (0, 1)
    assert groups(engine) == {frozenset({"A"}), frozenset({"B"})}
    with engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT count(*) FROM transaction_keys WHERE correlation_id = 'A'")).scalar()
        changes = conn.execute(sa.text("SELECT count(*) FROM identity_changes")).scalar()
    assert (keys, changes) == (1, 0)


def test_an_order_id_among_the_attributes_links_like_the_field(engine, settings):
    """A carrier scan without channel whose only identity is `attributes.order_id` is accepted
    (validation counts it as an identity key); it must then link like the order_id field."""
    store = EventStore(engine, settings)
    records = [ev("a", 0, "A", "order", "received", order_id="SO-1"),
               ev("b", 1, "B", "shipment", "scanned", channel=None, order_id="SO-1")]
    records[1]["attributes"] = {"order_id": records[1].pop("order_id")}
    result = store.ingest(records, source="api", now=NOW)
    assert (result.accepted, result.rejected) == (2, [])
    assert groups(engine) == model(records, limit=settings.link_fanout_limit) == {frozenset({"A", "B"})}


def _random_estate(seed: int, n_cids: int, n_values: int, n: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    records = []
    for i in range(n):
        attrs: dict = {}
        order = None
        for _ in range(rng.randrange(0, 3)):
            kind = rng.choice(["order_id", "erp_document", "tracking_number"])
            value = f"V{rng.randrange(n_values)}" if rng.random() < 0.9 else "HUB"
            if kind == "order_id":
                order = value
            else:
                attrs[kind] = value
        records.append(ev(f"e{i}", i % 300, f"T-{rng.randrange(n_cids)}", "order", "received",
                          order_id=order, **attrs))
    return records


def _send_all(engine, settings, parts, extra=()):
    import random

    errors: list[BaseException] = []

    def send(part):
        store = EventStore(engine, settings)
        rng = random.Random(len(part))
        i = 0
        while i < len(part):
            k = rng.randrange(1, 12)
            try:
                store.ingest(part[i:i + k], source="api", now=NOW)
            except BaseException as exc:  # noqa: BLE001 (asserted by the caller)
                errors.append(exc)
            i += k

    threads = [threading.Thread(target=send, args=(p,)) for p in parts] + [threading.Thread(target=f) for f in extra]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_many_writers_crossing_merges_and_hubs_build_the_model(engine, settings):
    """Sixteen writers, small random batches over a small key space with hubs forming (limit 3)
    while merges cross them: no batch lost to a deadlock, and the model's partition."""
    settings = settings.with_(link_fanout_limit=3)
    records = _random_estate(5, 100, 60, 1200)
    errors = _send_all(engine, settings, [records[i::16] for i in range(16)])
    assert not errors
    assert groups(engine) == model(records, limit=3)
    with engine.connect() as conn:
        wrong = conn.execute(sa.text(
            # a join with the per-value counts, not a correlated subquery (Citus refuses one from a reference table)
            "SELECT count(*) FROM identity_hubs h LEFT JOIN "
            "(SELECT kind, value, count(*) AS n FROM transaction_keys GROUP BY kind, value) k "
            "ON k.kind = h.kind AND k.value = h.value WHERE h.fanout <> coalesce(k.n, 0)")).scalar()
    assert wrong == 0


def test_relink_while_ingest_runs_gives_the_fresh_ingest_graph(engine, settings):
    """Two relinks (small chunks) run while six writers ingest the second half: the graph is the
    one a fresh ingest of everything builds."""
    settings = settings.with_(link_fanout_limit=3)
    records = _random_estate(4, 300, 120, 1200)
    half = len(records) // 2
    store = EventStore(engine, settings)
    for i in range(0, half, 10):
        store.ingest(records[i:i + 10], source="api", now=NOW)
    relinked: list[BaseException] = []

    def relink():
        try:
            linking.relink(_Conn(engine), kinds=settings.linking_keys, limit=3, now=NOW, chunk=7)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            relinked.append(exc)

    rest = records[half:]
    errors = _send_all(engine, settings, [rest[i::6] for i in range(6)], extra=(relink, relink))
    assert not errors and not relinked
    assert groups(engine) == model(records, limit=3)


def test_an_order_id_list_among_the_attributes_is_capped_like_any_key(engine, settings):
    """`attributes.order_id` links (and so writes key rows): a list of more values than
    max_key_values is rejected with its reason, like any key attribute's."""
    store = EventStore(engine, settings)
    record = ev("a", 0, "A", "order", "received")
    record["attributes"] = {"order_id": [f"SO-{i}" for i in range(settings.max_key_values + 1)]}
    result = store.ingest([record], source="api", now=NOW)
    assert result.accepted == 0
    assert [i for i, _ in result.rejected] == [0] and "attributes.order_id" in result.rejected[0][1]
