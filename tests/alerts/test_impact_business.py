"""Alert impact per business transaction: one order at risk and one amount per business, read
from whichever member's event reached the impact milestone (real ingest links the traces)."""

from __future__ import annotations

from datetime import timedelta

from alerts.derived import impact
from metrics import definitions, rollups
from tests.metrics.helpers import NOW, ingest


def _event(cid, stage, at, *, system, channel=None, n=0, **attributes):
    record = {"event_id": f"{cid}:{stage}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid, "flow": "order",
              "stage": stage, "status": "ok", "system": system, "attributes": attributes}
    if channel:
        record["channel"] = channel
    return record


def test_impact_counts_and_sums_once_per_business_transaction(engine, settings):
    t0 = NOW - timedelta(hours=2)
    ingest(engine, settings, [
        # order 1: received by the marketplace's trace (with its total), its other traces carry no total
        _event("zz-mkt-1", "received", t0, system="marketplace", channel="walmart", external_order_id="W-1", order_total="100.50"),
        _event("aa-mw-1", "received", t0 + timedelta(minutes=1), system="middleware", channel="walmart", external_order_id="W-1"),
        _event("aa-wms-1", "validated", t0 + timedelta(minutes=2), system="wms", external_order_id="W-1"),
        # order 2: one trace
        _event("zz-mkt-2", "received", t0 + timedelta(minutes=3), system="marketplace", channel="walmart",
               external_order_id="W-2", order_total="20"),
    ], now=t0 + timedelta(minutes=5))
    defs = definitions.load()
    rollups.refresh_rollups(engine, defs, NOW)
    with engine.connect() as conn:
        row = {"sla": "erp_posting", "channel": "walmart", "open_breaches": None}
        # two unposted orders, not four traces; 100.50 counted once (the earliest receipt's event)
        assert impact(conn, row, NOW) == {"orders_at_risk": 2, "order_value_at_risk": 120.5, "orders_priced": 2}
