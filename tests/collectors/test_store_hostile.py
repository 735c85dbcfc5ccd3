"""Generated hostile records through the store: a record's content never raises out of ingest
(it is rejected with a reason instead), every record is accounted for, and the good neighbours
in the same batch always land, exactly once."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from collectors.store import EventStore
from controltower.masking import Masker
from tests.collectors.test_store import NOW, ev
from tests.conftest import truncate_all

# Unicode that survives JSON: confusables, zero-width, bidi controls, full-width, astral planes,
# and lone surrogates (a JSON "\ud800" escape decodes to one).
ODD_CHARS = ["\u200b", "\u200d", "\ufeff", "\u202e", "\u2066", "ｏｒｄｅｒ", "Ꭺ", "а", "ο", "𝟘", "🚚",
             "\U0010fffd", "\ud800", "\udfff", "\x00", "\x7f", "'; DROP TABLE events; --", "%00", "\\u0000"]
odd_text = st.lists(st.one_of(st.sampled_from(ODD_CHARS), st.text(max_size=6)), max_size=6).map("".join)
extreme_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 1e308, -1e308, 5e-324, -0.0, 0.0, math.inf, -math.inf, math.nan]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "Infinity", "-0", "1e400", "0x10", "１２３"]),
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
extreme_dates = st.one_of(
    st.datetimes(timezones=offsets).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no offset
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31",
                     "2026-02-30", "2026-11-22T25:00:00Z", "2026-11-22T09:00:00+24:00", "", "now", "１９７０-01-01"]),
    st.integers(min_value=-(10**20), max_value=10**20),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), extreme_numbers, odd_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["event_id", "correlation_id", "order_id", "occurred_at", "channel", "flow", "stage", "status",
          "system", "latency_ms", "error_code", "error_message", "attributes", "payload"]
ATTRIBUTE_KEYS = ["sku", "tracking_number", "expected_ship_date", "external_order_id", "note", "ｓｋｕ", "sku\u200b"]


@st.composite
def hostile_record(draw: st.DrawFn, index: int) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)  # not even an object
    record: dict[str, Any] = ev(f"h{index}", draw(st.integers(-60 * 24 * 40, 120)), "received", cid=f"H{index}")
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        record[name] = draw(st.one_of(odd_text, extreme_numbers, extreme_dates, json_values))
    attributes = draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS),
                                      st.one_of(extreme_dates, extreme_numbers, odd_text,
                                                st.lists(st.one_of(odd_text, extreme_numbers), max_size=5)),
                                      max_size=3))
    if attributes and draw(st.booleans()):
        record["attributes"] = attributes
    return record


@st.composite
def batches(draw: st.DrawFn) -> list[Any]:
    n = draw(st.integers(1, 6))
    records = [draw(hostile_record(i)) for i in range(n)]
    # the same id again with changed content (a conflict), or identical (a duplicate)
    resend = ev("good-1", 1, draw(st.sampled_from(["received", "shipped"])), cid="GOOD",
                attributes={"note": draw(odd_text)})
    return [ev("good-1", 1, "received", cid="GOOD"), *records, resend, ev("good-2", 2, "acknowledged", cid="GOOD")]


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(records=batches(), masked=st.booleans())
def test_hostile_records_never_escape_ingest_and_good_neighbours_land(engine, settings, records, masked):
    truncate_all(engine)
    store = EventStore(engine, settings, Masker() if masked else None)
    result = store.ingest(records, source="api", now=NOW)
    assert result.accepted + result.duplicates + len(result.rejected) == len(records)
    assert all(isinstance(reason, str) and reason for _, reason in result.rejected)
    rejected = {i for i, _ in result.rejected}
    assert {0, len(records) - 1} & rejected == set()
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
        good = conn.execute(sa.text("SELECT event_id, stage FROM events WHERE correlation_id = 'GOOD' ORDER BY 1")).all()
        tx = conn.execute(sa.text("SELECT event_count FROM transactions WHERE correlation_id = 'GOOD'")).scalar()
    assert stored == result.accepted
    assert [tuple(r) for r in good] == [("good-1", "received"), ("good-2", "acknowledged")]  # first arrival wins
    assert tx == 2
    # sending the whole batch again stores nothing and rejects the same records
    again = store.ingest(records, source="api", now=NOW)
    assert again.accepted == 0 and {i for i, _ in again.rejected} == rejected


def test_extreme_values_are_stored_or_rejected_by_field(engine, settings):
    store = EventStore(engine, settings)
    records = [
        ev("n1", 0, "received", attributes={"big": 10**30}),
        ev("n2", 0, "received", attributes={"big": 1e308, "neg_zero": -0.0, "tiny": 5e-324, "nan": "NaN"}),
        ev("n3", 0, "received", latency_ms=1e308),
        ev("n4", 0, "received", latency_ms=math.nan),
        ev("n5", 0, "received", correlation_id="C\u200b1\u202e"),
        ev("n6", 0, "received", order_id="\ud800"),
    ]
    result = store.ingest(records, source="api", now=NOW)
    reasons = dict(result.rejected)
    assert sorted(reasons) == [0, 3, 5]
    assert reasons[0].startswith("attributes: ") and "64-bit" in reasons[0]
    assert reasons[3].startswith("latency_ms: ")
    assert reasons[5] == "order_id: not valid UTF-8"
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT attributes FROM events WHERE event_id = 'n2'")).scalar()
        cid = conn.execute(sa.text("SELECT correlation_id FROM events WHERE event_id = 'n5'")).scalar()
    assert float(row.pop("big")) == 1e308 and float(row.pop("tiny")) == 5e-324  # jsonb keeps them as numeric
    assert row == {"neg_zero": 0, "nan": "NaN"}
    assert cid == "C\u200b1\u202e"  # ids are stored verbatim, never normalised into another id


def test_times_with_extreme_offsets_are_one_instant(engine, settings):
    store = EventStore(engine, settings)
    at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    same = [at.astimezone(timezone(timedelta(hours=h))).isoformat() for h in (-12, 0, 14)]
    records = [ev("t1", 0, "received") | {"occurred_at": text} for text in same]
    result = store.ingest(records, source="api", now=NOW)
    assert (result.accepted, result.duplicates, result.conflicts) == (1, 2, 0)
