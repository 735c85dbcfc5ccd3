"""Generated hostile input against every entry point this room owns (issue 10, "generalise").

Hypothesis builds bodies mixing good records with hostile ones (deep nesting, unstorable
numbers, invalid UTF-8, extreme dates, odd keys), framed every way the API accepts (JSON array,
`{"events"}`, NDJSON, gzip single and multi-member), OTLP exports with hostile strings
(protobuf and JSON), feed files (CSV/JSONL, plain and gzip, bad bytes and long lines) and the
drop folder. Each example asserts: no 5xx, every good record stored exactly once, every
rejection names what was wrong; and that generated personal data under generated key
spellings and nesting is never stored in clear.
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.store import EventStore
from controltower.masking import Masker

NOW = datetime.now(UTC).replace(microsecond=0)
SETTINGS = hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Hostile record bodies: (raw JSON bytes of the record, a word its rejection must contain).
# `{id}` is replaced by the record's event id.
HOSTILE = [
    (b'{"event_id": "{id}", "payload": ' + b"[" * 40 + b"]" * 40, "payload"),
    (b'{"event_id": "{id}", "payload": ' + b"[" * 1100 + b"]" * 1100, "payload"),
    (b'{"event_id": "{id}", "attributes": {"order_total": 123456789012345678901234567890', "order_total"),
    (b'{"event_id": "{id}", "attributes": {"order_total": 1e400', "order_total"),
    (b'{"event_id": "{id}", "attributes": {"note": "caf\xe9"', "note"),
    (b'{"event_id": "{id}", "occurred_at": "0001-01-01T00:00:00+14:00"', "occurred_at"),
    (b'{"event_id": "{id}", "occurred_at": "9999-12-31T23:59:59-12:00"', "occurred_at"),
    (b'{"event_id": "{id}", "latency_ms": -1', "latency_ms"),
]
COMMON = {"correlation_id": "C-gen", "channel": "amazon", "flow": "order", "stage": "received"}


def good_bytes(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "occurred_at": NOW.isoformat(), **COMMON}).encode()


def hostile_bytes(template: bytes, event_id: str) -> bytes:
    closing = b"}" if template.count(b"{") - template.count(b"}") == 1 else b"}}"
    body = template.replace(b"{id}", event_id.encode()) + closing
    rest = json.dumps({k: v for k, v in {"occurred_at": NOW.isoformat(), **COMMON}.items()
                       if f'"{k}"'.encode() not in template}).encode()
    return body[:-1] + b", " + rest[1:] if closing == b"}" else body[:-2] + b"}, " + rest[1:]


def stored(engine, prefix: str) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT event_id FROM events WHERE event_id LIKE :p ORDER BY 1"), {"p": prefix + "%"}).scalars().all()


def frame(records: list[bytes], framing: str) -> tuple[bytes, dict[str, str]]:
    if framing == "ndjson":
        return b"\n".join(records), {"content-type": "application/x-ndjson"}
    body = b"[" + b", ".join(records) + b"]"
    if framing == "events":
        body = b'{"events": ' + body + b"}"
    if framing == "gzip":
        return gzip.compress(body), {"content-encoding": "gzip"}
    if framing == "gzip-members":
        lines = [gzip.compress(r + b"\n") for r in records]
        return b"".join(lines), {"content-encoding": "gzip", "content-type": "application/x-ndjson"}
    return body, {"content-type": "application/json"}


@SETTINGS
@given(
    kinds=st.lists(st.one_of(st.none(), st.sampled_from(range(len(HOSTILE)))), min_size=1, max_size=8),
    framing=st.sampled_from(["array", "events", "ndjson", "gzip", "gzip-members"]),
)
def test_generated_event_bodies_store_every_good_record_once(collector, engine, kinds, framing):
    prefix = f"g{uuid.uuid4().hex[:10]}-"
    ids = [f"{prefix}{i}" for i in range(len(kinds))]
    records = [good_bytes(i) if k is None else hostile_bytes(HOSTILE[k][0], i) for i, k in zip(ids, kinds, strict=True)]
    body, headers = frame(records, framing)
    for _attempt in (1, 2):  # a resend changes nothing
        response = httpx.post(collector.url + "/v1/events", content=body, headers=headers)
        assert response.status_code in (200, 400), response.text
        answer = response.json()
        rejected = {r["index"]: r["error"] for r in answer["rejected"]}
        assert sorted(rejected) == [i for i, k in enumerate(kinds) if k is not None]
        for index, message in rejected.items():
            assert HOSTILE[kinds[index]][1] in message, message
    good = sorted(i for i, k in zip(ids, kinds, strict=True) if k is None)
    assert stored(engine, prefix) == good


HOSTILE_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["\x00", "\u202e", "\ufeff", "Checkout API v2", "ｗｍｓ", "a" * 300, "💥" * 20])


@SETTINGS
@given(notes=st.lists(HOSTILE_TEXT, min_size=1, max_size=5), service=HOSTILE_TEXT, bad=st.booleans(), as_json=st.booleans())
def test_generated_otlp_exports_keep_good_spans(collector, engine, notes, service, bad, as_json):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    trace = uuid.uuid4().bytes
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    scope = rs.scope_spans.add()
    end = int(NOW.timestamp() * 1e9)
    for i, note in enumerate(notes + ["MARKBAD"] if bad else notes):
        span = scope.spans.add(trace_id=trace, span_id=bytes([i + 1] * 8), name=note[:40], start_time_unix_nano=end - 5, end_time_unix_nano=end)
        for key, value in (("retail.flow", "order"), ("retail.stage", "received"), ("retail.channel", "amazon"), ("retail.note", note)):
            span.attributes.add(key=key).value.string_value = value
    if as_json:
        doc = json_format.MessageToDict(request)
        for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            import base64

            s["traceId"], s["spanId"] = base64.b64decode(s["traceId"]).hex(), base64.b64decode(s["spanId"]).hex()
        body, kind = json.dumps(doc).encode(), "application/json"
    else:
        body, kind = request.SerializeToString(), "application/x-protobuf"
    body = body.replace(b"MARKBAD", b"\xffARKBAD")
    response = httpx.post(collector.url + "/v1/traces", content=body, headers={"content-type": kind})
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM events WHERE trace_id = :t"), {"t": trace.hex()}).scalar()
    storable = [n for n in notes if "\x00" not in n]
    assert count == len(storable)  # every good span once; the bad one (and NUL ones) rejected with a reason


@SETTINGS
@given(
    lines=st.lists(st.sampled_from(["good", "badbyte", "long", "deep", "bignum", "blank"]), min_size=1, max_size=8),
    kind=st.sampled_from(["csv", "jsonl"]),
    compressed=st.booleans(),
)
def test_generated_feed_files(tmp_path_factory, engine, settings, lines, kind, compressed):
    from collectors import files

    prefix = f"f{uuid.uuid4().hex[:10]}-"
    out, good = [], []
    for i, what in enumerate(lines):
        event_id = f"{prefix}{i}"
        if kind == "csv":
            row = f"{event_id},C-f,{NOW.isoformat()},amazon,order,received,".encode()
            cell = {"good": b"ok", "badbyte": b"caf\xe9", "long": b"x" * 3000, "deep": b"ok", "bignum": b"ok", "blank": b""}[what]
            out.append(row + cell if what != "blank" else b"")
        else:
            base = json.dumps({"event_id": event_id, "occurred_at": NOW.isoformat(), **COMMON}).encode()[:-1]
            extra = {"good": b"", "badbyte": b', "x": "\xe9"', "long": b', "x": "' + b"x" * 3000 + b'"',
                     "deep": b', "payload": ' + b"[" * 1100 + b"]" * 1100, "bignum": b', "attributes": {"n": 1e400}', "blank": None}[what]
            out.append(base + extra + b"}" if extra is not None else b"")
        if what in ("good", "deep", "bignum") and kind == "csv" or what == "good":
            good.append(event_id)
    header = b"event_id,correlation_id,occurred_at,channel,flow,stage,attributes.note\n" if kind == "csv" else b""
    data = header + b"\n".join(out) + b"\n"
    path = tmp_path_factory.mktemp("feed") / (f"feed.{kind}" + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(data) if compressed else data)
    store = EventStore(engine, settings, Masker())
    files_report = files.import_file(path, lambda r, s: store.ingest(r, source=s, now=NOW), max_line_bytes=2000)
    assert files_report.failure is None
    assert all(message for _, message in files_report.errors)
    assert stored(engine, prefix) == sorted(good)


NAME_KEYS = ["buyer_name", "customer_full_name", "person_name", "attn", "ship_to_name", "email", "phone", "card_number"]


@st.composite
def odd_spelling(draw, key: str) -> str:
    words = key.split("_")
    style = draw(st.sampled_from(["snake", "double", "kebab", "dot", "space", "camel", "upper", "pascal"]))
    text = {"snake": "_".join, "double": "__".join, "kebab": "-".join, "dot": ".".join, "space": " ".join,
            "camel": lambda w: w[0] + "".join(x.title() for x in w[1:]), "upper": lambda w: "_".join(w).upper(),
            "pascal": lambda w: "".join(x.title() for x in w)}[style](words)
    if draw(st.booleans()):  # zero-width characters anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"])) + text[at:]
    if draw(st.booleans()):  # full-width letters
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    return text


@st.composite
def pii_case(draw) -> tuple[str, object, list[str]]:
    """(key, value, clear strings that must not be stored)."""
    base = draw(st.sampled_from(NAME_KEYS))
    key = draw(odd_spelling(base))
    first, last = draw(st.sampled_from(["Janet", "Oliver", "Amelie"])), draw(st.sampled_from(["Doerfler", "Kowalczyk", "Nakamura"]))
    local = draw(st.from_regex(r"[a-z]{4,8}", fullmatch=True))
    email = f"{local}@{draw(st.sampled_from(['example.com', 'mail.example.org']))}"
    if base == "email":
        return key, draw(st.sampled_from([email, email.replace("@", "%40"), f"<{email}>"])), [local]
    if base == "phone":
        return key, "+1 206 555 0143", ["555 0143", "5550143"]
    if base == "card_number":
        return key, draw(st.sampled_from(["4111 1111 1111 1111", "4111111111111111", "5555-5555-5555-4444"])), ["1111 1111", "11111111", "5555-5555"]
    return key, f"{first} {last}", [first, last]


def nest(draw, value: object) -> object:
    for _ in range(draw(st.integers(0, 6))):
        shape = draw(st.sampled_from(["dict", "list", "pair"]))
        key = draw(st.sampled_from(["data", "items", "meta", "x", "details_blob"]))
        value = {key: value} if shape == "dict" else [value] if shape == "list" else value
    return value


@SETTINGS
@given(data=st.data())
def test_generated_personal_data_is_never_stored_in_clear(collector, engine, data):
    cases = data.draw(st.lists(pii_case(), min_size=1, max_size=4))
    payload = {}
    for key, value, _ in cases:
        holder = data.draw(st.sampled_from(["key", "pair", "text"]))
        if holder == "pair":
            item: object = [{"name": key, "value": value}]
        elif holder == "text" and isinstance(value, str) and "@" in value:
            item = f"please contact {value} today"
        else:
            item = {key: value}
        payload[uuid.uuid4().hex[:6]] = nest(data.draw, item)
    event_id = f"p{uuid.uuid4().hex[:10]}"
    record = {"event_id": event_id, "occurred_at": NOW.isoformat(), **COMMON, "payload": payload}
    response = httpx.post(collector.url + "/v1/events", json=[record])
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT to_jsonb(e)::text FROM events e WHERE event_id = :e"), {"e": event_id}).scalar()
    for _, _, clear in cases:
        for text in clear:
            assert text not in row, (text, row)


def test_generated_drop_folder_with_links(tmp_path, engine, settings):
    from collectors.dropfolder import watch_once

    drop = tmp_path / "drop"
    drop.mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(good_bytes("outside-1") + b"\n")
    (drop / "a.jsonl").symlink_to(outside)
    (drop / "b.jsonl").write_bytes(good_bytes("drop-1") + b"\n" + b'{"payload": ' + b"[" * 1100 + b"]" * 1100 + b"}\n")
    store = EventStore(engine, settings, Masker())
    reports = watch_once(drop, lambda r, s: store.ingest(r, source=s, now=datetime.now(UTC) + timedelta(seconds=1)))
    assert [r.path.name for r in reports] == ["b.jsonl"]
    assert stored(engine, "drop-") == ["drop-1"] and stored(engine, "outside-") == []
