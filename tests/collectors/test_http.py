"""The collector's HTTP API over real HTTP on loopback, against a real Postgres."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from controltower import apikeys
from controltower.vocab import rfc3339

NOW = datetime.now(UTC).replace(microsecond=0)


def rec(eid: str, stage: str = "received", *, minutes_ago: float = 5, **extra: object) -> dict:
    record = {
        "event_id": eid,
        "occurred_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "correlation_id": extra.pop("cid", "C-1"),
        "order_id": "SO-1001",
        "channel": "amazon",
        "flow": "order",
        "stage": stage,
        "system": "marketplace",
        "attributes": {"external_order_id": "112-1234567-1234567", "sku": "SKU-9"},
    }
    record.update(extra)
    return record


def count(engine, sql: str = "SELECT count(*) FROM events") -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_events_as_array_object_and_ndjson(collector, engine):
    url = collector.url + "/v1/events"
    r1 = httpx.post(url, json=[rec("a1"), rec("a2", "acknowledged")])
    r2 = httpx.post(url, json={"events": [rec("a3", "erp_posted")]})
    ndjson = "\n".join(json.dumps(rec(f"n{i}", cid="C-2")) for i in range(3)) + "\n"
    r3 = httpx.post(url, content=ndjson, headers={"content-type": "application/x-ndjson"})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    assert r1.json() == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": []}
    assert r3.json()["accepted"] == 3
    again = httpx.post(url, json=[rec("a1"), rec("a2", "acknowledged")])
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 2, "conflicts": 0, "rejected": []}
    assert count(engine) == 6


def test_partial_acceptance_and_all_bad(collector, engine):
    url = collector.url + "/v1/events"
    bad_type = rec("b2")
    bad_type["latency_ms"] = "slow"
    missing = rec("b3")
    del missing["correlation_id"]
    r = httpx.post(url, json=[rec("b1"), bad_type, missing, rec("b4", minutes_ago=-600)])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1
    errors = {x["index"]: x["error"] for x in body["rejected"]}
    assert errors[1].startswith("latency_ms: expected a number")
    assert errors[2] == "correlation_id: missing (required)"
    assert "in the future" in errors[3]
    none = httpx.post(url, json=[bad_type])
    assert none.status_code == 400 and none.json()["accepted"] == 0
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, content=b"").status_code == 400
    assert httpx.post(url, json=42).status_code == 400
    # the process still serves after all of that
    assert httpx.get(collector.url + "/healthz").status_code == 200
    assert count(engine) == 1


def test_invalid_utf8_is_a_per_record_error(collector, engine):
    good = json.dumps(rec("u1")).encode()
    bad = json.dumps(rec("u2", error_message="XX")).encode().replace(b"XX", b"\xff\xfe")
    array = httpx.post(collector.url + "/v1/events", content=b"[" + good + b"," + bad + b"]")
    assert array.status_code == 200
    assert array.json()["accepted"] == 1
    assert array.json()["rejected"] == [{"index": 1, "error": "error_message: not valid UTF-8"}]
    nd = httpx.post(collector.url + "/v1/events", content=bad + b"\n" + json.dumps(rec("u3")).encode())
    assert nd.json()["accepted"] == 1 and nd.json()["rejected"][0]["error"] == "line 1: error_message: not valid UTF-8"


def test_body_limits(collector, engine, settings):
    limit = settings.max_body_bytes
    big = httpx.post(collector.url + "/v1/events", content=b"[" + b" " * (limit + 10) + b"]")
    assert big.status_code == 413
    bomb = gzip.compress(b"[" + b" " * (limit + 10) + b"]")
    assert len(bomb) < limit
    r = httpx.post(collector.url + "/v1/events", content=bomb, headers={"content-encoding": "gzip"})
    assert r.status_code == 413 and "inflates" in r.json()["error"]
    ok = httpx.post(collector.url + "/v1/events", content=gzip.compress(json.dumps([rec("g1")]).encode()),
                    headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    assert httpx.post(collector.url + "/v1/events", content=b"xx", headers={"content-encoding": "br"}).status_code == 400


def test_api_keys(collector, engine):
    url = collector.url + "/v1/events"
    token = apikeys.create(engine, "shopify-bridge", ("ingest",))
    reader = apikeys.create(engine, "support", ("read",))
    collector.server.config.app.state.web.keys.invalidate()  # drop the 5 s cache now
    assert httpx.post(url, json=[rec("k1")]).status_code == 401
    assert httpx.post(url, json=[rec("k1")], headers={"authorization": "Bearer ct_dead_beef"}).status_code == 401
    assert httpx.post(url, json=[rec("k1")], headers={"authorization": f"Bearer {reader}"}).status_code == 401
    ok = httpx.post(url, json=[rec("k1")], headers={"authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    search = collector.url + "/v1/transactions?q=SO-1001"
    assert httpx.get(search, headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(search, headers={"authorization": f"Bearer {reader}"}).status_code == 200
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash FROM api_keys")).scalars().all()
    assert token not in stored and apikeys.hash_key(token) in stored


def test_search_by_every_key_and_transaction_view(collector, engine):
    url = collector.url + "/v1/events"
    events = [
        rec("s1", minutes_ago=30, cid="TX-9"),
        rec("s2", "acknowledged", minutes_ago=29, cid="TX-9"),
        rec("s3", "shipped", minutes_ago=10, cid="TX-9", flow="fulfilment",
            attributes={"tracking_number": "1Z999AA10123456784"}),
        rec("other", minutes_ago=5, cid="TX-10", order_id="SO-2002", attributes={"sku": "SKU-9"}),
    ]
    assert httpx.post(url, json=events).json()["accepted"] == 4
    for q, expected in [
        ("SO-1001", ["TX-9"]),
        ("TX-9", ["TX-9"]),
        ("112-1234567-1234567", ["TX-9"]),
        ("1Z999AA10123456784", ["TX-9"]),
        ("SKU-9", ["TX-10", "TX-9"]),  # newest first
        ("nope", []),
    ]:
        r = httpx.get(collector.url + "/v1/transactions", params={"q": q})
        assert r.status_code == 200
        assert [x["correlation_id"] for x in r.json()["results"]] == expected, q
    assert httpx.get(collector.url + "/v1/transactions").status_code == 400
    tx = httpx.get(collector.url + "/v1/transactions/TX-9").json()
    assert tx["order_id"] == "SO-1001" and tx["channel"] == "amazon"
    assert list(tx["milestones"]) == ["order.received", "order.acknowledged", "fulfilment.shipped"]
    assert tx["milestones"]["order.received"].endswith("Z")
    assert [e["event_id"] for e in tx["events"]] == ["s1", "s2", "s3"]
    assert tx["keys"]["tracking_number"] == ["1Z999AA10123456784"]
    assert httpx.get(collector.url + "/v1/transactions/missing").status_code == 404


def test_a_business_transaction_posted_by_four_systems_reads_whole_from_any_member(collector, engine):
    from tests.core.test_transactions import CARRIER, ERP, MKT, TRACKING, WMS, stitched_records

    t0 = NOW - timedelta(hours=3)
    records = stitched_records(t0, "2099-01-01")
    assert "channel" not in records[-1]  # the carrier's scan knows only the tracking number
    assert httpx.post(collector.url + "/v1/events", json=records).json()["accepted"] == 8
    tx = httpx.get(f"{collector.url}/v1/transactions/{CARRIER}")
    assert tx.status_code == 200
    body = tx.json()
    assert (body["correlation_id"], body["correlation_ids"], body["channel"]) == (
        MKT, [CARRIER, ERP, MKT, WMS], "amazon")
    minute = timedelta(minutes=1)
    assert body["milestones"] == {
        "order.received": rfc3339(t0), "order.acknowledged": rfc3339(t0 + minute),
        "order.erp_posted": rfc3339(t0 + 2 * minute), "fulfilment.released": rfc3339(t0 + 20 * minute),
        "fulfilment.shipped": rfc3339(t0 + 60 * minute), "shipment.first_scan": rfc3339(t0 + 90 * minute)}
    assert [e["correlation_id"] for e in body["events"]] == [MKT, MKT, ERP, ERP, ERP, WMS, WMS, CARRIER]
    [row] = httpx.get(collector.url + "/v1/transactions", params={"q": TRACKING}).json()["results"]
    assert (row["correlation_id"], row["correlation_ids"], row["matched_by"]) == (
        MKT, [CARRIER, ERP, MKT, WMS], ["tracking_number"])


def test_sla_verdicts_from_definitions(collector, engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sla_definitions (name, kind, from_milestone, to_milestone, default_target_ms, targets_ms) "
            "VALUES ('order_acknowledgement', 'milestone_latency', 'order.received', 'order.acknowledged', 900000, "
            "'{\"amazon\": 60000}'), ('erp_posting', 'milestone_latency', 'order.received', 'order.erp_posted', "
            "1800000, '{}')"))
    httpx.post(collector.url + "/v1/events", json=[rec("v1", minutes_ago=60, cid="TX-V"),
                                                   rec("v2", "acknowledged", minutes_ago=58, cid="TX-V")])
    tx = httpx.get(collector.url + "/v1/transactions/TX-V").json()
    verdicts = {v["sla"]: v for v in tx["sla"]}
    assert verdicts["order_acknowledgement"]["state"] == "breached"  # 2 min against amazon's 1 min
    assert verdicts["order_acknowledgement"]["elapsed_ms"] == 120000
    assert verdicts["order_acknowledgement"]["target_ms"] == 60000
    assert verdicts["erp_posting"]["state"] == "overdue"  # 60 min without posting, target 30


def test_readyz_and_healthz(collector):
    assert httpx.get(collector.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(collector.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["migrations"] == "current"


@pytest.mark.parametrize("path", ["/v1/events", "/v1/traces"])
def test_wrong_method(collector, path):
    assert httpx.get(collector.url + path).status_code == 405


def test_rate_limit_per_key_answers_429_with_retry_after(engine, settings):
    from controltower.context import AppContext
    from tests.conftest import LoopbackServer
    from wiring.server import build_app

    limited = settings.with_(rate_limit_events=5.0)  # bucket of 50 events
    token = apikeys.create(engine, "pos-bridge", ("ingest",))
    other = apikeys.create(engine, "erp-bridge", ("ingest",))
    with LoopbackServer(build_app(AppContext(limited, engine))) as server:
        url = server.url + "/v1/events"
        headers = {"authorization": f"Bearer {token}"}
        first = httpx.post(url, json=[rec(f"rl{i}", cid="C-rl") for i in range(40)], headers=headers)
        assert first.status_code == 200 and first.json()["accepted"] == 40
        refused = httpx.post(url, json=[rec(f"rl{i}", cid="C-rl") for i in range(40, 60)], headers=headers)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "rate limit" in refused.json()["error"]
        # another key has its own bucket
        assert httpx.post(url, json=[rec("rl-x", cid="C-rl2")], headers={"authorization": f"Bearer {other}"}).status_code == 200
        reader = {"authorization": "Bearer " + apikeys.create(engine, "scraper", ("read",))}
        server.server.config.app.state.web.keys.invalidate()
        assert "controltower_collector_rate_limited_total 1.0" in httpx.get(server.url + "/metrics", headers=reader).text
    assert count(engine, "SELECT count(*) FROM events WHERE correlation_id = 'C-rl'") == 40
