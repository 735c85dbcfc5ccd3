"""Orphans, duplicate orders and their SLA rows from hand-built business transactions (real Postgres).

Events go through the collectors' store, which links correlation IDs into business transactions
by their identity keys; events without `channel` are sent without it. The signals are refreshed
on their own (`signals.refresh`) where events have no channel: the rollups of those are the SLA
engine's part of #11, not this module's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from collectors.store import EventStore
from metrics import compute, definitions, jobs, signallists, signals
from tests.metrics.helpers import NOW, minutes

DEFS = definitions.load()
GRACE = timedelta(seconds=900)  # Settings.orphan_grace_seconds default
STRICT = definitions.loads("""\
slas:
  - {name: orphans, kind: orphans, max: 0, critical: 1}
  - {name: duplicate_orders, kind: duplicate_rate, max: 0.05, critical: 0.15, min_orders: 5}
""")


def event(cid: str, milestone: str, at, *, system: str | None, channel: str | None = None, order_id: str | None = None,
          n: int = 0, **attributes: Any) -> dict[str, Any]:
    flow, stage = milestone.split(".")
    record = {"event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
              "flow": flow, "stage": stage, "status": "ok", "attributes": attributes}
    for field, value in (("channel", channel), ("order_id", order_id), ("system", system)):
        if value is not None:
            record[field] = value
    return record


def ingest(engine, settings, records: list[dict[str, Any]], *, now) -> None:
    result = EventStore(engine, settings).ingest(records, source="test", now=now)
    assert not result.rejected, result.rejected


def business_of(engine, cid: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT business_id FROM transactions WHERE correlation_id = :c"), {"c": cid}).scalar_one()


def refresh(engine, settings, now, defs=DEFS):
    return signals.refresh(engine, defs, now, settings)


def listed(engine, now, **filters):
    with engine.connect() as conn:
        return signallists.orphans(conn, now=now, **filters)


def sla(engine, now, defs=DEFS, window=timedelta(hours=1)):
    with engine.connect() as conn:
        rows = compute.sla_table(conn, defs, window=window, now=now)
    return {(r["sla"], r["channel"]): r for r in rows if r["kind"] in signals.KINDS}


def test_an_erp_posting_no_channel_sent_is_an_orphan_after_the_grace_period_until_its_order_links(engine, settings):
    t0 = NOW
    ingest(engine, settings, [event("ERP-9", "order.erp_posted", t0, system="erp", erp_document="4500009",
                                    external_order_id="112-0000009")], now=t0 + timedelta(seconds=5))
    refresh(engine, settings, t0 + minutes(5))
    assert listed(engine, t0 + minutes(5)) == []
    refresh(engine, settings, t0 + GRACE - timedelta(seconds=1))
    assert listed(engine, t0 + GRACE) == [] and sla(engine, t0 + GRACE - timedelta(seconds=1)) == {}

    refresh(engine, settings, t0 + GRACE)  # the earliest event is now exactly as old as the grace period
    [orphan] = listed(engine, t0 + minutes(16))
    assert orphan == {
        "correlation_id": "ERP-9", "correlation_ids": ["ERP-9"], "order_id": None, "channel": "unknown", "system": "erp",
        "keys": {"erp_document": ["4500009"], "external_order_id": ["112-0000009"]}, "milestones": ["order.erp_posted"],
        "first_event_at": "2026-11-23T12:00:00.000Z", "orphaned_at": "2026-11-23T12:15:00.000Z", "age_ms": 16 * 60_000,
    }
    row = sla(engine, t0 + minutes(16))[("orphans", "unknown")]
    assert (row["value"], row["count"], row["open_breaches"], row["health"]) == (1, 1, 1, "warn")
    assert row["details"] == {"systems": {"erp": 1}} and row["oldest_breach_ms"] == 16 * 60_000
    assert row["reason"] == "orphans: 1 orphan (erp 1) without order.received or return.requested, oldest 16 min (max 0)"
    with engine.connect() as conn:
        assert signallists.orphan_counts(conn) == [{"system": "erp", "channel": "unknown", "orphans": 1}]

    # the channel's order arrives late and links to the posting by the marketplace order number
    t1 = t0 + minutes(20)
    ingest(engine, settings, [event("MKT-9", "order.received", t0 - minutes(3), system="marketplace", channel="amazon",
                                    order_id="SO-9", external_order_id="112-0000009")], now=t1)
    assert business_of(engine, "MKT-9") == business_of(engine, "ERP-9") == "ERP-9"  # linked on ingest
    refresh(engine, settings, t1 + minutes(1))
    assert listed(engine, t1 + minutes(1)) == []
    assert set(sla(engine, t1 + minutes(1))) == {("duplicate_orders", "amazon")}
    duplicate_row = sla(engine, t1 + minutes(1))[("duplicate_orders", "amazon")]
    assert (duplicate_row["count"], duplicate_row["value"], duplicate_row["health"]) == (1, 0.0, "ok")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT business_id, channel, received_at, erp_documents FROM signal_orders")).all()
    assert stored == [("ERP-9", "amazon", t0 - minutes(3), ["4500009"])]


def test_a_carrier_scan_for_an_unknown_tracking_number_counts_under_its_system(engine, settings):
    at = NOW - minutes(40)
    ingest(engine, settings, [
        event("CAR-1", "shipment.first_scan", at, system="carrier", tracking_number="1Z999AA10123456784"),
        # the earliest event names no system: the first one that does counts
        event("WMS-7", "return.received", at, system=None, channel="walmart", rma="RMA-7"),
        event("WMS-7", "return.inspected", at + minutes(5), system="wms", channel="walmart", n=1, rma="RMA-7"),
        # a return the channel requested: it has its origin
        event("RET-1", "return.requested", at, system="marketplace", channel="walmart", rma="RMA-1"),
        event("RET-1", "return.received", at + minutes(9), system="wms", channel="walmart", n=1, rma="RMA-1"),
        # no identity key at all (sku and location are reference keys): never an orphan
        event("INV-1", "inventory.published", at, system="erp", channel="amazon", sku="SKU-1", location="DC-EAST"),
        # too young still
        event("CAR-2", "shipment.first_scan", NOW - minutes(10), system="carrier", tracking_number="1Z000"),
    ], now=NOW - minutes(1))
    refresh(engine, settings, NOW)
    assert [(o["correlation_id"], o["system"], o["channel"]) for o in listed(engine, NOW)] == [
        ("CAR-1", "carrier", "unknown"), ("WMS-7", "wms", "walmart")]  # same time: by business id
    assert [o["correlation_id"] for o in listed(engine, NOW, system="carrier")] == ["CAR-1"]
    assert [o["correlation_id"] for o in listed(engine, NOW, channel="walmart")] == ["WMS-7"]
    assert [o["correlation_id"] for o in listed(engine, NOW, limit=1, offset=1)] == ["WMS-7"]
    rows = sla(engine, NOW)
    assert {k: (r["value"], r["details"]["systems"]) for k, r in rows.items() if k[0] == "orphans"} == {
        ("orphans", "unknown"): (1, {"carrier": 1}), ("orphans", "walmart"): (1, {"wms": 1})}
    # the young scan becomes an orphan at 12:05 without any new event: the tick graduates it
    refresh(engine, settings, NOW + minutes(5))
    assert sla(engine, NOW + minutes(5))[("orphans", "unknown")]["details"] == {"systems": {"carrier": 2}}
    with engine.connect() as conn:
        assert signallists.orphan_counts(conn) == [{"system": "carrier", "channel": "unknown", "orphans": 2},
                                               {"system": "wms", "channel": "walmart", "orphans": 1}]
    # an orphan counts in the windows it became one in (its earliest event + grace), then only in the list
    assert sla(engine, NOW + minutes(5), window=minutes(30))[("orphans", "unknown")]["value"] == 1
    assert sla(engine, NOW + minutes(5), window=minutes(31))[("orphans", "unknown")]["value"] == 2
    assert ("orphans", "unknown") not in sla(engine, NOW + minutes(4), window=minutes(28))
    assert sla(engine, NOW + minutes(5), STRICT)[("orphans", "unknown")]["health"] == "critical"


def _order(cid: str, channel: str, received, documents: list[str]) -> list[dict[str, Any]]:
    records = [event(cid, "order.received", received, system="marketplace", channel=channel, order_id=f"SO-{cid}",
                     external_order_id=f"EXT-{cid}")]
    for i, document in enumerate(documents):
        records.append(event(f"{cid}-erp{i}", "order.erp_posted", received + minutes(2 + i), system="erp",
                             channel=channel, external_order_id=f"EXT-{cid}", erp_document=document))
    return records


def test_an_order_with_two_erp_documents_is_a_duplicate_and_the_rate_is_per_channel_and_window(engine, settings):
    received = NOW - minutes(40)
    plan = {f"A{i}": ("amazon", [f"45000{i}"]) for i in range(8)}
    plan |= {"A8": ("amazon", ["4500081", "4500082"]),  # posted twice: a duplicate
             "A9": ("amazon", ["4500091", "n/a"]),  # a placeholder is no document
             "W0": ("walmart", ["4600001", "4600002", "4600003"])}
    plan |= {f"W{i}": ("walmart", [f"46000{i}0"]) for i in range(1, 5)}
    records = []
    for cid, (channel, documents) in plan.items():
        records += _order(cid, channel, received, documents)
    records += _order("OLD", "amazon", NOW - minutes(120), ["4700001", "4700002"])  # outside the 1 h window
    ingest(engine, settings, records, now=NOW - minutes(30))
    refresh(engine, settings, NOW)

    rows = sla(engine, NOW)
    amazon, walmart = rows[("duplicate_orders", "amazon")], rows[("duplicate_orders", "walmart")]
    assert (amazon["count"], amazon["value"], amazon["details"]) == (10, 0.1, {"orders": 10, "duplicates": 1})
    assert (walmart["count"], walmart["value"]) == (5, 0.2)
    assert amazon["health"] == walmart["health"] == "ok"  # fewer than min_orders (20)
    assert (amazon["flow"], amazon["kind"], amazon["threshold"]) == ("order", "duplicate_rate", 0.002)
    day = sla(engine, NOW, window=timedelta(hours=24))[("duplicate_orders", "amazon")]
    assert (day["count"], day["details"]["duplicates"]) == (11, 2)
    # windows that do not start on the hour: whole hours from the hourly counts, the edges exact
    later = NOW + minutes(25)
    assert sla(engine, later, window=minutes(70))[("duplicate_orders", "amazon")]["count"] == 10  # from 11:15
    assert ("duplicate_orders", "amazon") not in sla(engine, later, window=minutes(60))  # from 11:25
    three = sla(engine, later, window=timedelta(hours=3))[("duplicate_orders", "amazon")]  # 09:25 to 12:25
    assert (three["count"], three["details"]["duplicates"]) == (11, 2)
    with engine.connect() as conn:
        hours = conn.execute(sa.text("SELECT hour, channel, orders, duplicates FROM signal_order_hours ORDER BY 1, 2")).all()
    assert hours == [(NOW - minutes(120), "amazon", 1, 1), (NOW - minutes(60), "amazon", 10, 1),
                     (NOW - minutes(60), "walmart", 5, 1)]
    strict = sla(engine, NOW, STRICT)
    assert strict[("duplicate_orders", "amazon")]["health"] == "warn"
    assert strict[("duplicate_orders", "walmart")]["health"] == "critical"
    assert strict[("duplicate_orders", "walmart")]["reason"] == (
        "duplicate_orders: 1 of 5 orders posted to the ERP more than once (20.0%, max 5.0%)")
    assert not any(k[0] == "orphans" for k in rows)  # every ERP posting found its order

    with engine.connect() as conn:
        found = signallists.duplicates(conn)
        assert [d["correlation_id"] for d in signallists.duplicates(conn, channel="walmart")] == ["W0"]
    assert [d["correlation_id"] for d in found] == ["A8", "W0", "OLD"]  # newest first, then by business id
    assert found[0] == {
        "correlation_id": "A8", "correlation_ids": ["A8", "A8-erp0", "A8-erp1"], "order_id": "SO-A8", "channel": "amazon",
        "received_at": "2026-11-23T11:20:00.000Z", "erp_documents": ["4500081", "4500082"],
        "keys": {"erp_document": ["4500081", "4500082"], "external_order_id": ["EXT-A8"], "order_id": ["SO-A8"]},
    }
    assert found[1]["erp_documents"] == ["4600001", "4600002", "4600003"]


def test_a_late_link_merges_two_orphans_into_their_order_incrementally_as_a_rebuild_would(engine, settings):
    """Two ERP documents arrive as separate orphans, the order on its own; then the middleware's
    acknowledgement names the order and both documents: one business, a duplicate, no orphans."""
    t0 = NOW - minutes(60)
    ingest(engine, settings, [
        event("E1", "order.erp_posted", t0, system="erp", erp_document="D1"),
        event("E2", "order.erp_posted", t0 + minutes(1), system="erp", erp_document="D2"),
    ], now=t0 + minutes(2))
    refresh(engine, settings, t0 + minutes(30))
    assert [o["correlation_id"] for o in listed(engine, t0 + minutes(30))] == ["E2", "E1"]
    ingest(engine, settings, [event("M1", "order.received", t0 - minutes(1), system="marketplace", channel="ebay",
                                    external_order_id="X-1")], now=t0 + minutes(40))
    refresh(engine, settings, t0 + minutes(41))
    assert [o["correlation_id"] for o in listed(engine, t0 + minutes(41))] == ["E2", "E1"]
    ingest(engine, settings, [event("MW-1", "order.acknowledged", t0 + minutes(44), system="middleware", channel="ebay",
                                    external_order_id="X-1", erp_document=["D1", "D2"])], now=t0 + minutes(45))
    refresh(engine, settings, t0 + minutes(46))

    def state():
        with engine.connect() as conn:
            return (conn.execute(sa.text("SELECT * FROM signal_orphans ORDER BY 1")).all(),
                    conn.execute(sa.text("SELECT * FROM signal_orders ORDER BY 1")).all(),
                    conn.execute(sa.text("SELECT * FROM signal_order_hours ORDER BY 1, 2")).all())

    incremental = state()
    business = business_of(engine, "M1")
    assert incremental == ([], [(business, "ebay", t0 - minutes(1), ["D1", "D2"])], [(t0 - minutes(60), "ebay", 1, 1)])
    with engine.connect() as conn:
        [duplicate] = signallists.duplicates(conn)
    assert (duplicate["correlation_id"], duplicate["correlation_ids"]) == ("M1", ["M1", "E1", "E2", "MW-1"])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM metrics_watermarks"))
    refresh(engine, settings, t0 + minutes(46))
    assert state() == incremental


def test_changed_origins_or_grace_rebuild_the_signals(engine, settings):
    ingest(engine, settings, [event("R1", "return.received", NOW - minutes(50), system="wms", channel="shopify",
                                    rma="RMA-1")], now=NOW - minutes(49))
    refresh(engine, settings, NOW)
    assert [o["correlation_id"] for o in listed(engine, NOW)] == ["R1"]
    received_is_origin = definitions.loads(
        "slas:\n  - {name: orphans, kind: orphans, max: 0, origins: [order.received, return.received]}\n")
    refresh(engine, settings, NOW, received_is_origin)
    assert listed(engine, NOW) == []
    refresh(engine, settings.with_(orphan_grace_seconds=3600), NOW)
    assert listed(engine, NOW) == []  # 50 minutes old: within an hour's grace
    refresh(engine, settings.with_(orphan_grace_seconds=600), NOW)
    assert [o["orphaned_at"] for o in listed(engine, NOW)] == ["2026-11-23T11:20:00.000Z"]
    with engine.connect() as conn:
        marks = conn.execute(sa.text("SELECT name FROM metrics_watermarks WHERE name LIKE 'signals:%'")).scalars().all()
    assert marks == [signals.watermark_name(DEFS, settings.with_(orphan_grace_seconds=600))]


def test_hubs_are_listed_widest_first(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO identity_hubs (kind, value, fanout, first_seen_at, last_seen_at) VALUES"
            " ('erp_document', 'DEFAULT', 57, :a, :b), ('tracking_number', 'PENDING-LABEL', 312, :a, :b),"
            " ('order_id', 'SO-TEST', 21, :a, :a)"), {"a": NOW - minutes(90), "b": NOW})
    with engine.connect() as conn:
        all_hubs = signallists.hubs(conn)
        assert signallists.hubs(conn, kind="order_id") == [{
            "kind": "order_id", "value": "SO-TEST", "fanout": 21,
            "first_seen_at": "2026-11-23T10:30:00.000Z", "last_seen_at": "2026-11-23T10:30:00.000Z"}]
        assert [h["value"] for h in signallists.hubs(conn, limit=1, offset=1)] == ["DEFAULT"]
    assert [(h["kind"], h["value"], h["fanout"]) for h in all_hubs] == [
        ("tracking_number", "PENDING-LABEL", 312), ("erp_document", "DEFAULT", 57), ("order_id", "SO-TEST", 21)]


def test_the_metrics_job_stores_the_signal_rows_and_they_colour_the_channel(engine, settings):
    defs = definitions.load()
    definitions.publish(engine, defs)
    ingest(engine, settings, [
        # an ERP that knows the channel posts an order shopify never sent
        event("ERP-1", "order.erp_posted", NOW - minutes(30), system="erp", channel="shopify", erp_document="4500001"),
        event("S-1", "order.received", NOW - minutes(30), system="marketplace", channel="shopify", order_id="SO-1"),
    ], now=NOW - minutes(29))
    jobs.refresh(engine, defs, NOW, settings)
    stored = {(r["sla"], r["channel"], r["window"]): r for r in jobs.stored_table(engine, "1h")}
    orphan = stored[("orphans", "shopify", "1h")]
    assert (orphan["value"], orphan["health"], orphan["details"]) == (1, "warn", {"systems": {"erp": 1}})
    assert stored[("duplicate_orders", "shopify", "1h")]["value"] == 0
    with engine.connect() as conn:
        table = compute.sla_table(conn, defs, window=timedelta(hours=1), now=NOW)
        units = dict(conn.execute(sa.text(
            "SELECT name, definition ->> 'unit' FROM sla_definitions WHERE name IN ('orphans', 'duplicate_orders')")).all())
    assert units == {"orphans": "count", "duplicate_orders": "ratio"}
    health = compute.channel_health(table)["shopify"]
    assert health["health"] == "warn" and any(r.startswith("orphans: 1 orphan (erp 1)") for r in health["reasons"])
    # the row has every field of the SLA engine's rows
    other = next(r for r in table if r["kind"] == "rate")
    assert {k for r in table if r["kind"] in signals.KINDS for k in r} == set(other)


def test_rows_of_business_transactions_gone_by_retention_are_swept_hourly(engine, settings):
    from controltower import retention

    keep_two_hours = settings.with_(retention_transactions=7200)
    ingest(engine, settings, [*_order("OLD", "amazon", NOW - minutes(180), ["D1", "D2"]),
                              event("ERP-X", "order.erp_posted", NOW - minutes(180), system="erp", erp_document="DX")],
           now=NOW - minutes(170))
    refresh(engine, keep_two_hours, NOW)

    def counts():
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
                         for t in ("signal_orphans", "signal_orders", "signal_order_hours"))

    assert counts() == (1, 1, 1)
    retention.apply(engine, keep_two_hours, NOW)  # their last events are three hours old
    assert refresh(engine, keep_two_hours, NOW + minutes(5))["signal_rows_swept"] == 0  # not before the next hour
    assert counts() == (1, 1, 1)
    assert refresh(engine, keep_two_hours, NOW + minutes(61))["signal_rows_swept"] == 2
    assert counts() == (0, 0, 0)


def test_a_hub_from_real_ingest_is_listed_and_is_no_erp_document(engine, settings):
    """21 ERP postings carry the ERP's default document number besides their own: the default
    becomes a hub (fan-out limit 20), links nothing, and makes no order a duplicate."""
    records = []
    for i in range(21):
        records += [event(f"O{i}", "order.received", NOW - minutes(50), system="marketplace", channel="walmart",
                          external_order_id=f"X-{i}"),
                    event(f"E{i}", "order.erp_posted", NOW - minutes(45), system="erp",
                          external_order_id=f"X-{i}", erp_document=[f"D{i}", "DEFAULT"])]
    ingest(engine, settings, records, now=NOW - minutes(44))
    refresh(engine, settings, NOW)
    with engine.connect() as conn:
        hubs = signallists.hubs(conn)
        assert signallists.duplicates(conn) == []
        documents = conn.execute(sa.text("SELECT DISTINCT erp_documents FROM signal_orders ORDER BY 1")).scalars().all()
    assert [(h["kind"], h["value"], h["fanout"]) for h in hubs] == [("erp_document", "DEFAULT", 21)]
    assert documents == [[f"D{i}"] for i in sorted(range(21), key=str)]
    assert business_of(engine, "O3") == business_of(engine, "E3") != business_of(engine, "E4")  # the hub linked nothing
    assert listed(engine, NOW) == []
    assert sla(engine, NOW)[("duplicate_orders", "walmart")]["value"] == 0


def test_a_placeholder_the_linker_refuses_is_no_erp_document_whatever_wraps_it(engine, settings):
    """Found by review: the linker reads "n/a" behind a zero-width space, a tab or a no-break space as
    a placeholder (identity.refusal), the duplicate count only trimmed spaces: such an order was
    counted a duplicate of itself. Each of these orders has one real document."""
    from controltower import identity

    received = NOW - minutes(40)
    wrapped = ["n/a\u200b", "\tN/A", "none\u00a0", "\ufeffNULL", "\u2060-\u2060", "test\n"]
    assert all(identity.refusal(w) == "placeholder" for w in wrapped)
    records = []
    for i, placeholder in enumerate(wrapped):
        records += _order(f"P{i}", "amazon", received, [f"45100{i}", placeholder])
    records += _order("D0", "amazon", received, ["4520001", "4520002"])  # a real duplicate stays one
    records += _order("D1", "amazon", received, ["4530001", "n / a"])  # not a placeholder: a document
    ingest(engine, settings, records, now=NOW - minutes(30))
    refresh(engine, settings, NOW)
    with engine.connect() as conn:
        assert sorted(d["correlation_id"] for d in signallists.duplicates(conn)) == ["D0", "D1"]
    assert sla(engine, NOW)[("duplicate_orders", "amazon")]["details"] == {"orders": 8, "duplicates": 2}
