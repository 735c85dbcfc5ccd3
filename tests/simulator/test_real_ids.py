"""The simulator's real-ID mode: each system its own ids and only its keys, joined by the keys alone.

Pure tests over the generated stream (no database): the expected businesses come from the
simulator's own knowledge (`SimEvent.business`), and the test joins records by their identity
keys with a union-find written here, so a record that says too little (cannot be joined) or
too much (joins two orders) fails.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from controltower.identity import DEFAULT_IDENTITY_KEYS
from simulator.faults import FaultPlan, parse_faults
from simulator.model import ERP_DUPLICATE_SHARE, Simulation
from simulator.records import SimEvent
from simulator.truth import GroundTruth

START = datetime(2026, 3, 2, 8, tzinfo=UTC).timestamp()
HOURS = 30  # long enough for deliveries (~1.5 d after shipping start to show) and returns to start
AMAZON = re.compile(r"^\d{3}-\d{7}-\d{7}$")
SAP_DOCUMENT = re.compile(r"^4[56]\d{8}$")
UPS = re.compile(r"^1Z[0-9A-Z]{16}$")


def events(
    ids: str, seed: int = 7, hours: float = HOURS, faults: tuple[str, ...] = (), rate_scale: float = 1.0
) -> list[SimEvent]:
    plan = FaultPlan.resolve(parse_faults(faults), START)
    sim = Simulation(seed=seed, start=START, faults=plan, ids=ids, rate_scale=rate_scale)
    return [e for chunk in sim.hours(START + hours * 3600) for e in chunk]


@pytest.fixture(scope="module")
def real() -> list[SimEvent]:
    return events("real")


@pytest.fixture(scope="module")
def shared() -> list[SimEvent]:
    return events("shared")


def keys_of(record: dict) -> dict[str, str]:
    values = {"order_id": record.get("order_id"), **record.get("attributes", {})}
    return {k: str(values[k]) for k in DEFAULT_IDENTITY_KEYS if values.get(k) is not None}


def joined_by_keys(stream: list[SimEvent]) -> list[set[str]]:
    """Correlation ids joined by sharing a value of one identity key kind (transitively)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    first_holder: dict[tuple[str, str], str] = {}
    for e in stream:
        cid = e.record["correlation_id"]
        find(cid)
        for kind, value in keys_of(e.record).items():
            other = first_holder.setdefault((kind, value), cid)
            parent[find(cid)] = find(other)
    groups: dict[str, set[str]] = defaultdict(set)
    for cid in parent:
        groups[find(cid)].add(cid)
    return sorted(groups.values(), key=min)


def by_business(stream: list[SimEvent]) -> dict[str, list[SimEvent]]:
    out: dict[str, list[SimEvent]] = defaultdict(list)
    for e in stream:
        out[e.business_key].append(e)
    return out


def test_real_ids_are_deterministic_and_unique(real):
    assert [e.record for e in real] == [e.record for e in events("real")]
    assert len({e.record["event_id"] for e in real}) == len(real) > 3000
    times = [e.at for e in real]
    assert times == sorted(times)


def test_both_modes_share_one_timeline(shared, real):
    """Same orders, same milestones at the same times: only the ids and keys differ (plus the
    real world's second ERP postings and orphans, which shared mode does not send)."""
    orders = {e.business_key for e in shared if e.milestone == "order.received"}
    second = duplicate_cids(real)

    def timeline(stream):
        return sorted((e.business_key, e.milestone, e.at) for e in stream
                      if e.business_key in orders and e.record["correlation_id"] not in second)

    assert timeline(real) == timeline(shared) and len(timeline(shared)) > 2000
    assert all(e.business_key == e.record["correlation_id"] for e in shared)
    assert sum(e.business_key != e.record["correlation_id"] for e in real) > 1000


def duplicate_cids(stream: list[SimEvent]) -> set[str]:
    """Correlation ids of the second ERP postings (a document in the 46… range)."""
    return {e.record["correlation_id"] for e in stream
            if e.milestone == "order.erp_posted" and str(e.record["attributes"].get("erp_document", "")).startswith("46")}


def test_identity_keys_alone_rebuild_every_business_transaction(real):
    """Joining correlation ids by shared identity keys gives exactly the orders the simulator
    made: every hop reachable (order → ERP document → shipment → tracking), no two orders joined,
    and no value on more correlation ids than the product's fan-out limit (20)."""
    expected = sorted(({e.record["correlation_id"] for e in es} for es in by_business(real).values()), key=min)
    assert joined_by_keys(real) == expected
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in real:
        for kind, value in keys_of(e.record).items():
            holders[(kind, value)].add(e.record["correlation_id"])
    assert max(len(c) for c in holders.values()) <= 20
    members = [len({e.record["correlation_id"] for e in es}) for es in by_business(real).values()]
    assert max(members) >= 6  # connector, ERP, WMS, confirmation, carrier, ... under their own ids


def test_each_system_says_only_what_it_knows(real):
    orders = {b: es for b, es in by_business(real).items() if any(e.milestone == "order.received" for e in es)}
    seen_systems: set[str] = set()
    for business, es in orders.items():
        for e in es:
            r, system = e.record, e.record["system"]
            seen_systems.add(system)
            attrs = r.get("attributes", {})
            if e.milestone in ("order.received", "order.validated", "order.acknowledged"):
                assert r["correlation_id"] == business and r["channel"] and r["order_id"].startswith("SO-")
            elif system == "erp":
                assert r["correlation_id"] != business and re.fullmatch(r"[0-9A-F]{32}", r["correlation_id"])
                assert r["channel"] and r["order_id"].startswith("SO-")
                if e.milestone != "return.refund_posted":
                    assert SAP_DOCUMENT.match(attrs["erp_document"])
            elif system == "wms":
                assert r["correlation_id"].startswith("WMS-") and "order_id" not in r
                if e.milestone.startswith("fulfilment."):
                    assert SAP_DOCUMENT.match(attrs["erp_document"])
                else:  # the returns desk: the order number and the RMA
                    assert "rma" in attrs and "erp_document" not in attrs
                assert ("channel" in r) == (attrs["location"] != "3pl-west")
                if e.milestone == "fulfilment.shipped":
                    assert attrs["shipment_id"].startswith("SHP-") and attrs["tracking_number"]
            elif system == "carrier":
                assert "channel" not in r and "order_id" not in r
                assert set(attrs) == {"tracking_number", "carrier"}
                assert r["correlation_id"].startswith(attrs["carrier"] + "-")
            elif e.milestone == "shipment.shipment_confirmed":
                assert r["correlation_id"] != business and r["channel"]
                assert r["order_id"].startswith("SO-") and attrs["tracking_number"]
    assert seen_systems == {"marketplace", "pos", "middleware", "erp", "wms", "carrier"}
    received = [e.record for e in real if e.milestone == "order.received"]
    amazon = [r["attributes"]["external_order_id"] for r in received if r["channel"] == "amazon"]
    assert amazon and all(AMAZON.match(x) for x in amazon)
    ups = [e.record["attributes"]["tracking_number"] for e in real
           if e.record["system"] == "carrier" and e.record["attributes"]["carrier"] == "ups"]
    assert ups and all(UPS.match(x) for x in ups)


def test_split_shipments_and_returns_reference_the_order(real):
    orders = by_business(real)
    split = [es for es in orders.values()
             if len({e.record["attributes"]["tracking_number"] for e in es if e.milestone == "fulfilment.shipped"}) == 2]
    assert split
    for es in split:
        shipped = [e.record for e in es if e.milestone == "fulfilment.shipped"]
        assert len({r["attributes"]["shipment_id"] for r in shipped}) == 2
        assert len({r["correlation_id"] for r in shipped}) == 1  # one warehouse order, two parcels
        scans = [e.record for e in es if e.milestone == "shipment.first_scan"]
        assert len({r["correlation_id"] for r in scans}) == len(scans) <= 2  # one carrier id per parcel
        confirmations = [e.record for e in es if e.milestone == "shipment.shipment_confirmed"]
        assert len({r["correlation_id"] for r in confirmations}) == len(confirmations) <= 2
    both = [es for es in split if sum(e.milestone == "shipment.first_scan" for e in es) == 2]
    assert both  # some split orders were scanned twice within the window
    weeks = events("real", hours=11 * 24, rate_scale=0.2)  # a return comes back about 9 days later
    orders = by_business(weeks)
    returns = [e for e in weeks if e.record["flow"] == "return"]
    assert returns
    for e in returns:
        r = e.record
        [order] = [o.record for o in orders[e.business_key] if o.milestone == "order.received"]
        assert r["order_id"] == order["order_id"] and r["correlation_id"] != order["correlation_id"]
        assert r["attributes"]["rma"].startswith("RMA-")
        if r["stage"] == "refund_posted":
            assert r["attributes"]["return_id"].startswith("R") and r["system"] == "erp"
    expected = sorted(({e.record["correlation_id"] for e in es} for es in orders.values()), key=min)
    assert joined_by_keys(weeks) == expected  # the return joins its order by the order number


def test_erp_duplicates_are_one_order_under_two_documents(real):
    truth = GroundTruth()
    for e in real:
        truth.observe(e)
    duplicates = truth.duplicate_orders()
    received = len(truth.received)
    assert 0 < len(duplicates) < 4 * ERP_DUPLICATE_SHARE * received
    orders = by_business(real)
    for business in duplicates:
        posted = [e.record for e in orders[business] if e.milestone == "order.erp_posted"]
        documents = sorted(r["attributes"]["erp_document"] for r in posted)
        assert len(posted) == 2 and documents[0][:2] == "45" and documents[1][:2] == "46"
        assert documents[0][2:] == documents[1][2:]
        assert len({r["correlation_id"] for r in posted}) == 2
        assert {r["order_id"] for r in posted} == {orders[business][0].record["order_id"]}
    assert truth.to_json(start=START, end=START + HOURS * 3600, seed=7, faults=[])["duplicate_order_count"] == len(duplicates)


def test_orphans_link_to_nothing_and_the_truth_counts_them(real):
    end = START + HOURS * 3600
    truth = GroundTruth()
    for e in real:
        truth.observe(e)
    orphans = set(truth.orphans(end))
    order_ids = {e.record["order_id"] for e in real if e.milestone == "order.received"}
    tracking = {e.record["attributes"]["tracking_number"] for e in real if e.milestone == "fulfilment.shipped"}
    lonely = {e.record["correlation_id"]: e.record for e in real
              if (e.milestone == "order.erp_posted" and e.record["order_id"] not in order_ids)
              or (e.milestone == "shipment.first_scan" and e.record["attributes"]["tracking_number"] not in tracking)}
    old_enough = {cid for cid, r in lonely.items()
                  if datetime.fromisoformat(r["occurred_at"]).timestamp() < end - 900}
    assert orphans == old_enough and len(orphans) > 30
    report = truth.to_json(start=START, end=end, seed=7, faults=[])
    by_system = report["orphans_by_system"]
    assert set(by_system) == {"carrier", "erp"} and set(by_system["carrier"]) == {"unknown"}
    assert sum(by_system["carrier"].values()) == sum(1 for c in old_enough if lonely[c]["system"] == "carrier")
    assert "unknown" not in by_system["erp"]
    assert report["orphan_count"] == len(orphans)


def test_shared_mode_has_no_orphans_or_duplicates_but_the_truth_still_finds_drifted_orders(shared):
    """In shared mode an orphan appears only when the product lost the order.received record
    (schema drift): its other hops carry identity keys and no origin milestone."""
    truth = GroundTruth()
    for e in shared:
        truth.observe(e)
    end = START + HOURS * 3600
    assert truth.orphans(end) == [] and truth.duplicate_orders() == []
    drifted = events("shared", hours=6, faults=("schema_drift:amazon+6h",))
    truth = GroundTruth()
    for e in drifted:
        truth.observe(e)
    lost = {e.business_key for e in drifted if e.malformed and e.milestone == "order.received"}
    old = {b for b in lost if truth.businesses.get(b) and truth.businesses[b].first_at < START + 6 * 3600 - 900}
    assert old and set(truth.orphans(START + 6 * 3600)) == old


def test_erp_posting_latency_spans_the_two_systems(shared, real):
    """Per order, from the channel's order.received to the first ERP posting, whichever id each
    used: the same numbers in both modes (one timeline), computed here from the records."""
    def latencies(stream):
        received, posted = {}, {}
        for e in stream:
            if e.milestone == "order.received":
                received[e.business_key] = e.at
            elif e.milestone == "order.erp_posted" and e.record["status"] == "ok":
                posted.setdefault(e.business_key, e.at)
        return {b: round((posted[b] - at) * 1000.0, 1) for b, at in received.items() if b in posted}

    for stream in (shared, real):
        truth = GroundTruth()
        for e in stream:
            truth.observe(e)
        assert {b: round(ms, 1) for b, ms in truth.erp_posting_ms().items()} == latencies(stream)
    assert latencies(shared) == latencies(real) and len(latencies(real)) > 1000
