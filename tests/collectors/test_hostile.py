"""Hostile input: generated bodies never produce a 500, every rejection says why, and
injection strings are stored verbatim (parameterized SQL) and come back unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.files import import_files
from collectors.store import EventStore

NOW = datetime.now(UTC).replace(microsecond=0)
INJECTIONS = [
    "'; DROP TABLE events; --",
    "\" OR 1=1 --",
    "<script>alert('x')</script>",
    "${jndi:ldap://evil/a}",
    "Robert'); DELETE FROM transactions;--",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🛒 ünïcödé",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
record = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=10) | st.integers(),
        "occurred_at": st.just(NOW.isoformat()) | st.text(max_size=30) | st.integers(),
        "correlation_id": st.text(max_size=10) | st.none(),
        "channel": st.sampled_from(["amazon", "Bad Channel", ""]) | st.integers(),
        "flow": st.just("order") | st.text(max_size=5),
        "stage": st.just("received") | st.text(max_size=5),
        "status": st.sampled_from(["ok", "error", "nope"]) | st.none(),
        "latency_ms": st.floats() | st.text(max_size=3),
        "attributes": json_values,
        "payload": json_values,
    },
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(record | json_values, max_size=6))
def test_generated_event_bodies_never_fail_the_server(collector, body):
    response = httpx.post(collector.url + "/v1/events", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    assert response.status_code == 200 or answer["error"]  # a 400 always says why
    if answer.get("rejected") or response.status_code == 200:
        assert all(r["error"] for r in answer["rejected"])
        assert answer["accepted"] + answer["duplicates"] + len(answer["rejected"]) == len(body)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), as_json=st.booleans())
def test_generated_otlp_bodies_never_fail_the_server(collector, raw, as_json):
    kind = "application/json" if as_json else "application/x-protobuf"
    response = httpx.post(collector.url + "/v1/traces", content=raw, headers={"content-type": kind})
    assert response.status_code in (200, 400), response.text


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400))
def test_generated_csv_files_are_reported_not_crashed(tmp_path_factory, engine, settings, text):
    path = tmp_path_factory.mktemp("csv") / "feed.csv"
    path.write_text("correlation_id,occurred_at,channel,flow,stage\n" + text, encoding="utf-8")
    store = EventStore(engine, settings)
    report = import_files([path], lambda records, source: store.ingest(records, source=source, now=NOW), progress=False)
    assert all(message for message in report.errors)


def test_injection_strings_are_stored_verbatim_and_searchable(collector, engine):
    records = []
    for i, text in enumerate(INJECTIONS):
        records.append({
            "event_id": f"inj-{i}", "occurred_at": NOW.isoformat(), "correlation_id": f"C-inj-{i}",
            "order_id": text, "channel": "amazon", "flow": "order", "stage": "received",
            "error_message": text, "attributes": {"sku": text, "note": text}, "payload": {"comment": text},
        })
    response = httpx.post(collector.url + "/v1/events", json=records)
    assert response.status_code == 200 and response.json()["accepted"] == len(INJECTIONS)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == len(INJECTIONS)
        stored = [r[0] for r in conn.execute(sa.text("SELECT order_id FROM events ORDER BY event_id"))]
    assert sorted(stored) == sorted(INJECTIONS)
    for i, text in enumerate(INJECTIONS):
        found = httpx.get(collector.url + "/v1/transactions", params={"q": text}).json()["results"]
        assert [r["correlation_id"] for r in found] == [f"C-inj-{i}"]
        detail = httpx.get(collector.url + f"/v1/transactions/C-inj-{i}").json()
        assert detail["events"][0]["attributes"]["sku"] == text


def test_keys_wrong_expired_and_missing(collector, engine):
    from datetime import timedelta

    from controltower import apikeys

    good = apikeys.create(engine, "src", ("ingest",))
    expired = apikeys.create(engine, "old", ("ingest",), expires_at=datetime.now(UTC) - timedelta(minutes=1))
    collector.server.config.app.state.web.keys.invalidate()
    url = collector.url + "/v1/events"
    body = [{"event_id": "k", "occurred_at": NOW.isoformat(), "correlation_id": "C-k", "channel": "amazon",
             "flow": "order", "stage": "received"}]
    for headers in ({}, {"authorization": "Bearer " + good[:-2] + "xx"}, {"authorization": f"Bearer {expired}"},
                    {"authorization": "Basic " + good}, {"x-api-key": "ct_nope_nope"}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["error"]
    assert httpx.post(url, json=body, headers={"x-api-key": good}).status_code == 200


def test_search_with_unstorable_characters_is_simply_not_found(collector):
    found = httpx.get(collector.url + "/v1/transactions", params={"q": "SO-\x00-1"})
    assert found.status_code == 200 and found.json()["results"] == []
    assert httpx.get(collector.url + "/v1/transactions/C%00X").status_code == 404
    assert httpx.get(collector.url + "/v1/transactions", params={"q": "x", "offset": "-1"}).status_code == 400
