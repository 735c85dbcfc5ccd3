"""Reconciliation against a channel's own report, and the daily funnel."""

from __future__ import annotations

from datetime import timedelta

from controltower import funnel
from metrics import reconcile
from tests.metrics.helpers import NOW, ev, ingest, minutes


def test_report_vs_collected_lists_missing_and_extra(engine, settings, tmp_path):
    day = NOW.date().isoformat()
    records = []
    for i in range(1, 6):  # we collected 5 orders, 113-...-0000001..5
        records.append(ev(f"C{i}", "order.received", NOW - minutes(60 * i), channel="amazon", external_order_id=f"113-0000000-000000{i}"))
    records.append(ev("X1", "order.received", NOW - minutes(30), channel="shopify", external_order_id="113-0000000-0000009"))
    ingest(engine, settings, records)
    report = tmp_path / "amazon-orders.txt"
    rows = ["amazon-order-id\tpurchase-date"]
    for i in (1, 2, 3, 4, 7, 9):  # 5 missing from the report; 7 and 9 never reached us (9 only via shopify)
        rows.append(f"113-0000000-000000{i}\t{day}T0{i}:00:00+00:00")
    report.write_text("\n".join(rows) + "\n")
    parsed = reconcile.read_report(report)
    with engine.connect() as conn:
        result = reconcile.reconcile(conn, parsed, channel="amazon", since=NOW - timedelta(hours=6), until=NOW)
    assert [m["order"] for m in result["missing"]] == ["113-0000000-0000007", "113-0000000-0000009"]
    assert [m["line"] for m in result["missing"]] == [6, 7]
    assert [e["external_order_id"] for e in result["extra"]] == ["113-0000000-0000005"]
    assert result["matched"] == 4


def test_funnel_counts_distinct_orders_per_milestone(engine, settings):
    day_start = NOW.replace(hour=1)
    records = []
    for i in range(10):
        at = day_start + minutes(i)
        records.append(ev(f"F{i}", "order.received", at, channel="ebay", external_order_id=f"12-0000-{i}"))
        if i < 8:
            records.append(ev(f"F{i}", "order.acknowledged", at + minutes(1), channel="ebay"))
            records.append(ev(f"F{i}", "order.acknowledged", at + minutes(2), channel="ebay", n=1))  # twice
        if i < 5:
            records.append(ev(f"F{i}", "order.erp_posted", at + minutes(3), channel="ebay"))
    ingest(engine, settings, records)
    with engine.connect() as conn:
        steps = funnel.funnel(conn, channel="ebay", day=NOW.date())
        gap = funnel.funnel_gap(conn, channel="ebay", day=NOW.date(), reached="order.acknowledged", missing="order.erp_posted")
    assert [s["orders"] for s in steps[:3]] == [10, 8, 5]
    assert [g["external_order_id"] for g in gap] == ["12-0000-5", "12-0000-6", "12-0000-7"]
    assert [g["reached_at"] for g in gap] == [day_start + minutes(i + 1) for i in (5, 6, 7)]
    assert {g["status"] for g in gap} == {"ok"} and {g["last_milestone"] for g in gap} == {"order.acknowledged"}
