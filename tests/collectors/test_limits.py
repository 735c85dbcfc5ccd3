"""Per-record limits on what an event may fan out to: key values per kind, deadline dates."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from collectors.store import EventStore
from tests.collectors.test_store import NOW, ev

BAD_DEADLINES = [
    ("0001-01-01T00:00:00+05:00", "lies outside the years 2000..2100"),
    ("9999-12-31T23:59:59-05:00", "lies outside the years 2000..2100"),
    ("0001-01-01", "lies outside the years 2000..2100"),
    ("2101-01-01", "lies outside the years 2000..2100"),
    ("2100-12-31T22:00:00-05:00", "lies outside the years 2000..2100"),  # 2101 in UTC
    ("1999-12-31T23:59:59Z", "lies outside the years 2000..2100"),
    ("2026-11-25T10:00:00", "is not a deadline"),  # no offset: ambiguous
    ("2026-11-25T10:00:00+20:00", "is not a deadline"),  # no such offset
    ("soon", "is not a deadline"),
    ("2026-13-01", "is not a deadline"),
    ("٢٠٢٦-١١-٢٥", "is not a deadline"),  # Arabic-Indic digits
    ("２０２６-11-25", "is not a deadline"),  # full-width digits
    ("2026-11-25\n", "is not a deadline"),
]


def test_a_300000_sku_event_is_rejected_and_its_neighbours_stored(engine, settings):
    store = EventStore(engine, settings)
    skus = [f"SKU-{i}" for i in range(300_000)]
    records = [
        ev("ok-1", 0, "received", cid="A", attributes={"sku": ["SKU-A"]}),
        ev("fan", 1, "received", cid="FAN", attributes={"sku": skus}),
        ev("ok-2", 2, "received", cid="B", attributes={"sku": [f"S{i}" for i in range(100)]}),  # exactly the cap
    ]
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted == 2
    assert result.rejected == [(1, "attributes.sku: 300000 values, more than the 100 allowed")]
    with engine.connect() as conn:
        per_tx = dict(conn.execute(sa.text(
            "SELECT correlation_id, count(*) FROM transaction_keys GROUP BY 1")).all())
        fan_events = conn.execute(sa.text("SELECT count(*) FROM events WHERE correlation_id = 'FAN'")).scalar()
    assert per_tx == {"A": 1, "B": 100} and fan_events == 0


def test_the_key_value_cap_is_a_setting(engine, settings):
    store = EventStore(engine, settings.with_(max_key_values=2))
    result = store.ingest([ev("t", 0, "received", attributes={"tracking_number": ["1", "2", "3"]})],
                          source="api", now=NOW)
    assert result.rejected == [(0, "attributes.tracking_number: 3 values, more than the 2 allowed")]


@pytest.mark.parametrize(("value", "reason"), BAD_DEADLINES)
def test_out_of_range_deadlines_are_rejected_naming_the_field(engine, settings, value, reason):
    store = EventStore(engine, settings)
    records = [ev("bad", 0, "received", cid="X", attributes={"expected_ship_date": value}),
               ev("good", 0, "received", cid="Y", attributes={"expected_ship_date": "2026-11-24"})]
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted == 1
    ((index, error),) = result.rejected
    assert index == 0 and error.startswith("attributes.expected_ship_date: ") and reason in error


@pytest.mark.parametrize("value", ["2026-11-24", "2026-11-24T17:00:00Z", "2026-11-24T17:00:00-08:00",
                                   "2026-11-24 17:00:00+05:30", "2000-01-01", "2100-12-31T23:59:59+00:00"])
def test_valid_deadlines_are_stored(engine, settings, value):
    result = EventStore(engine, settings).ingest(
        [ev("d", 0, "received", attributes={"expected_ship_date": value})], source="api", now=NOW)
    assert (result.accepted, result.rejected) == (1, [])


def test_deadline_attributes_of_the_sla_definitions_are_enforced(engine, settings):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sla_definitions (name, kind, from_milestone, to_milestone, deadline_attribute)"
            " VALUES ('deliver_by', 'deadline', 'order.received', 'shipment.delivered', 'promised_delivery')"))
    store = EventStore(engine, settings.with_(deadline_min_year=2020, deadline_max_year=2030))
    result = store.ingest([ev("p1", 0, "received", attributes={"promised_delivery": "2031-01-01"}),
                           ev("p2", 0, "received", attributes={"promised_delivery": "2030-12-31"})],
                          source="api", now=NOW)
    assert result.accepted == 1
    assert result.rejected == [(0, 'attributes.promised_delivery: "2031-01-01" lies outside the years 2020..2030 accepted for deadlines')]


def test_an_events_body_with_more_records_than_a_batch_is_413_and_stores_nothing(engine, settings):
    """`[1,1,1,…]` answered one rejection per record past the batch limit: a 4 MB body drew a
    193 MB answer, and a 64 MB one would have taken gigabytes of memory to build."""
    import httpx

    from controltower.context import AppContext
    from tests.conftest import LoopbackServer
    from wiring.server import build_app

    small = settings.with_(max_batch_events=10)
    with LoopbackServer(build_app(AppContext(small, engine))) as server:
        body = "[" + ",".join(['{"a": 1}'] * 11) + "]"
        r = httpx.post(server.url + "/v1/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"] == ("the body holds 11 records, more than the 10 allowed per request; "
                                     "nothing was stored, send them in smaller batches")
        r = httpx.post(server.url + "/v1/events", content=b"1\n" * 11, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 413 and len(r.content) < 300
        r = httpx.post(server.url + "/v1/events", content=b"[" + b"1," * 9 + b"1]", headers={"content-type": "application/json"})
        assert r.status_code == 400 and len(r.json()["rejected"]) == 10  # at the limit: per-record reasons
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 0


def test_a_body_with_more_json_values_than_a_batch_needs_is_413_before_parsing(engine, settings):
    """64 MB of `{},{},…` parsed into 21 million dicts (~1.5 GB) before any count was checked;
    three 20 MB bodies at once took the collector from 90 MB to 710 MB RSS."""
    import httpx

    from collectors import bodies
    from controltower.context import AppContext
    from tests.conftest import LoopbackServer
    from wiring.server import build_app

    assert bodies.check_values(b'[{"a": [1, 2]}, {"b": {}}]', 7) is None  # , , [ [ { { {  = 7
    with pytest.raises(bodies.BodyTooLarge, match="up to 7 JSON values, more than the 6"):
        bodies.check_values(b'[{"a": [1, 2]}, {"b": {}}]', 6)
    small = settings.with_(max_batch_events=10)  # 400 values per request
    with LoopbackServer(build_app(AppContext(small, engine))) as server:
        for path, kind in (("/v1/events", "application/json"), ("/v1/events", "application/x-ndjson"),
                           ("/v1/traces", "application/json")):
            r = httpx.post(server.url + path, content=b"[" + b"{}," * 500 + b"{}]", headers={"content-type": kind})
            assert r.status_code == 413 and "JSON values" in r.json()["error"], (path, kind, r.text[:200])
        from tests.web.helpers import record

        good = [record(f"v-{i}") for i in range(10)]
        r = httpx.post(server.url + "/v1/events", json=good)
        assert r.status_code == 200 and r.json()["accepted"] == 10
