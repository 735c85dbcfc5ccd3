"""The write path against a real Postgres: idempotency, commutative transaction state, keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.store import EventStore
from tests.conftest import truncate_all

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)


def ev(eid: str, minutes: float, stage: str, *, cid: str = "C1", flow: str = "order", status: str = "ok", **extra: Any) -> dict[str, Any]:
    record = {
        "event_id": eid,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
        "correlation_id": cid,
        "channel": "walmart",
        "flow": flow,
        "stage": stage,
        "status": status,
        "system": "middleware",
    }
    record.update(extra)
    return record


STORY = [
    ev("e1", 0, "received", order_id="SO-1001", attributes={"external_order_id": "WM-77", "sku": ["SKU-1", "SKU-2"]}),
    ev("e2", 1, "acknowledged", order_id="SO-1001"),
    ev("e3", 8, "erp_posted", status="error", error_code="ERP-500", error_message="timeout"),
    ev("e4", 9, "erp_posted", order_id="SO-1001", attributes={"erp_document": "4500001"}),
    ev("e5", 30, "shipped", flow="fulfilment", attributes={"tracking_number": "1Z999"}),
    ev("e6", 31, "shipment_confirmed", flow="shipment", status="retry", error_code="HTTP-503"),
    ev("e7", 31, "shipment_confirmed", flow="shipment", status="error", error_code="HTTP-500", error_message="boom"),
    ev("e8", 45, "shipment_confirmed", flow="shipment"),
]


def state(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        tx = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT * FROM transactions ORDER BY correlation_id"))]
        for row in tx:
            row.pop("updated_at")
        ms = conn.execute(sa.text(
            "SELECT correlation_id, milestone, reached_at, channel FROM transaction_milestones "
            "ORDER BY 1, 2")).all()
        keys = conn.execute(sa.text(
            "SELECT value, kind, correlation_id, first_seen_at FROM transaction_keys ORDER BY 1, 2, 3")).all()
        count = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
    return {"tx": tx, "milestones": ms, "keys": keys, "events": count}


def test_story_builds_the_expected_transaction(engine, settings):
    store = EventStore(engine, settings)
    result = store.ingest(STORY, source="api", now=NOW)
    assert (result.accepted, result.duplicates, result.rejected) == (8, 0, [])
    s = state(engine)
    (tx,) = s["tx"]
    assert tx["channel"] == "walmart" and tx["flow"] == "order" and tx["order_id"] == "SO-1001"
    assert tx["first_event_at"] == T0 and tx["first_event_id"] == "e1"
    assert tx["last_event_at"] == T0 + timedelta(minutes=45) and tx["last_event_id"] == "e8"
    assert tx["status"] == "ok" and tx["last_milestone"] == "shipment.shipment_confirmed"
    assert (tx["event_count"], tx["error_count"], tx["retry_count"], tx["dead_letter_count"]) == (8, 2, 1, 0)
    # two errors at minute 31 and 8: the later one wins
    assert tx["last_error_at"] == T0 + timedelta(minutes=31)
    assert (tx["last_error_code"], tx["last_error_message"]) == ("HTTP-500", "boom")
    milestones = {m: at for _, m, at, _ in s["milestones"]}
    # the failed ERP attempt (status error) does not count as reaching the milestone
    assert milestones == {
        "order.received": T0,
        "order.acknowledged": T0 + timedelta(minutes=1),
        "order.erp_posted": T0 + timedelta(minutes=9),
        "fulfilment.shipped": T0 + timedelta(minutes=30),
        "shipment.shipment_confirmed": T0 + timedelta(minutes=45),
    }
    keys = {(v, k) for v, k, _, _ in s["keys"]}
    assert keys == {("SO-1001", "order_id"), ("WM-77", "external_order_id"), ("SKU-1", "sku"),
                    ("SKU-2", "sku"), ("4500001", "erp_document"), ("1Z999", "tracking_number")}


def test_duplicates_are_stored_once(engine, settings):
    store = EventStore(engine, settings)
    first = store.ingest(STORY[:3], source="api", now=NOW)
    again = store.ingest(STORY[:3] + STORY[:1], source="api", now=NOW)
    assert (first.accepted, first.duplicates) == (3, 0)
    assert (again.accepted, again.duplicates) == (0, 4)
    assert state(engine)["events"] == 3
    assert state(engine)["tx"][0]["event_count"] == 3


def test_per_record_rejections_keep_the_good_ones(engine, settings):
    store = EventStore(engine, settings)
    bad = [
        {"event_id": "x"},  # missing fields
        ev("old", -60 * 24 * 400, "received"),  # far in the past
        ev("future", 60 * 24 * 3, "received"),  # days ahead
        ev("nul", 0, "received", error_message="a\x00b"),
        ev("nuljson", 0, "received", attributes={"note": "a\x00b"}),
        ev("st", 0, "received", status="bogus"),
        "not an object",
    ]
    records = [STORY[0], *bad, STORY[1]]
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted == 2
    reasons = dict(result.rejected)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "occurred_at: missing" in reasons[1]
    assert "older than" in reasons[2]
    assert "in the future" in reasons[3]
    assert "U+0000" in reasons[4] and reasons[4].startswith("error_message")
    assert reasons[5].startswith("attributes") and "U+0000" in reasons[5]
    assert reasons[6].startswith("status")
    assert "expected a JSON object" in reasons[7]


def test_unicode_is_stored_verbatim(engine, settings):
    text = "Ünïcødé ✓ 注文 🚚 \u202e rtl ' ; DROP TABLE events; --"
    store = EventStore(engine, settings)
    store.ingest([ev("u1", 0, "received", error_message=text, attributes={"note": text})], source="api", now=NOW)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT error_message, attributes->>'note' FROM events")).one()
    assert tuple(row) == (text, text)


def test_late_event_creates_its_partition(engine, settings):
    store = EventStore(engine, settings)
    late = ev("late", -60 * 24 * 20, "received", cid="C-late")  # 20 days back: no partition yet
    assert store.ingest([late], source="api", now=NOW).accepted == 1
    day = (T0 - timedelta(days=20)).strftime("%Y%m%d")
    with engine.connect() as conn:
        partition_count = sa.text(f"SELECT count(*) FROM events_{day}")  # noqa: S608 (a date, not input)
        assert conn.execute(partition_count).scalar() == 1


_events = st.permutations(STORY).flatmap(
    lambda perm: st.lists(st.sampled_from(perm), max_size=4).map(lambda dup: list(perm) + dup)
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=_events, cut=st.integers(min_value=1, max_value=11))
def test_any_permutation_and_duplication_gives_the_same_state(engine, settings, order, cut):
    truncate_all(engine)
    EventStore(engine, settings).ingest(STORY, source="api", now=NOW)
    expected = state(engine)
    truncate_all(engine)
    store = EventStore(engine, settings)  # a fresh process: nothing cached from before the truncation
    # deliver in an arbitrary order, with duplicates, split over several batches
    for start in range(0, len(order), cut):
        store.ingest(order[start : start + cut], source="api", now=NOW)
    assert state(engine) == expected


@pytest.mark.parametrize("n", [1, 3])
def test_batches_across_transactions(engine, settings, n):
    store = EventStore(engine, settings)
    records = [ev(f"e{i}", i, "received", cid=f"C{i % n}") for i in range(10)]
    store.ingest(records, source="api", now=NOW)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text("SELECT correlation_id, event_count FROM transactions")).all())
    assert counts == {f"C{k}": len([i for i in range(10) if i % n == k]) for k in range(n)}
