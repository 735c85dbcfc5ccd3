"""Event identity: an id is stored once per (correlation_id, event_id), whatever its time, and a
re-sent id changes nothing; different content under a stored id is counted and recorded."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from collectors.store import EventStore
from controltower import migrations
from controltower.masking import Masker
from tests.collectors.test_store import NOW, STORY, T0, ev, state
from tests.conftest import truncate_all


def _migration() -> Any:
    path = Path(migrations.__file__).parent / "versions" / "0005_event_identity.py"
    spec = importlib.util.spec_from_file_location("m0005", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conflicts(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT correlation_id, event_id, changed, incoming, count, stored_occurred_at, incoming_occurred_at,"
            " source, first_seen_at, last_seen_at FROM event_conflicts ORDER BY correlation_id, event_id, count"))]


def test_resent_id_with_other_content_changes_nothing_and_is_reported(engine, settings):
    store = EventStore(engine, settings)
    store.ingest(STORY[:2], source="api", now=NOW)
    before = state(engine)
    # e1 again, same correlation id and time, but claiming the ERP posting with another order and keys
    forged = ev("e1", 0, "erp_posted", order_id="SO-EVIL", attributes={"sku": "SKU-EVIL", "erp_document": "X-1"})
    result = store.ingest([forged], source="api", now=NOW + timedelta(minutes=5))
    assert (result.accepted, result.duplicates, result.conflicts, result.rejected) == (0, 1, 1, [])
    assert result.to_json() == {"accepted": 0, "duplicates": 1, "conflicts": 1, "rejected": []}
    after = state(engine)
    assert after == before  # no milestone (order.erp_posted stays open), no key, no transaction change
    assert "order.erp_posted" not in {m for _, m, _, _ in after["milestones"]}
    assert ("SKU-EVIL", "sku") not in {(v, k) for v, k, _, _ in after["keys"]}
    (row,) = conflicts(engine)
    assert (row["correlation_id"], row["event_id"], row["count"], row["source"]) == ("C1", "e1", 1, "api")
    assert row["changed"] == ["attributes", "order_id", "stage"]
    assert row["incoming"] == {"stage": "erp_posted", "order_id": "SO-EVIL",
                               "attributes": {"sku": "SKU-EVIL", "erp_document": "X-1"}}
    assert row["first_seen_at"] == row["last_seen_at"] == NOW + timedelta(minutes=5)

    # the same forgery again: counted on the same row; an identical resend is a silent duplicate
    again = store.ingest([forged, STORY[0]], source="file", now=NOW + timedelta(minutes=9))
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 2, 1)
    (row,) = conflicts(engine)
    assert row["count"] == 2 and row["source"] == "file"
    assert row["first_seen_at"] == NOW + timedelta(minutes=5) and row["last_seen_at"] == NOW + timedelta(minutes=9)
    assert state(engine) == before


def test_same_id_at_another_time_is_stored_once(engine, settings):
    store = EventStore(engine, settings)
    first = store.ingest([ev("e1", 0, "received", order_id="SO-1")], source="api", now=NOW)
    moved = store.ingest([ev("e1", 3, "received", order_id="SO-1")], source="api", now=NOW)
    assert (first.accepted, moved.accepted, moved.duplicates, moved.conflicts) == (1, 0, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 1
        assert conn.execute(sa.text("SELECT event_count FROM transactions")).scalar() == 1
    (row,) = conflicts(engine)
    assert row["changed"] == ["occurred_at"]
    assert (row["stored_occurred_at"], row["incoming_occurred_at"]) == (T0, T0 + timedelta(minutes=3))


def test_an_offset_spelling_of_the_same_instant_is_the_same_content(engine, settings):
    store = EventStore(engine, settings)
    store.ingest([ev("e1", 0, "received")], source="api", now=NOW)
    same = ev("e1", 0, "received") | {"occurred_at": "2026-11-22T10:00:00+01:00"}  # == T0
    result = store.ingest([same], source="api", now=NOW)
    assert (result.duplicates, result.conflicts) == (1, 0)
    assert conflicts(engine) == []


def test_within_one_batch_the_first_arrival_wins(engine, settings):
    a = ev("e1", 0, "received", order_id="SO-A")
    b = ev("e1", 2, "acknowledged", order_id="SO-B")
    for batch, winner in (([a, b], "SO-A"), ([b, a], "SO-B")):
        truncate_all(engine)
        result = EventStore(engine, settings).ingest(batch, source="api", now=NOW)
        assert (result.accepted, result.duplicates, result.conflicts) == (1, 1, 1)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT order_id FROM events")).scalars().all()
            tx = conn.execute(sa.text("SELECT order_id, event_count FROM transactions")).one()
            keys = conn.execute(sa.text("SELECT value FROM transaction_keys")).scalars().all()
        assert stored == [winner] and tuple(tx) == (winner, 1) and keys == [winner]
        (row,) = conflicts(engine)
        assert row["changed"] == ["occurred_at", "order_id", "stage"]


def test_conflicts_keep_masked_content_only(engine, settings):
    store = EventStore(engine, settings, Masker())
    store.ingest([ev("e1", 0, "received")], source="api", now=NOW)
    leaky = ev("e1", 0, "received", attributes={"buyer_email": "jane.doe@example.com"})
    assert store.ingest([leaky], source="api", now=NOW).conflicts == 1
    (row,) = conflicts(engine)
    assert "jane.doe@example.com" not in str(row["incoming"])
    assert row["incoming"]["attributes"]["buyer_email"] != "jane.doe@example.com"


def test_existing_events_are_backfilled_into_event_ids(engine, settings):
    """The migration's backfill uses the same content hash as ingest (ct_event_hash)."""
    EventStore(engine, settings).ingest(STORY, source="api", now=NOW)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE event_ids"))
        conn.execute(sa.text(_migration().BACKFILL))
        assert conn.execute(sa.text("SELECT count(*) FROM event_ids")).scalar() == len(STORY)
    result = EventStore(engine, settings).ingest(STORY, source="api", now=NOW)
    assert (result.accepted, result.duplicates, result.conflicts) == (0, len(STORY), 0)


def test_a_conflict_over_http_is_answered_and_counted_on_metrics(engine, settings):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from controltower.context import AppContext
    from tests.conftest import LoopbackServer
    from wiring.server import build_app

    first = ev("e-http", 1, "received", cid="c-http")
    changed = {**first, "stage": "erp_posted", "order_id": "SO-OTHER"}
    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        assert httpx.post(server.url + "/v1/events", json=[first]).json() == {
            "accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": []}
        again = httpx.post(server.url + "/v1/events", json=[first, changed]).json()
        text = httpx.get(server.url + "/metrics").text
    assert again == {"accepted": 0, "duplicates": 2, "conflicts": 1, "rejected": []}
    values = {(s.name, s.labels.get("source")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("controltower_collector_events_conflicts_total", "api")] == 1
    assert values[("controltower_collector_events_duplicates_total", "api")] == 2
