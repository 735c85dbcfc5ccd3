"""Index rows derived from events, and the seen-rows cache shared by the collector's threads."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from collectors.rows import SeenCache, key_rows, milestone_rows
from controltower.event import Event

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class SlowKey(str):
    """A key whose hashing runs Python code, so the interpreter may switch threads mid-lookup
    (as it may anywhere on a free-threaded build): it exposes check-then-read races."""

    __slots__ = ()

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def test_cache_lookups_survive_concurrent_clears():
    cache = SeenCache(limit=50)  # every remember() below overflows it and starts a new dict
    rows = {(SlowKey("C1"), SlowKey(f"m{i}")): i for i in range(40)}
    errors: list[BaseException] = []
    stop = time.monotonic() + 3
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def read() -> None:
        while time.monotonic() < stop and not errors:
            try:
                cache.fresh(rows)
            except Exception as exc:  # the regression: KeyError → a spurious 503 in the collector
                errors.append(exc)

    def write() -> None:
        while time.monotonic() < stop and not errors:
            cache.remember(rows)

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_cache_keeps_the_earliest_and_skips_what_cannot_change_anything():
    cache = SeenCache()
    cache.remember({("a",): 5})
    cache.remember({("a",): 7})  # a later commit with a later value: the earlier stays
    assert cache.fresh({("a",): 6, ("b",): 9}) == {("b",): 9}
    assert cache.fresh({("a",): 4}) == {("a",): 4}
    cache.clear()
    assert cache.fresh({("a",): 6}) == {("a",): 6}


def e(eid: str, minutes: int, stage: str, status: str = "ok", **attributes: object) -> Event:
    return Event(event_id=eid, occurred_at=T0 + timedelta(minutes=minutes), correlation_id="C1", channel="ebay",
                 flow="order", stage=stage, status=status, order_id="SO-1", attributes=dict(attributes))


def test_milestone_and_key_rows_take_the_earliest():
    events = [e("2", 5, "received"), e("1", 3, "received"), e("3", 1, "posted", status="error"),
              e("4", 9, "posted", sku=["A", "B", 7, True, None, {"x": 1}], tracking_number="1Z")]
    assert milestone_rows(events) == {("C1", "order.received"): (T0 + timedelta(minutes=3), "ebay"),
                                      ("C1", "order.posted"): (T0 + timedelta(minutes=9), "ebay")}
    assert key_rows(events, ("sku", "tracking_number")) == {
        ("SO-1", "order_id", "C1"): T0 + timedelta(minutes=1),
        ("A", "sku", "C1"): T0 + timedelta(minutes=9),
        ("B", "sku", "C1"): T0 + timedelta(minutes=9),
        ("7", "sku", "C1"): T0 + timedelta(minutes=9),
        ("1Z", "tracking_number", "C1"): T0 + timedelta(minutes=9),
    }


def test_index_rows_is_key_rows_and_identity_rows_in_one_pass():
    """The write path's one-pass walk gives exactly what the two separate ones give, on events
    mixing every value shape: lists, ints, floats (under identity and reference kinds), bools,
    placeholders, empty and over-long values, an order id under attributes and as the field."""
    from collectors.rows import identity_rows, index_rows

    linking = frozenset({"order_id", "erp_document", "tracking_number"})
    kinds = ("sku", "tracking_number", "location")
    shapes = [
        {"sku": ["A", "B", 7, True, None, {"x": 1}], "tracking_number": "1Z"},
        {"erp_document": 4500001, "tracking_number": 1.5, "sku": 2.5, "location": "DC-1"},
        {"order_id": "SO-9", "erp_document": ["n/a", "", "D-1", "D-1"], "tracking_number": "x" * 300},
        {"tracking_number": [None, False, 10**30], "location": ""},
        {},
    ]
    events = []
    for i, attrs in enumerate(shapes * 3):
        ev = e(str(i), 10 - i, "received", **attrs)
        ev.correlation_id = f"C{i % 4}"
        ev.order_id = ["SO-1", None, "", "unknown"][i % 4]
        events.append(ev)
    keys, links, refused = index_rows(events, kinds, linking)
    assert keys == key_rows(events, kinds, linking)
    assert (links, refused) == identity_rows(events, linking)
    assert ("D-1", "erp_document", "C2") in links and refused["placeholder"] > 0 and refused["too_long"] > 0
