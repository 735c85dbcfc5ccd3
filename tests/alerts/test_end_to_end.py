"""End to end: the simulator's ERP outage -> SLA table -> UnpostedOrders fires with impact and a
deep link at a real webhook receiver -> the orders are posted -> resolved notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import DEFAULT_FILE, parse
from controltower.yamlfile import loads
from tests.alerts.test_notify import Recorder
from tests.conftest import LoopbackServer

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DASH = "http://dash.example:8501"


def default_rules_to(url: str):
    text = DEFAULT_FILE.read_text()
    old = "receivers:\n  log:\n    type: log\n\ndefault_receivers: [log]"
    assert old in text
    return parse(loads(text.replace(old, f"receivers:\n  hook:\n    type: webhook\n    url: {url}/hook\n\n"
                                         "default_receivers: [hook]"), "alerts.yaml"))


@pytest.mark.slow
def test_erp_outage_fires_unposted_orders_then_resolves(engine, settings):
    import metrics.definitions
    import metrics.jobs
    import simulator.emit
    import simulator.faults
    import simulator.run
    from collectors.store import EventStore
    from controltower.masking import Masker, MaskingRules

    simulator.run.simulate(
        seed=11, faults=simulator.faults.parse_faults(["erp_outage@10h+2h"]), backfill=12 * 3600,
        store=simulator.emit.StoreSink(engine, settings), now=NOW,
    )
    defs = metrics.definitions.load()
    metrics.jobs.refresh(engine, defs, NOW)
    with engine.connect() as conn:
        unposted = dict(conn.execute(sa.text(
            "SELECT channel, open_breaches FROM sla_status WHERE sla = 'erp_posting' AND \"window\" = '1h' "
            "AND open_breaches > 0")).all())
    assert unposted, "the outage leaves orders unposted"

    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = default_rules_to(server.url)
        unposted_rule = next(r for r in rs.rules if r.name == "UnpostedOrders")
        evaluate(engine, rs.rules, NOW, dashboard_url=DASH, routes=rs.routes)
        later = NOW + timedelta(seconds=unposted_rule.for_seconds + 30)
        metrics.jobs.refresh(engine, defs, later)
        transitions = evaluate(engine, rs.rules, later, dashboard_url=DASH, routes=rs.routes)
        fired = {t.labels["channel"] for t in transitions if t.rule == "UnpostedOrders" and t.notification == "firing"}
        assert fired and fired <= set(unposted)
        deliver_pending(engine, rs.receivers, later)
        [body] = [r["body"] for r in recorder.requests if r["body"]["groupLabels"]["alertname"] == "UnpostedOrders"]
        assert body["status"] == "firing"
        assert {a["labels"]["channel"] for a in body["alerts"]} == fired
        with engine.connect() as conn:
            now_open = dict(conn.execute(sa.text(
                "SELECT channel, open_breaches FROM sla_status WHERE sla = 'erp_posting' AND \"window\" = '1h'")).all())
        for alert in body["alerts"]:
            ch = alert["labels"]["channel"]
            assert alert["generatorURL"] == f"{DASH}/breaches?sla=erp_posting&channel={ch}"
            assert alert["annotations"]["orders_at_risk"] == str(now_open[ch])
            assert "unposted" in alert["annotations"]["summary"]

        # the ERP is back: the missing order.erp_posted events arrive
        with engine.connect() as conn:
            open_items = conn.execute(sa.text(
                "SELECT correlation_id, channel FROM sla_open_items WHERE sla = 'erp_posting'")).all()
        posted_at = later + timedelta(minutes=5)
        store = EventStore(engine, settings, Masker(MaskingRules.load(None)))
        result = store.ingest([
            {"event_id": f"recovery-{cid}", "occurred_at": posted_at.isoformat(), "correlation_id": cid,
             "channel": ch, "flow": "order", "stage": "erp_posted", "status": "ok", "system": "erp"}
            for cid, ch in open_items], source="test", now=posted_at)
        assert result.accepted == len(open_items)
        recovered = posted_at + timedelta(minutes=1)
        metrics.jobs.refresh(engine, defs, recovered)
        transitions = evaluate(engine, rs.rules, recovered, dashboard_url=DASH, routes=rs.routes)
        resolved = {t.labels["channel"] for t in transitions if t.rule == "UnpostedOrders" and t.notification == "resolved"}
        assert resolved == fired
        deliver_pending(engine, rs.receivers, recovered)
    bodies = [r["body"] for r in recorder.requests if r["body"]["groupLabels"]["alertname"] == "UnpostedOrders"]
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert all(a["endsAt"] != "0001-01-01T00:00:00Z" for a in bodies[1]["alerts"])


def test_impact_sums_order_value_when_events_carry_it(engine, settings):
    """Orders at risk from the open items past due; value from their order.received attributes."""
    from alerts.derived import impact
    from collectors.store import EventStore
    from controltower.masking import Masker, MaskingRules

    t0 = NOW - timedelta(hours=3)
    store = EventStore(engine, settings, Masker(MaskingRules.load(None)))
    totals = {"c1": "100.50", "c2": "20", "c3": "not a number"}
    store.ingest([
        {"event_id": f"e-{cid}", "occurred_at": t0.isoformat(), "correlation_id": cid, "channel": "walmart",
         "flow": "order", "stage": "received", "status": "ok", "system": "marketplace",
         "attributes": {"order_total": total}}
        for cid, total in totals.items()], source="test", now=t0)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at) VALUES "
            "('order_acknowledgement', 'c1', 'walmart', :t0, :due), ('order_acknowledgement', 'c2', 'walmart', :t0, :due), "
            "('order_acknowledgement', 'c3', 'walmart', :t0, :due), "
            "('order_acknowledgement', 'c4', 'walmart', :t0, :later)"),
            {"t0": t0, "due": t0 + timedelta(hours=1), "later": NOW + timedelta(hours=1)})
        row = {"sla": "order_acknowledgement", "channel": "walmart", "open_breaches": None}
        got = impact(conn, row, NOW)
        assert got == {"orders_at_risk": 3, "order_value_at_risk": 120.5, "orders_priced": 2, "amounts_ignored": 1}
        assert impact(conn, {**row, "open_breaches": 7}, NOW)["orders_at_risk"] == 7
        capped = impact(conn, row, NOW, limit=1)
        assert capped["order_value_capped_at"] == 1
        assert impact(conn, {**row, "channel": "amazon"}, NOW) == {"orders_at_risk": 0}
