"""The simulator's fault scenarios: computed SLA values match what it says it injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from metrics import compute, definitions, jobs
from simulator.emit import StoreSink
from simulator.faults import parse_faults
from simulator.run import simulate

DEFS = definitions.load()


@pytest.fixture
def outage(engine, settings):
    now = datetime.now(UTC).replace(microsecond=0)
    truth = simulate(
        seed=5, faults=parse_faults(["erp_outage@10h+2h", "inventory_stall:amazon@6h"]),
        backfill=12 * 3600, store=StoreSink(engine, settings), now=now,
    )
    jobs.refresh(engine, DEFS, now)
    return now, truth


def test_unposted_orders_match_the_erp_outage(engine, outage):
    now, truth = outage
    assert truth["unposted_count"] > 20  # the outage really left orders behind
    with engine.connect() as conn:
        open_items = conn.execute(sa.text(
            "SELECT correlation_id, started_at FROM sla_open_items WHERE sla = 'erp_posting'")).all()
        table = {(r["sla"], r["channel"]): r for r in compute.sla_table(conn, DEFS, window=timedelta(hours=24), now=now)}
    expected = {o["correlation_id"] for o in truth["unposted_orders"]}
    assert {r.correlation_id for r in open_items} == expected
    oldest_truth = min(datetime.fromisoformat(o["received_at"]) for o in truth["unposted_orders"])
    target = timedelta(minutes=30)
    overdue = [o for o in truth["unposted_orders"] if datetime.fromisoformat(o["received_at"]) < now - target]
    assert sum(r["open_breaches"] for (sla, _), r in table.items() if sla == "erp_posting") == len(overdue)
    oldest = max(r["oldest_breach_ms"] or 0 for (sla, _), r in table.items() if sla == "erp_posting")
    assert oldest == pytest.approx((now - oldest_truth).total_seconds() * 1000, abs=1000)


def test_stalled_inventory_feed_is_stale(engine, outage):
    now, truth = outage
    stalled = {(f["channel"], f["location"]) for f in truth["stalled_feeds"]}
    assert stalled and {c for c, _ in stalled} == {"amazon"}
    with engine.connect() as conn:
        rows = {r["channel"]: r for r in compute.sla_table(conn, DEFS, window=timedelta(hours=1), now=now) if r["sla"] == "inventory_freshness"}
    ages = rows["amazon"]["details"]["ages_ms"]
    for _, location in stalled:
        assert ages[location] > 5 * 3600_000  # stalled 6 h ago
    assert rows["amazon"]["health"] == "critical"
    assert all(r["health"] == "ok" for ch, r in rows.items() if ch != "amazon")
