"""One-pass decoding (`bodies.decode_events` + `event.event_from_record`) decides exactly what the
dict path (`bodies.parse_events` + `event.parse_event`) decides: the same events, the same messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.bodies import decode_events, parse_events
from collectors.store import _check_json
from controltower.errors import EventError
from controltower.event import Event, EventRecord, Limits, event_from_record, parse_event
from controltower.masking import Masker

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LIMITS = Limits(key_attributes=("sku", "tracking_number"), max_key_values=3,
                deadline_attributes=frozenset({"ship_by"}))
GOOD = {"event_id": "e-1", "occurred_at": "2026-11-22T09:12:00Z", "correlation_id": "c-1", "channel": "amazon",
        "flow": "order", "stage": "received", "latency_ms": 12, "attributes": {"sku": "SKU-1"}}


MASKER = Masker()


def outcome(record: Any) -> Event | str:
    """What validation makes of one decoded record (as `EventStore.validate`): the event or the message."""
    try:
        if type(record) is EventRecord:
            event = event_from_record(record, now=NOW, limits=LIMITS)
        else:
            event = parse_event(record, now=NOW, limits=LIMITS)
        MASKER.mask_event(event)
        _check_json(event)
    except EventError as exc:
        return str(exc)
    return event


def both(records: list[Any]) -> tuple[list[Event | str], list[Event | str]]:
    body = orjson.dumps(records)
    fast, fast_errors = decode_events(body, "application/json")
    slow, slow_errors = parse_events(body, "application/json")
    assert fast_errors == slow_errors == {}
    return [outcome(r) for r in fast], [outcome(r) for r in slow]


def test_a_common_record_is_decoded_typed_and_becomes_the_same_event():
    records, errors = decode_events(orjson.dumps([GOOD]), "application/json")
    assert errors == {} and type(records[0]) is EventRecord
    event = outcome(records[0])
    assert isinstance(event, Event)
    assert (event.event_id, event.occurred_at, event.channel, event.status, event.latency_ms, event.attributes) == (
        "e-1", datetime(2026, 11, 22, 9, 12, tzinfo=UTC), "amazon", "ok", 12.0, {"sku": "SKU-1"})
    assert [event] == both([GOOD])[1]


@pytest.mark.parametrize(("change", "message"), [
    ({"channel": "Amazon "}, None),  # normalised by the dict path
    ({"event_id": 17}, None),  # an integer id is taken as text
    ({"order_id": ""}, None),  # empty optional text is absent
    ({"extra": {"deep": 1}}, None),  # unknown fields are ignored
    ({"status": None, "attributes": None}, None),
    ({"occurred_at": "2026-11-22T09:12:00"}, "occurred_at: \"2026-11-22T09:12:00\" has no UTC offset"),
    ({"occurred_at": "2025-01-01T00:00:00Z"}, "occurred_at: 2025-01-01T00:00:00+00:00 is older than the 30d accepted"),
    ({"occurred_at": "yesterday"}, 'occurred_at: "yesterday" is not an RFC 3339 timestamp'),
    ({"status": "fine"}, 'status: "fine" is not one of ok, error, retry, dead_letter'),
    ({"latency_ms": -1}, "latency_ms: -1 is not a finite number >= 0"),
    ({"latency_ms": True}, "latency_ms: expected a number, got bool"),
    ({"flow": "Order Flow"}, 'flow: "Order Flow" is not a slug'),
    ({"event_id": "a\x00b"}, "event_id: contains U+0000, which PostgreSQL cannot store"),
    ({"error_message": "x\x00"}, "error_message: contains U+0000, which PostgreSQL cannot store"),
    ({"correlation_id": "c" * 129}, "correlation_id: 129 characters, at most 128 allowed"),
    ({"stage": ""}, "stage: missing (required)"),
    ({"attributes": {"sku": ["a", "b", "c", "d"]}}, "attributes.sku: 4 values, more than the 3 allowed"),
    ({"attributes": {"ship_by": "soon"}}, 'attributes.ship_by: "soon" is not a deadline'),
    ({"attributes": []}, "attributes: expected an object, got list"),
    ({"payload": "text"}, "payload: expected an object or array, got str"),
    ({"channel": None}, "channel: missing (required unless the event carries an identity key"),
])
def test_every_other_shape_gets_the_dict_paths_answer(change, message):
    record = {**GOOD, **change}
    fast, slow = both([GOOD, record])
    assert fast == slow
    if message is None:
        assert isinstance(fast[1], Event)
    else:
        assert isinstance(fast[1], str) and fast[1].startswith(message)


def test_a_channel_less_event_with_an_identity_key_is_accepted_on_both_paths():
    record = {**GOOD, "channel": None, "order_id": "SO-1"}
    fast, slow = both([record])
    assert fast == slow and isinstance(fast[0], Event) and fast[0].channel is None


@pytest.mark.parametrize("body", [
    b'{"events": [' + orjson.dumps(GOOD) + b"]}",
    orjson.dumps(GOOD),  # one object
    orjson.dumps(GOOD) + b"\n" + orjson.dumps(GOOD),  # NDJSON without its content type
    b"[" + orjson.dumps(GOOD) + b', {"event_id": "\xff"}]',  # invalid UTF-8 in one record
    b"[" + orjson.dumps(GOOD) + b", {oops}]",
    b'{"events": 3}',
    b"  ",
])
def test_other_bodies_decode_as_the_dict_path_decodes_them(body):
    try:
        slow: Any = parse_events(body, "application/json")
    except Exception as exc:  # the same error, type and message
        with pytest.raises(type(exc), match=None) as caught:
            decode_events(body, "application/json")
        assert str(caught.value) == str(exc)
        return
    fast = decode_events(body, "application/json")
    assert fast[1] == slow[1]
    assert [outcome(r) if r is not None else None for r in fast[0]] == [
        outcome(r) if r is not None else None for r in slow[0]]


texts = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["amazon", "Ebay", "a.b", "x" * 130, "SO-1"]),
                  st.integers(-2, 2), st.booleans())
times = st.one_of(st.none(), st.sampled_from(["2026-11-22T09:12:00Z", "2026-11-22T09:12:00+02:00",
                                              "2026-11-22 09:12:00.5+00:00", "2026-11-22T09:12:00",
                                              "2026-11-22T14:00:00Z", "2026-10-01T00:00:00Z", "x"]))
values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False,
                      allow_infinity=False), st.text(max_size=4)),
                      lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=3), inner,
                                                                                             max_size=3)), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(record=st.fixed_dictionaries({}, optional={
    "event_id": texts, "occurred_at": times, "correlation_id": texts, "channel": texts, "flow": texts,
    "stage": texts, "order_id": texts, "system": texts, "error_code": texts, "error_message": texts,
    "status": st.one_of(st.none(), st.sampled_from(["ok", "error", "retry", "dead_letter", "OK", ""])),
    "latency_ms": st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False,
                                                                                    allow_infinity=False)),
    "attributes": st.one_of(values, st.fixed_dictionaries({}, optional={
        "sku": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5)),
        "order_id": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5)),
        "ship_by": st.sampled_from(["2026-12-01", "soon", "1999-01-01"]), "x": values})),
    "payload": values, "trace_id": texts, "span_id": texts,
}))
def test_any_record_gets_the_same_outcome_on_both_paths(record):
    fast, slow = both([GOOD, record])
    assert fast == slow
    assert fast[0] == slow[0] and isinstance(fast[0], Event)


def test_the_time_bounds_are_inclusive_on_both_paths():
    edges = [(NOW + timedelta(hours=1)).isoformat(), (NOW - timedelta(days=30)).isoformat()]
    fast, slow = both([{**GOOD, "occurred_at": edge} for edge in edges])
    assert fast == slow and all(isinstance(e, Event) for e in fast)


def test_an_integer_beyond_64_bits_gets_the_same_message_on_both_paths():
    body = b"[" + orjson.dumps(GOOD)[:-1] + b', "payload": {"n": 123456789012345678901}}]'
    slow, slow_errors = parse_events(body, "application/json")  # orjson refuses it: read record by record
    fast, fast_errors = decode_events(body, "application/json")
    assert slow_errors == fast_errors == {}  # orjson reads it as a float, on both paths
    assert outcome(fast[0]) == outcome(slow[0]) == (
        "payload.n: number 1.23457e+20 is outside ±2^63 and would lose digits; send it as a string")
