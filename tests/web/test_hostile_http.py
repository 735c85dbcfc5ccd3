"""Generated hostile input against the HTTP entry points the web layer and its rooms own.

Never a 5xx for anything a client sends; every refusal is a JSON `{"error": "…"}`. Covers
`/v1/alerts/*` (bodies, fingerprints with odd Unicode and path characters, huge and deep
JSON), auth headers (odd spellings of Bearer, Unicode, huge values), `/v1/sla` window and
channel, `/v1/transactions` q/limit/offset and correlation ids.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controltower import apikeys

CONFUSABLES = ["\u200b", "\u200d", "\ufeff", "\uff22", "\u0392", "\u0411", "\u00a0", "\u202e", "\x00", "%", "_",
               "/", "..", "%2F", "\\", "?", "#", "\u0130", "ß", "🦄", "\U0010ffff"]
odd_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(CONFUSABLES + ["a", "0", "f", " "]), max_size=40).map("".join),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(["1e400", "-0", "NaN", "inf", "1h", "90d", "91d", "0.0001ms", "9" * 5000, "١٢", "１２"]),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def header_bytes(text: str) -> bytes:
    """What a hostile client can put in a header value (h11 refuses only control characters)."""
    raw = text.encode("utf-8", "surrogatepass")
    return bytes(b for b in raw if b >= 0x20 and b != 0x7F).strip() or b"x"


def assert_clean(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str) and r.json()["error"]


@pytest.fixture
def client(collector):
    with httpx.Client(base_url=collector.url, timeout=30) as c:
        yield c


@SETTINGS
@given(fingerprint=odd_text, body=st.one_of(json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300),
                                            st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * (n % 3)),
                                            st.integers(1, 3000).map(lambda n: b'{"by":' * n)))
def test_ack_never_5xx(client, fingerprint, body):
    r = client.post(f"/v1/alerts/{quote(fingerprint, safe='')}/ack", content=body,
                    headers={"content-type": "application/json"})
    assert_clean(r)
    assert r.status_code in (400, 404, 405), r.status_code  # no alert exists to acknowledge


@SETTINGS
@given(fingerprint=odd_text)
def test_alert_paths_never_5xx(client, fingerprint):
    assert_clean(client.get(f"/v1/alerts/{quote(fingerprint, safe='/')}"))
    assert_clean(client.get("/v1/alerts", params={"x": fingerprint}))


@SETTINGS
@given(scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "BeArEr", "Bearer ", "Basic", "Token", "", "Bearer\t",
                                "\uff22earer", "Be\u200barer"]),
       token=odd_text, pad=st.integers(0, 6000))
def test_odd_auth_headers_are_401_never_5xx(client, engine, collector, scheme, token, pad):
    if not apikeys.list_keys(engine):
        apikeys.create(engine, "k", ("ingest", "read"))
        collector.server.config.app.state.web.keys.invalidate()
    value = header_bytes(f"{scheme} {token}") + b"A" * pad
    for method, path in (("GET", "/v1/alerts"), ("POST", "/v1/events"), ("GET", "/metrics"),
                         ("POST", "/v1/alerts/00ff/ack"), ("GET", "/v1/sla")):
        r = client.request(method, path, headers=[(b"authorization", value), (b"x-api-key", value[:300])],
                           content=b"[]" if method == "POST" else None)
        assert_clean(r)
        assert r.status_code == 401, (path, r.status_code)


@SETTINGS
@given(window=odd_text, channel=odd_text)
def test_sla_params_never_5xx(client, window, channel):
    r = client.get("/v1/sla", params={"window": window, "channel": channel})
    assert_clean(r)


@SETTINGS
@given(q=odd_text, limit=odd_text, offset=odd_text, cid=odd_text)
def test_transactions_params_never_5xx(client, q, limit, offset, cid):
    assert_clean(client.get("/v1/transactions", params={"q": q, "limit": limit, "offset": offset}))
    assert_clean(client.get("/v1/transactions", params={"q": q}))
    assert_clean(client.get(f"/v1/transactions/{quote(cid, safe='')}"))


def test_hand_picked_hostile_inputs(client):
    for path, status in (("/v1/transactions/a%00b", 404), ("/v1/transactions?q=a%00b", 200),
                         ("/v1/transactions?q=" + "x" * 10_000, 200), ("/v1/transactions?q=x&limit=" + "9" * 5000, 400),
                         ("/v1/sla?window=1e308h", 400), ("/v1/sla?channel=%00", 400), ("/nope", 404),
                         ("/v1/alerts/%00/ack", 405)):
        r = client.get(path)
        assert_clean(r)
        assert r.status_code == status, (path, r.status_code)
    assert client.post("/v1/alerts/%00/ack", json={"by": "x"}).status_code == 404
    assert client.post("/v1/alerts/00ff/ack", json={"by": 5}).status_code == 400
    assert client.post("/v1/alerts/00ff/ack", json=["by"]).status_code == 400
