"""Hostile input: generated bodies never produce a 500, every rejection says why, and
injection strings are stored verbatim (parameterized SQL) and come back unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.files import import_files
from collectors.store import EventStore
from controltower.masking import Masker

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


# -- issue 10 #5 #6 #7 #8 #14 through the real app on loopback --------------------------------

def _rec(event_id: str, **extra) -> dict:
    return {"event_id": event_id, "occurred_at": NOW.isoformat(), "correlation_id": f"C-{event_id}",
            "channel": "amazon", "flow": "order", "stage": "received"} | extra


def _stored_ids(engine, prefix: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_id FROM events WHERE event_id LIKE :p ORDER BY event_id"), {"p": prefix + "%"})
        return [r[0] for r in rows]


def test_multi_member_gzip_body_stores_every_member(collector, engine):
    import gzip

    body = gzip.compress(json.dumps(_rec("gz-1")).encode() + b"\n") + gzip.compress(json.dumps(_rec("gz-2")).encode() + b"\n")
    response = httpx.post(collector.url + "/v1/events", content=body,
                          headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"})
    assert response.status_code == 200 and response.json()["accepted"] == 2
    assert _stored_ids(engine, "gz-") == ["gz-1", "gz-2"]


def test_gzip_bomb_across_members_is_413(collector, settings):
    import gzip

    member = gzip.compress(b" " * (settings.max_body_bytes // 2 + 1))
    response = httpx.post(collector.url + "/v1/events", content=member + member + member,
                          headers={"content-encoding": "gzip"})
    assert response.status_code == 413


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("levels", [40, 1000, 1100])
@pytest.mark.parametrize("framing", ["array", "ndjson"])
def test_deep_payload_rejects_only_its_record(collector, engine, levels, framing):
    good_a, good_b = json.dumps(_rec(f"deep{levels}{framing}-a")).encode(), json.dumps(_rec(f"deep{levels}{framing}-c")).encode()
    bad = json.dumps(_rec(f"deep{levels}{framing}-b", payload="X")).encode().replace(b'"X"', _deep(levels))
    if framing == "array":
        response = httpx.post(collector.url + "/v1/events", content=b"[" + good_a + b"," + bad + b"," + good_b + b"]")
        prefix = ""
    else:
        response = httpx.post(collector.url + "/v1/events", content=b"\n".join([good_a, bad, good_b]),
                              headers={"content-type": "application/x-ndjson"})
        prefix = "line 2: "
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == [{"index": 1, "error": prefix + "payload: nested deeper than 32 levels"}]
    assert _stored_ids(engine, f"deep{levels}{framing}-") == [f"deep{levels}{framing}-a", f"deep{levels}{framing}-c"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        # orjson reads a 30-digit integer as a float; either way the reason is the number, not UTF-8
        (b"123456789012345678901234567890", "attributes.order_total: number 1.23457e+29 is outside ±2^63 and would lose digits; send it as a string"),
        (b"1e400", "attributes.order_total: number 1e400 is outside the range stored exactly (±2^63, finite); send it as a string"),
        (b"1e30", "attributes.order_total: number 1e+30 is outside ±2^63 and would lose digits; send it as a string"),
    ],
)
def test_unstorable_numbers_are_rejected_with_the_field_never_stored_as_null(collector, engine, raw, error):
    bad = json.dumps(_rec("num-b", attributes={"order_total": "X"})).encode().replace(b'"X"', raw)
    response = httpx.post(collector.url + "/v1/events", content=b"[" + json.dumps(_rec("num-a")).encode() + b"," + bad + b"]")
    assert response.status_code == 200
    assert response.json()["rejected"] == [{"index": 1, "error": error}]
    assert _stored_ids(engine, "num-") == ["num-a"]


def _otlp_request(service: str, notes: list[str]):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = service
    scope = resource_spans.scope_spans.add()
    end = int(NOW.timestamp() * 1e9)
    for i, note in enumerate(notes):
        span = scope.spans.add(trace_id=bytes([7] * 16), span_id=bytes([i + 1] * 8), name=f"step {i}",
                               start_time_unix_nano=end - 1_000_000, end_time_unix_nano=end)
        for key, value in (("retail.flow", "order"), ("retail.stage", "received"), ("retail.channel", "amazon"),
                           ("retail.correlation_id", f"C-otlp-{i}"), ("retail.note", note)):
            span.attributes.add(key=key).value.string_value = value
    return request


def test_otlp_protobuf_with_one_bad_string_keeps_the_good_spans(collector, engine):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    wire = _otlp_request("Checkout API v2", ["fine-0", "XBAD-1", "fine-2"]).SerializeToString().replace(b"XBAD-1", b"\xffBAD-1")
    response = httpx.post(collector.url + "/v1/traces", content=wire, headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message == 'span 0202020202020202 ("step 1"): attribute "retail.note" is not valid UTF-8'
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT correlation_id, system FROM events WHERE correlation_id LIKE 'C-otlp-%' ORDER BY 1")).all()
    assert [tuple(r) for r in rows] == [("C-otlp-0", "checkout-api-v2"), ("C-otlp-2", "checkout-api-v2")]


def test_otlp_json_with_one_bad_string_keeps_the_good_spans(collector, engine):
    from google.protobuf import json_format

    document = json_format.MessageToDict(_otlp_request("Checkout API v2", ["fine-0", "XBAD-1", "fine-2"]))
    for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId"):
            import base64

            span[key] = base64.b64decode(span[key]).hex()
    body = json.dumps(document).encode().replace(b"XBAD-1", b"\xffBAD-1")
    response = httpx.post(collector.url + "/v1/traces", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and 'attribute "retail.note" is not valid UTF-8' in partial["errorMessage"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT correlation_id FROM events WHERE correlation_id LIKE 'C-otlp-%' ORDER BY 1")).scalars().all()
    assert rows == ["C-otlp-0", "C-otlp-2"]


def _everything_stored(engine) -> str:
    with engine.connect() as conn:
        parts = [conn.execute(sa.text(f"SELECT coalesce(string_agg(to_jsonb(t)::text, ' '), '') FROM {table} t")).scalar()  # noqa: S608 (fixed table names)
                 for table in ("events", "transactions", "transaction_keys", "transaction_milestones")]
    return " ".join(parts)


PII = ["jane@example.com", "Jane", "Doe", "2065550143", "206 555 0143", "4111111111111111", "4111 1111 1111 1111",
       "DE89370400440532013000", "Main Street"]


def test_personal_data_is_stored_nowhere_in_clear(collector, engine):
    record = _rec(
        "pii:jane@example.com", correlation_id="jane@example.com", order_id="SO-9/jane@example.com",
        error_code="Buyer[jane%40example.com]", status="error",
        error_message="Address invalid for customer Jane Doe at 12 Main Street, call +1 206 555 0143",
        attributes={"external_order_id": "jane@example.com", "buyer__name": "Jane Doe", "attn": "Jane Doe"},
        payload={"fields": [{"name": "phone", "value": "+1 206 555 0143"}], "customer_full_name": "Jane Doe",
                 "jane@example.com": True, "pay": {"note": "card 4111 1111 1111 1111"}, "iban": "DE89370400440532013000",
                 "ｐｅｒｓｏｎ＿ｎａｍｅ": "Jane Doe", "person\u200b_name": "Jane Doe", "x": "4111111111111111"},
    )
    response = httpx.post(collector.url + "/v1/events", json=[record])
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "Checkout API v2"
    span = rs.scope_spans.add().spans.add(trace_id=bytes([9] * 16), span_id=bytes([9] * 8), name="s",
                                          start_time_unix_nano=int(NOW.timestamp() * 1e9) - 5, end_time_unix_nano=int(NOW.timestamp() * 1e9))
    span.status.code = 2
    span.status.message = "Recipient Jane Doe unreachable at +1 206 555 0143"
    for key, value in (("retail.flow", "order"), ("retail.stage", "received"), ("retail.channel", "amazon"),
                       ("retail.order_id", "jane@example.com")):
        span.attributes.add(key=key).value.string_value = value
    kv = span.attributes.add(key="retail.contact").value.kvlist_value.values.add(key="phone")
    kv.value.string_value = "+1 206 555 0143"
    exception = span.events.add(name="exception")
    exception.attributes.add(key="exception.type").value.string_value = "UnknownBuyer(jane@example.com)"
    response = httpx.post(collector.url + "/v1/traces", content=request.SerializeToString(),
                          headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 200 and not response.content, response.content
    stored = _everything_stored(engine)
    assert stored.count('"event_id"') >= 2
    for clear in PII:
        assert clear not in stored, clear
    answer = httpx.get(collector.url + "/v1/transactions", params={"q": "jane@example.com"})
    # the clear email is no search key: support's search finds the order through its stored token
    assert "jane@example.com" not in answer.text.replace('"q":"jane@example.com"', "")
    token = Masker().mask_identifier("jane@example.com")
    assert token in {r["order_id"] for r in answer.json()["results"]}


def _nested_value(levels: int):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    value = AnyValue(string_value="leaf")
    for _ in range(levels):
        outer = AnyValue()
        outer.array_value.values.add().CopyFrom(value)
        value = outer
    return value


def test_otlp_protobuf_too_deep_attribute_is_rejected_as_too_deep_not_as_bad_utf8(collector, engine):
    """A span whose attribute nests 60 arrays (past protobuf's 100-level limit) was rejected as
    "is not valid UTF-8": the wrong reason sends its sender looking for an encoding bug."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    request = _otlp_request("svc", ["fine-0", "deep-1", "fine-2"])
    deep = request.resource_spans[0].scope_spans[0].spans[1].attributes.add(key="retail.deep")
    deep.value.CopyFrom(_nested_value(60))
    response = httpx.post(collector.url + "/v1/traces", content=request.SerializeToString(),
                          headers={"content-type": "application/x-protobuf"})
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert response.status_code == 200 and answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message == \
        'span 0202020202020202 ("step 1"): attribute "retail.deep" is nested too deeply to decode'
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT correlation_id FROM events WHERE correlation_id LIKE 'C-otlp-%' ORDER BY 1")).scalars().all()
    assert rows == ["C-otlp-0", "C-otlp-2"]


def test_otlp_json_deeper_than_the_parser_takes_rejects_only_its_span(collector, engine):
    """One attribute nested 1,200 JSON levels turned the whole export into a 400, losing its
    good spans; the deep value is cut out while scanning and only its span is rejected."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(_otlp_request("svc", ["fine-0", "DEEP-1", "fine-2"]))
    for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId"):
            import base64

            span[key] = base64.b64decode(span[key]).hex()
    deep = b'{"arrayValue": {"values": [' * 400 + b'{"stringValue": "x"}' + b"]}}" * 400
    body = json.dumps(document).encode().replace(b'{"stringValue": "DEEP-1"}', deep)
    response = httpx.post(collector.url + "/v1/traces", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert partial["errorMessage"] == ('span 0202020202020202 ("step 1"): resourceSpans[0].scopeSpans[0].spans[1]: '
                                       "a value is nested deeper than 64 levels")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT correlation_id FROM events WHERE correlation_id LIKE 'C-otlp-%' ORDER BY 1")).scalars().all()
    assert rows == ["C-otlp-0", "C-otlp-2"]
