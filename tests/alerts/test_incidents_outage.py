"""Done when: a simulated ERP outage across 5 channels is one incident and one page with its cause.

Real events go through the collector's store, `metrics.jobs.refresh` builds the SLA table and
hop health, the evaluator runs with incident grouping on, and the outbox is delivered to a
webhook receiver on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import parse
from controltower.yamlfile import loads
from tests.alerts.test_notify import Recorder
from tests.conftest import LoopbackServer
from tests.metrics.helpers import ev, ingest

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DASH = "http://dash.example:8501"
CHANNELS = ("amazon", "b2b", "ebay", "shopify", "walmart")
CAUSE = "the ERP or the middleware in front of it"

RULES = """
incidents: {group_by: hop}
receivers:
  hook: {type: webhook, url: URL}
default_receivers: [hook]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
    for: 10m
    severity: page
    impact: true
    annotations: {summary: "{channel}: {open_breaches} orders unposted"}
    repeat_interval: 4h
  - name: ErpPostingFastBurn
    sla: erp_posting
    field: burn_rate_short
    op: ">"
    value: 14.4
    for: 2m
    severity: page
  - name: WarehouseReleaseLate
    sla: warehouse_release
    field: open_breaches
    op: ">"
    value: 0
    for: 10m
    severity: ticket
"""


def seed_outage(engine, settings) -> list[tuple[str, str]]:
    """Per channel: 12 orders received 50-61 min ago, acknowledged, not posted (the ERP is down),
    one fresh order; on amazon also 12 orders posted late in the last hour (the budget burns) and
    6 posted 3 h ago that the warehouse never released. Returns the orders to post at the fix."""
    records, open_orders = [], []
    for ch in CHANNELS:
        for i in range(13):
            cid = f"{ch}-u{i}"
            at = NOW - timedelta(minutes=50 + i) if i < 12 else NOW - timedelta(minutes=2)
            records += [ev(cid, "order.received", at, channel=ch, order_total="10"),
                        ev(cid, "order.acknowledged", at + timedelta(minutes=1), channel=ch)]
            open_orders.append((cid, ch))
    for i in range(12):
        cid = f"amazon-late{i}"
        records += [ev(cid, "order.received", NOW - timedelta(minutes=100), channel="amazon"),
                    ev(cid, "order.acknowledged", NOW - timedelta(minutes=99), channel="amazon"),
                    ev(cid, "order.erp_posted", NOW - timedelta(minutes=30), channel="amazon"),
                    ev(cid, "fulfilment.released", NOW - timedelta(minutes=25), channel="amazon")]
    for i in range(6):
        cid = f"amazon-r{i}"
        records += [ev(cid, "order.received", NOW - timedelta(hours=3, minutes=10), channel="amazon"),
                    ev(cid, "order.acknowledged", NOW - timedelta(hours=3, minutes=9), channel="amazon"),
                    ev(cid, "order.erp_posted", NOW - timedelta(hours=3), channel="amazon")]
    ingest(engine, settings, records, now=NOW)
    return open_orders


def test_erp_outage_on_five_channels_is_one_incident_and_one_page(engine, settings):
    import metrics.definitions
    import metrics.jobs

    defs = metrics.definitions.load()
    open_orders = seed_outage(engine, settings)
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = parse(loads(RULES.replace("URL", f"{server.url}/hook"), "alerts.yaml"))

        def tick(at: datetime) -> None:
            metrics.jobs.refresh(engine, defs, at)
            evaluate(engine, rs.rules, at, dashboard_url=DASH, routes=rs.routes, incidents=rs.incidents)
            deliver_pending(engine, rs.receivers, at)

        tick(NOW)  # pending
        assert recorder.requests == []
        fired_at = NOW + timedelta(minutes=11)
        tick(fired_at)  # every rule past `for`: seven alerts, one incident, one page
        tick(fired_at + timedelta(minutes=1))  # still firing: nothing new
        [firing] = [r["body"] for r in recorder.requests]
        assert firing["status"] == "firing"
        assert firing["title"] == (
            f"[FIRING] ERP posting is breaching on all 5 channels since 12:11 UTC → {CAUSE} (+6 more alerts)")
        names = sorted((a["labels"]["alertname"], a["labels"]["channel"]) for a in firing["alerts"])
        assert names == sorted([("ErpPostingFastBurn", "amazon"), ("WarehouseReleaseLate", "amazon"),
                                *(("UnpostedOrders", ch) for ch in CHANNELS)])
        assert firing["groupKey"] == "hop:ERP posting"
        incident = firing["incident"]
        assert incident["alert_count"] == 7 and incident["channels"] == list(CHANNELS)
        assert incident["cause"] == CAUSE
        assert incident["impact"]["orders_at_risk"] == 5 * 12
        assert firing["dedup_key"] == f"incident-{incident['id']}"

        with engine.connect() as conn:
            inc = conn.execute(sa.text("SELECT id, state, key, severity FROM incidents")).one()
            attached = conn.execute(sa.text("SELECT count(*) FROM incident_alerts")).scalar()
            kinds = [r[0] for r in conn.execute(sa.text("SELECT kind FROM incident_events ORDER BY id"))]
        assert (inc.state, inc.key, inc.severity) == ("open", "hop:ERP posting", "page")
        assert attached == 7
        assert kinds == ["opened", *["alert attached"] * 7, "notified"]

        # the ERP is back: every open order is posted and released; an hour later the burn has passed
        fix = fired_at + timedelta(minutes=4)
        ingest(engine, settings, [
            e for cid, ch in open_orders for e in (
                ev(cid, "order.erp_posted", fix, channel=ch), ev(cid, "fulfilment.released", fix, channel=ch))
        ] + [ev(f"amazon-r{i}", "fulfilment.released", fix, channel="amazon") for i in range(6)], now=fix)
        resolved_at = fix + timedelta(minutes=65)
        tick(resolved_at)
        tick(resolved_at + timedelta(minutes=1))

    bodies = [r["body"] for r in recorder.requests]
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    resolved = bodies[1]
    assert resolved["title"] == (f"[RESOLVED] ERP posting is breaching on all 5 channels since 12:11 UTC → {CAUSE} "
                                 "(resolved at 13:20 UTC) (+6 more alerts)")
    assert all(a["status"] == "resolved" and a["endsAt"] != "0001-01-01T00:00:00Z" for a in resolved["alerts"])
    assert resolved["dedup_key"] == firing["dedup_key"]
    with engine.connect() as conn:
        state, at = conn.execute(sa.text("SELECT state, resolved_at FROM incidents")).one()
    assert (state, at) == ("resolved", resolved_at)
