"""SLAs, open breaches, hop health, the funnel and reconciliation per business transaction.

Every system traces under its own correlation id and only the keys it knows; real ingest
(`collectors.store.EventStore`) links them by shared identity keys. Expected values are worked
out by hand from the events below.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from controltower import funnel
from metrics import compute, definitions, reconcile, rollups
from tests.metrics.helpers import NOW, ingest, minutes

DEFS = definitions.load()
DERIVED = ("sla_samples", "sla_open_items", "sla_rollup_minute", "sla_rollup_hour", "event_rollup_minute", "event_rollup_hour")


def event(cid: str, milestone: str, at: datetime, *, system: str, channel: str | None = None,
          order_id: str | None = None, n: int = 0, **attributes: Any) -> dict[str, Any]:
    flow, stage = milestone.split(".")
    record = {"event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
              "flow": flow, "stage": stage, "status": "ok", "system": system, "attributes": attributes}
    if channel is not None:
        record["channel"] = channel
    if order_id is not None:
        record["order_id"] = order_id
    return record


def table(engine, now=NOW, window=timedelta(hours=3)):
    with engine.connect() as conn:
        return {(r["sla"], r["channel"]): r for r in compute.sla_table(conn, DEFS, window=window, now=now)}


def rows(engine, name: str) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {name}")))  # noqa: S608 (constant names)


def business_of(engine, cid: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT business_id FROM transactions WHERE correlation_id = :c"), {"c": cid}).scalar_one()


def event_counts(engine, stage: str) -> dict[str, int]:
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT channel, sum(count) FROM event_rollup_minute WHERE stage = :s GROUP BY 1"), {"s": stage})
        return {ch: int(n) for ch, n in found}


@pytest.mark.parametrize("key", ["external_order_id", "order_id"])
def test_received_under_one_trace_and_posted_under_another_is_one_sample(engine, settings, key):
    """The marketplace trace (amazon) received it, the ERP's own trace (no channel) posted it,
    10 minutes later; they share only the order number: one sample, not an unposted order."""
    shared = {"order_id": "SO-4711"} if key == "order_id" else {"external_order_id": "113-4711"}
    ingest(engine, settings, [
        event("mkt-A", "order.received", NOW - minutes(40), system="marketplace", channel="amazon", **shared),
        event("erp-B", "order.erp_posted", NOW - minutes(30), system="erp", erp_document="4500001", **shared),
    ], now=NOW - minutes(1))
    assert business_of(engine, "mkt-A") == business_of(engine, "erp-B")
    rollups.refresh_rollups(engine, DEFS, NOW)
    row = table(engine)[("erp_posting", "amazon")]
    assert (row["count"], row["open_breaches"], row["within_target_ratio"]) == (1, 0, 1.0)
    assert row["p50_ms"] == pytest.approx(600_000, rel=0.01)
    bid = business_of(engine, "mkt-A")
    with engine.connect() as conn:
        samples = conn.execute(sa.text("SELECT sla, correlation_id, channel FROM sla_samples")).all()
        items = conn.execute(sa.text("SELECT sla, correlation_id, channel FROM sla_open_items")).all()
    assert [tuple(s) for s in samples] == [("erp_posting", bid, "amazon")]
    # open items, once each for the one business: unacknowledged (30 min for amazon), and the
    # ERP trace's next hop (warehouse release, not due yet) is measured on amazon too
    assert sorted(tuple(i) for i in items) == [("order_acknowledgement", bid, "amazon"), ("warehouse_release", bid, "amazon")]
    # the ERP's channel-less event is counted under its business's channel
    assert event_counts(engine, "erp_posted") == {"amazon": 1}


def _in_flight(engine, settings) -> None:
    """Two transactions in flight that nothing links yet, and one unrelated order (D)."""
    ingest(engine, settings, [
        event("mkt-A", "order.received", NOW - minutes(60), system="marketplace", channel="amazon",
              external_order_id="113-8", order_total="80.00"),
        event("erp-B", "order.erp_posted", NOW - minutes(50), system="erp", erp_document="4500002"),
        event("mkt-D", "order.received", NOW - minutes(58), system="marketplace", channel="amazon", external_order_id="113-9"),
        event("mkt-D", "order.erp_posted", NOW - minutes(57), system="middleware", channel="amazon", external_order_id="113-9"),
    ], now=NOW - minutes(30))
    rollups.refresh_rollups(engine, DEFS, NOW - minutes(25))


def _late_link(engine, settings) -> None:
    """The ERP re-sends its posting, now naming the marketplace order: A and B merge."""
    ingest(engine, settings, [
        event("erp-B", "order.erp_posted", NOW - minutes(12), system="erp", n=1, erp_document="4500002",
              external_order_id="113-8"),
    ], now=NOW - minutes(10))


def test_a_late_link_re_attributes_incrementally_and_equals_a_rebuild(engine, settings):
    _in_flight(engine, settings)
    before = table(engine, now=NOW - minutes(25))[("erp_posting", "amazon")]
    assert (before["count"], before["open_breaches"]) == (1, 1)  # D posted; A unposted (B unknown)
    with engine.connect() as conn:
        listed = compute.open_breaches(conn, sla="erp_posting", now=NOW - minutes(25))
    assert [(r["correlation_id"], r["correlation_ids"]) for r in listed] == [("mkt-A", ["mkt-A"])]
    assert event_counts(engine, "erp_posted") == {"amazon": 1, "unknown": 1}  # B's business has no channel yet

    _late_link(engine, settings)
    assert business_of(engine, "mkt-A") == business_of(engine, "erp-B")
    stats = rollups.refresh_rollups(engine, DEFS, NOW)
    # only the two re-keyed business ids were recomputed, per latency SLA (D was not touched)
    assert stats["transactions"] == 2 * len(DEFS.latency)
    after = table(engine)[("erp_posting", "amazon")]
    assert (after["count"], after["open_breaches"]) == (2, 0)
    with engine.connect() as conn:
        assert compute.open_breaches(conn, sla="erp_posting", now=NOW) == []
        latency = conn.execute(sa.text("SELECT latency_ms FROM sla_samples WHERE sla = 'erp_posting' AND correlation_id = :b"),
                               {"b": business_of(engine, "mkt-A")}).scalar_one()
        # the absorbed id left nothing behind
        ids = {r[0] for r in conn.execute(sa.text("SELECT correlation_id FROM sla_samples UNION SELECT correlation_id FROM sla_open_items"))}
    assert latency == 10 * 60_000
    assert ids <= {business_of(engine, "mkt-A"), business_of(engine, "mkt-D")}
    assert event_counts(engine, "erp_posted") == {"amazon": 3}  # B's two events moved off `unknown`

    incremental = {name: rows(engine, name) for name in DERIVED}
    rollups.rebuild(engine, DEFS, NOW)
    assert {name: rows(engine, name) for name in DERIVED} == incremental


def test_hop_health_and_the_funnel_count_business_transactions(engine, settings):
    _in_flight(engine, settings)
    with engine.connect() as conn:
        steps = {s["milestone"]: s["orders"] for s in funnel.funnel(conn, channel="amazon", day=NOW.date())}
        gap = funnel.funnel_gap(conn, channel="amazon", day=NOW.date(), reached="order.received", missing="order.erp_posted")
    assert (steps["order.received"], steps["order.erp_posted"]) == (2, 1)
    assert [(g["correlation_id"], g["external_order_id"]) for g in gap] == [("mkt-A", "113-8")]
    hops = {h["hop"]: h for h in compute.hop_health(DEFS, list(table(engine, now=NOW - minutes(25)).values())) if h["channel"] == "amazon"}
    assert (hops["ERP posting"]["volume"], hops["ERP posting"]["backlog"]) == (1, 1)

    _late_link(engine, settings)
    rollups.refresh_rollups(engine, DEFS, NOW)
    with engine.connect() as conn:
        steps = {s["milestone"]: s["orders"] for s in funnel.funnel(conn, channel="amazon", day=NOW.date())}
        gap = funnel.funnel_gap(conn, channel="amazon", day=NOW.date(), reached="order.received", missing="order.erp_posted")
    assert (steps["order.received"], steps["order.erp_posted"]) == (2, 2)  # two orders, not three traces
    assert gap == []
    hops = {h["hop"]: h for h in compute.hop_health(DEFS, list(table(engine).values())) if h["channel"] == "amazon"}
    assert (hops["ERP posting"]["volume"], hops["ERP posting"]["backlog"]) == (2, 0)


def test_open_breach_shows_the_canonical_member_and_every_member(engine, settings):
    """`zz-mkt` has the earliest first event (canonical); the business may be named by either."""
    ingest(engine, settings, [
        event("zz-mkt", "order.received", NOW - minutes(90), system="marketplace", channel="walmart", external_order_id="W-1"),
    ], now=NOW - minutes(80))
    ingest(engine, settings, [
        event("aa-wms", "fulfilment.allocated", NOW - minutes(70), system="wms", external_order_id="W-1", shipment_id="SHP-1"),
        event("aa-wms", "fulfilment.allocated", NOW - minutes(69), system="wms", n=1, external_order_id="W-1"),
    ], now=NOW - minutes(60))
    rollups.refresh_rollups(engine, DEFS, NOW)
    with engine.connect() as conn:
        listed = compute.open_breaches(conn, sla="erp_posting", now=NOW)
        stored = conn.execute(sa.text("SELECT correlation_id FROM sla_open_items WHERE sla = 'erp_posting'")).scalars().all()
    assert stored == [business_of(engine, "zz-mkt")]
    assert [(r["correlation_id"], r["correlation_ids"], r["channel"], r["age_ms"]) for r in listed] == [
        ("zz-mkt", ["zz-mkt", "aa-wms"], "walmart", 90 * 60_000)
    ]
    assert (listed[0]["last_milestone"], listed[0]["order_id"]) == ("fulfilment.allocated", None)


def test_reconcile_counts_business_transactions(engine, settings, tmp_path):
    day = NOW.date().isoformat()
    ingest(engine, settings, [
        # the marketplace's number reached us only on the ERP's (channel-less) trace
        event("mkt-1", "order.received", NOW - minutes(50), system="marketplace", channel="amazon", order_id="SO-1"),
        event("erp-1", "order.erp_posted", NOW - minutes(45), system="erp", order_id="SO-1", external_order_id="113-1"),
        # one order received under two traces (a re-delivery), absent from the report: one extra
        event("mkt-2", "order.received", NOW - minutes(40), system="marketplace", channel="amazon", external_order_id="113-2"),
        event("mw-2", "order.received", NOW - minutes(39), system="middleware", channel="amazon", external_order_id="113-2"),
    ], now=NOW - minutes(1))
    report = tmp_path / "amazon.txt"
    report.write_text(f"amazon-order-id\tpurchase-date\n113-1\t{day}T11:10:00+00:00\n")
    with engine.connect() as conn:
        result = reconcile.reconcile(conn, reconcile.read_report(report), channel="amazon",
                                     since=NOW - timedelta(hours=2), until=NOW)
        steps = {s["milestone"]: s["orders"] for s in funnel.funnel(conn, channel="amazon", day=NOW.date())}
    assert (result["matched"], result["missing"]) == (1, [])
    assert [(e["correlation_id"], e["correlation_ids"], e["external_order_id"]) for e in result["extra"]] == [
        ("mkt-2", ["mkt-2", "mw-2"], "113-2")
    ]
    assert (steps["order.received"], steps["order.erp_posted"]) == (2, 1)
