"""End to end in both ID modes: simulator → real ingest (linking) → SLA tables, against the truth.

In `shared` mode every hop of an order is one correlation id; in `real` mode the connector,
ERP, WMS, carrier and the shipment confirmation each speak their own, and the product joins
them into business transactions by identity keys (ingest linking), measures SLAs per business
transaction (the SLA engine) and finds orphans and duplicate orders. The truth is what the
simulator knows it generated; the product's answers are read from its tables and mapped to the
canonical member (`controltower.identity.CANONICAL_MEMBER`), which the truth names each
business by (the channel's correlation id: its order.received opens the order).

What each test needs beyond this branch in real mode: ingest linking (lead, "feat(ingest):
identity linking": channel-less records accepted, `transactions.business_id` filled) for all of
them; the SLA engine per business transaction (metrics helper) for the `sla_*` ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from controltower.identity import BUSINESS_CHANNEL, CANONICAL_MEMBER, DEFAULT_IDENTITY_KEYS
from metrics import compute, definitions, jobs
from simulator.emit import StoreSink
from simulator.faults import parse_faults
from simulator.run import simulate

DEFS = definitions.load()
MODES = pytest.mark.parametrize("ids", ["shared", "real"])

# business_id → canonical member, over every business transaction
MEMBERS = f"""
SELECT t.business_id, {CANONICAL_MEMBER} AS member, {BUSINESS_CHANNEL} AS channel
FROM transactions t GROUP BY t.business_id
"""  # noqa: S608 (constant fragments from controltower.identity)
REACHED = """EXISTS (SELECT 1 FROM transactions u JOIN transaction_milestones m ON m.correlation_id = u.correlation_id
                    WHERE u.business_id = t.business_id AND m.milestone = ANY(:milestones))"""
UNPOSTED = f"""
SELECT {CANONICAL_MEMBER} FROM transactions t GROUP BY t.business_id
HAVING {REACHED.replace(':milestones', "ARRAY['order.received']")}
   AND NOT {REACHED.replace(':milestones', "ARRAY['order.erp_posted']")}
"""  # noqa: S608
# the design's orphan: old enough, an identity key, no origin milestone on any member
ORPHANS = f"""
SELECT {CANONICAL_MEMBER} AS member, {BUSINESS_CHANNEL} AS channel FROM transactions t GROUP BY t.business_id
HAVING min(t.first_event_at) < :cutoff
   AND EXISTS (SELECT 1 FROM transactions u JOIN transaction_keys k ON k.correlation_id = u.correlation_id
               WHERE u.business_id = t.business_id AND k.kind = ANY(:kinds))
   AND NOT {REACHED.replace(':milestones', "ARRAY['order.received', 'return.requested']")}
"""  # noqa: S608
# the design's duplicate order: reached order.received, two or more distinct erp_document values
DUPLICATES = f"""
SELECT {CANONICAL_MEMBER} FROM transactions t GROUP BY t.business_id
HAVING {REACHED.replace(':milestones', "ARRAY['order.received']")}
   AND (SELECT count(DISTINCT k.value) FROM transactions u JOIN transaction_keys k ON k.correlation_id = u.correlation_id
        WHERE u.business_id = t.business_id AND k.kind = 'erp_document') >= 2
"""  # noqa: S608


def run(engine, settings, ids: str, *, now: datetime, faults: tuple[str, ...], hours: float = 12, seed: int = 5):
    truth = simulate(seed=seed, faults=parse_faults(faults), backfill=hours * 3600, ids=ids,
                     store=StoreSink(engine, settings), now=now)
    assert truth["ids"] == ids
    assert truth["sinks"]["store"]["rejected"] == 0, truth["sinks"]["store"]["rejection_samples"]
    assert truth["sinks"]["store"]["accepted"] == truth["events_total"]
    return truth


def members(conn) -> dict[str, tuple[str, str | None]]:
    return {r.business_id: (r.member, r.channel) for r in conn.execute(sa.text(MEMBERS))}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@MODES
def test_linked_businesses_unposted_orphans_and_duplicates_match_the_truth(engine, settings, now, ids):
    """Needs (real mode): ingest linking."""
    truth = run(engine, settings, ids, now=now, faults=("erp_outage@10h+2h",))
    with engine.connect() as conn:
        unposted = set(conn.execute(sa.text(UNPOSTED)).scalars())
        orphans = {r.member: r.channel for r in conn.execute(
            sa.text(ORPHANS), {"cutoff": now - timedelta(seconds=900), "kinds": list(DEFAULT_IDENTITY_KEYS)})}
        duplicates = set(conn.execute(sa.text(DUPLICATES)).scalars())
        businesses = conn.execute(sa.text("SELECT count(DISTINCT business_id) FROM transactions")).scalar_one()
    assert truth["unposted_count"] > 20
    assert unposted == {o["correlation_id"] for o in truth["unposted_orders"]}
    assert orphans == {o["correlation_id"]: o["channel"] for o in truth["orphans"]}
    assert duplicates == {d["correlation_id"] for d in truth["duplicate_orders"]}
    assert businesses == truth["business_count"]
    if ids == "real":
        assert truth["orphan_count"] > 3 and truth["duplicate_order_count"] > 0
        assert None in orphans.values()  # a carrier scan says no channel, and its business has none
    else:
        assert truth["orphan_count"] == truth["duplicate_order_count"] == 0


@MODES
def test_sla_unposted_orders_match_the_erp_outage(engine, settings, now, ids):
    """The tests/metrics ground-truth test in both modes. Needs (real mode): ingest linking and
    the SLA engine per business transaction (sla_open_items.correlation_id holds a business_id)."""
    truth = run(engine, settings, ids, now=now, faults=("erp_outage@10h+2h", "inventory_stall:amazon@6h"))
    jobs.refresh(engine, DEFS, now)
    with engine.connect() as conn:
        by_business = members(conn)
        open_items = conn.execute(sa.text(
            "SELECT correlation_id, channel, started_at FROM sla_open_items WHERE sla = 'erp_posting'")).all()
        table = {(r["sla"], r["channel"]): r for r in compute.sla_table(conn, DEFS, window=timedelta(hours=24), now=now)}
        stale = {r["channel"]: r for r in compute.sla_table(conn, DEFS, window=timedelta(hours=1), now=now)
                 if r["sla"] == "inventory_freshness"}
    assert truth["unposted_count"] > 20
    expected = {o["correlation_id"]: o for o in truth["unposted_orders"]}
    found = {by_business[r.correlation_id][0]: r for r in open_items}
    assert set(found) == set(expected)
    for member, row in found.items():
        assert row.channel == expected[member]["channel"]
        assert row.started_at == datetime.fromisoformat(expected[member]["received_at"])
    overdue = [o for o in truth["unposted_orders"] if datetime.fromisoformat(o["received_at"]) < now - timedelta(minutes=30)]
    assert sum(r["open_breaches"] for (sla, _), r in table.items() if sla == "erp_posting") == len(overdue)
    oldest_truth = min(datetime.fromisoformat(o["received_at"]) for o in truth["unposted_orders"])
    oldest = max(r["oldest_breach_ms"] or 0 for (sla, _), r in table.items() if sla == "erp_posting")
    assert oldest == pytest.approx((now - oldest_truth).total_seconds() * 1000, abs=1000)
    assert stale["amazon"]["health"] == "critical"


@MODES
def test_sla_erp_posting_samples_span_the_two_systems(engine, settings, now, ids):
    """One sample per posted order, from the channel's order.received to the ERP's first
    posting, whatever correlation id each used; an ERP duplicate does not add a sample.
    Needs (real mode): ingest linking and the SLA engine per business transaction."""
    truth = run(engine, settings, ids, now=now, faults=(), hours=8, seed=13)
    jobs.refresh(engine, DEFS, now)
    with engine.connect() as conn:
        by_business = members(conn)
        samples = conn.execute(sa.text(
            "SELECT correlation_id, channel, latency_ms FROM sla_samples WHERE sla = 'erp_posting'")).all()
    expected = truth["erp_posting_samples"]
    found = {by_business[s.correlation_id][0]: s for s in samples}
    assert len(found) == len(samples) and set(found) == set(expected) and len(expected) > 100
    for member, sample in found.items():
        assert sample.channel == expected[member]["channel"]
        assert sample.latency_ms == pytest.approx(expected[member]["latency_ms"], abs=1)


@MODES
def test_signals_list_the_truths_orphans_and_duplicate_orders(engine, settings, now, ids):
    """The signals (metrics.signals: orphans per system and channel, duplicate orders with their
    ERP documents) against what the simulator injected. Needs (real mode): ingest linking."""
    from metrics import signallists, signals

    truth = run(engine, settings, ids, now=now, faults=("erp_outage@10h+2h",))
    signals.refresh(engine, DEFS, now, settings)
    with engine.connect() as conn:
        orphans = signallists.orphans(conn, now=now, limit=10_000)
        counts = signallists.orphan_counts(conn)
        duplicates = signallists.duplicates(conn, limit=10_000)
    assert {o["correlation_id"]: (o["system"], o["channel"]) for o in orphans} == {  # no channel reads "unknown"
        o["correlation_id"]: (o["system"], o["channel"] or "unknown") for o in truth["orphans"]}
    assert {(c["system"], c["channel"]): c["orphans"] for c in counts} == {
        (system, channel): n for system, chs in truth["orphans_by_system"].items() for channel, n in chs.items()}
    assert {d["correlation_id"]: sorted(d["erp_documents"]) for d in duplicates} == {
        d["correlation_id"]: d["erp_documents"] for d in truth["duplicate_orders"]}
    if ids == "real":
        assert len(orphans) > 3 and duplicates
        assert {c["system"] for c in counts} == {"carrier", "erp"}
        assert all(len(d["correlation_ids"]) >= 3 for d in duplicates)  # connector and two ERP postings at least
