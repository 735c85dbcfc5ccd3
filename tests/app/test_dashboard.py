"""The dashboard under Streamlit's AppTest, against a real Postgres seeded with known rows.

`seed()` writes what the metrics job and the collectors would have written (SLA table, hops,
open items, rollups, freshness) plus real transactions through the collectors' EventStore; the
browser test and the screenshot script reuse it.
"""

from __future__ import annotations

import json
import math
import random
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from app import queries
from app.commands import config_flags, dashboard_argv, dashboard_env
from app.story import transaction_story
from collectors.store import EventStore
from controltower import histogram
from controltower.settings import Settings
from metrics.rollups import bucket_of

MAIN = Path(queries.__file__).resolve().parent / "main.py"
CHANNELS = ["amazon", "ebay", "pos", "shopify", "walmart"]
LOCATIONS = ["DC-EAST", "DC-WEST", "3PL-CHI", "STORE-0012", "STORE-0047"]
HOPS = ["marketplace_ingestion", "middleware", "erp_posting", "warehouse_release", "carrier_confirmation",
        "channel_confirmation"]
WALMART_REASON = "143 unposted orders; oldest 5 h 10 min (critical at 50)"


def _sla_row(sla: str, channel: str, window: str, now: datetime, **values: Any) -> dict[str, Any]:
    row = {
        "sla": sla, "channel": channel, "window": window, "kind": "milestone_latency", "computed_at": now,
        "count": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "target_ms": None,
        "within_target_ratio": None, "open_breaches": 0, "oldest_breach_ms": None, "value": None,
        "threshold": None, "health": "ok", "reason": None, "objective": 0.99, "error_budget_remaining": None,
        "burn_rate_short": None, "burn_rate_long": None, "details": "{}",
    }
    row.update(values)
    return row


def _story(cid: str, channel: str, order: str, external: str, start: datetime, stages: list[tuple[str, str, float, str]],
           **attrs: Any) -> list[dict[str, Any]]:
    records = []
    for i, (milestone, system, minutes, status) in enumerate(stages):
        flow, stage = milestone.split(".")
        record: dict[str, Any] = {
            "event_id": f"{cid}-{i}", "occurred_at": (start + timedelta(minutes=minutes)).isoformat(),
            "correlation_id": cid, "order_id": order, "channel": channel, "flow": flow, "stage": stage,
            "status": status, "system": system, "latency_ms": 120 + 37 * i,
            "attributes": {"external_order_id": external, **(attrs if i == 0 else {})},
            "payload": {"order": order, "lines": 2} if i == 0 else None,
        }
        if status == "error":
            record.update(error_code="ERP-504", error_message="ERP gateway timeout")
        if status == "retry":
            record.update(error_code="HTTP-503", error_message="carrier API unavailable, retrying")
        records.append(record)
    return records


FULL = [("order.received", "marketplace", 0, "ok"), ("order.acknowledged", "middleware", 1.5, "ok"),
        ("order.erp_posted", "erp", 6, "error"), ("order.erp_posted", "erp", 9, "ok"),
        ("fulfilment.released", "wms", 25, "ok"), ("fulfilment.shipped", "wms", 140, "ok"),
        ("shipment.shipment_confirmed", "carrier", 150, "retry"), ("shipment.shipment_confirmed", "carrier", 158, "ok")]
UNPOSTED = [("order.received", "marketplace", 0, "ok"), ("order.acknowledged", "middleware", 2, "ok"),
            ("order.erp_posted", "erp", 4, "error")]


def seed(engine: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    """Realistic dashboard data relative to `now`; returns the facts tests assert on."""
    rnd = random.Random(20261122)
    now = now.astimezone(UTC)
    # Rollups end before the 5-minute bin now is in: the charts show complete bins only.
    minute0 = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) - timedelta(minutes=1)
    facts: dict[str, Any] = {}

    # Real transactions through the collectors' store.
    store = EventStore(engine, settings)
    records: list[dict[str, Any]] = []
    records += _story("cid-amz-1", "amazon", "SO-1001", "112-0000001-0000001", now - timedelta(hours=4), FULL,
                      sku=["SKU-RED-42", "SKU-BLU-40"])
    records += _story("cid-amz-2", "amazon", "SO-1002", "112-0000002-0000002", now - timedelta(hours=3), FULL[:5])
    for i in range(1, 5):
        records += _story(f"cid-wm-{i}", "walmart", f"SO-20{i:02d}", f"WM-{7700 + i}", now - timedelta(minutes=20 + 70 * i),
                          UNPOSTED)
    records += _story("cid-shop-1", "shopify", "SO-3001", "#4521", now - timedelta(hours=2), FULL)
    # Reconciliation: five ebay orders received yesterday 10:00 UTC, each getting one stage less far.
    yesterday = (now - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    if yesterday + timedelta(minutes=1205) > now:  # before 04:05 UTC the last delivery would lie ahead
        yesterday -= timedelta(days=1)
    path = [("order.received", "marketplace", 0, "ok"), ("order.acknowledged", "middleware", 2, "ok"),
            ("order.erp_posted", "erp", 8, "ok"), ("fulfilment.released", "wms", 30, "ok"),
            ("fulfilment.shipped", "wms", 180, "ok"), ("shipment.shipment_confirmed", "carrier", 190, "ok"),
            ("shipment.delivered", "carrier", 1200, "ok")]
    for i, stages in enumerate((path, path[:6], path[:5], path[:3], [*path[:2], ("order.erp_posted", "erp", 8, "error")])):
        records += _story(f"cid-eb-{i + 1}", "ebay", f"SO-40{i + 1:02d}", f"EB-{9100 + i + 1}", yesterday + timedelta(minutes=i),
                          stages)
    facts["recon_day"] = yesterday.date()
    facts["recon_funnel"] = [5, 5, 4, 3, 3, 2, 1]
    result = store.ingest(records, source="test", now=now)
    assert result.accepted == len(records), result.rejected

    status = []
    for window, scale in (("1h", 1), ("24h", 24)):
        for channel in CHANNELS:
            n = rnd.randint(300, 1500) * scale
            status.append(_sla_row("order_acknowledgement", channel, window, now, count=n, p50_ms=41_000.0,
                                   p95_ms=95_000.0, p99_ms=240_000.0, target_ms=1_800_000, within_target_ratio=0.995,
                                   error_budget_remaining=0.82, burn_rate_short=0.4, burn_rate_long=0.6))
            if channel == "walmart":
                status.append(_sla_row("erp_posting", channel, window, now, count=n, p50_ms=1_260_000.0,
                                       p95_ms=7_800_000.0, p99_ms=14_400_000.0, target_ms=1_800_000,
                                       within_target_ratio=0.81, open_breaches=143, oldest_breach_ms=18_600_000,
                                       health="critical", reason=WALMART_REASON, error_budget_remaining=-0.35,
                                       burn_rate_short=19.0, burn_rate_long=7.5))
            else:
                status.append(_sla_row("erp_posting", channel, window, now, count=n, p50_ms=240_000.0,
                                       p95_ms=600_000.0, p99_ms=1_020_000.0, target_ms=1_800_000,
                                       within_target_ratio=0.999, error_budget_remaining=0.97,
                                       burn_rate_short=0.1, burn_rate_long=0.2))
            shop = channel == "shopify"
            status.append(_sla_row("error_rate", channel, window, now, kind="rate", count=n * 6,
                                   value=0.043 if shop else 0.004, threshold=0.02, health="warn" if shop else "ok",
                                   reason="error rate 4.3% over the last hour (warn at 2%)" if shop else None))
            stale = channel == "ebay"
            limit = 7_200_000 if channel == "walmart" else 3_600_000
            status.append(_sla_row("inventory_freshness", channel, window, now, kind="freshness",
                                   count=len(LOCATIONS), value=11_400_000.0 if stale else 720_000.0,
                                   threshold=float(limit), target_ms=limit,
                                   health="warn" if stale else "ok",
                                   reason="STORE-0047 inventory not synced for 3 h 10 min" if stale else None))
        status.append(_sla_row("dead_letters", "*", window, now, kind="rate", count=0, value=0.0, threshold=1.0))
    facts["p95_walmart_erp"] = "2 h 10 min"
    facts["p95_amazon_ack"] = "1 min 35 s"

    hops = []
    for channel in CHANNELS:
        for position, hop in enumerate(HOPS):
            health, backlog, reason = "ok", rnd.randint(0, 6), None
            if channel == "walmart" and hop == "erp_posting":
                health, backlog, reason = "critical", 143, WALMART_REASON
            if channel == "shopify" and hop == "middleware":
                health, backlog, reason = "warn", 27, "error rate 4.3%"
            hops.append({"channel": channel, "hop": hop, "position": position, "computed_at": now,
                         "volume": rnd.randint(200, 1200), "backlog": backlog,
                         "p95_ms": 7_800_000.0 if health == "critical" else float(rnd.randint(2_000, 400_000)),
                         "health": health, "reason": reason})

    # Throughput rollups: the last 5 h 50 min (well inside the default 6 h chart window).
    events = []
    for m in range(350):
        minute = minute0 - timedelta(minutes=m)
        for channel in CHANNELS:
            base = {"amazon": 40, "walmart": 25, "shopify": 18, "ebay": 8, "pos": 30}[channel]
            for flow, stage in (("order", "received"), ("order", "erp_posted"), ("inventory", "published")):
                count = max(0, int(rnd.gauss(base, base / 5)))
                if channel == "walmart" and stage == "erp_posted" and m < 120:
                    count = rnd.randint(0, 2)
                if count:
                    events.append({"minute": minute, "channel": channel, "flow": flow, "stage": stage,
                                   "status": "ok", "count": count})
            errors = rnd.randint(0, 2) + (rnd.randint(2, 6) if channel == "shopify" and m < 90 else 0)
            errors += rnd.randint(8, 20) if channel == "walmart" and m < 120 else 0
            if errors:
                events.append({"minute": minute, "channel": channel, "flow": "order", "stage": "erp_posted",
                               "status": "error", "count": errors})
    for m, count in ((3, 2), (10, 3), (200, 5)):
        events.append({"minute": minute0 - timedelta(minutes=m), "channel": "walmart", "flow": "order",
                       "stage": "erp_posted", "status": "dead_letter", "count": count})
    facts["dead_letters_by_minute"] = [(minute0 - timedelta(minutes=m), c) for m, c in ((3, 2), (10, 3), (200, 5))]
    facts["received_by_minute"] = [(e["minute"], e["count"]) for e in events
                                   if (e["flow"], e["stage"], e["status"]) == ("order", "received", "ok")]
    facts["events_6h"] = sum(e["count"] for e in events)
    facts["errors_6h"] = sum(e["count"] for e in events if e["status"] == "error")
    # Older than 24 h: never in a chart.
    events.append({"minute": minute0 - timedelta(hours=30), "channel": "amazon", "flow": "order",
                   "stage": "received", "status": "ok", "count": 999_999})

    sla_minutes = []
    ack_samples: dict[datetime, list[float]] = {}
    for m in range(350):
        minute = minute0 - timedelta(minutes=m)
        for channel in CHANNELS:
            for sla in ("order_acknowledgement", "erp_posting"):
                count = rnd.randint(5, 30)
                met = count if rnd.random() > 0.1 else count - 1
                if sla == "erp_posting" and channel == "walmart" and m < 120:
                    met = int(count * (0.2 + m / 300))
                median = 41_000 if sla == "order_acknowledgement" else (1_260_000 if channel == "walmart" else 240_000)
                samples = [rnd.lognormvariate(math.log(median), 0.6) for _ in range(count)]
                hist: dict[str, int] = {}
                for sample in samples:
                    key = str(bucket_of(sample))
                    hist[key] = hist.get(key, 0) + 1
                if (channel, sla) == ("amazon", "order_acknowledgement"):
                    ack_samples[minute] = samples
                sla_minutes.append({"sla": sla, "channel": channel, "minute": minute, "count": count, "met": met,
                                    "hist": json.dumps(hist)})
    facts["amazon_ack_samples"] = ack_samples

    fresh = []
    for channel in CHANNELS:
        for location in LOCATIONS:
            if channel == "pos" and location.startswith(("DC", "3PL")):
                continue
            age = 190 if (channel == "ebay" and location == "STORE-0047") else rnd.randint(1, 35)
            fresh.append({"sla": "inventory_freshness", "channel": channel, "key": location,
                          "last_at": now - timedelta(minutes=age)})

    open_items = [
        {"sla": "erp_posting", "correlation_id": f"cid-wm-{i}", "channel": "walmart",
         "started_at": now - timedelta(minutes=20 + 70 * i), "due_at": now - timedelta(minutes=20 + 70 * i) + timedelta(minutes=30)}
        for i in range(1, 5)
    ]
    # cid-wm-0: received 20 minutes ago, due in 10 minutes: open but not a breach yet.
    open_items.append({"sla": "erp_posting", "correlation_id": "cid-wm-0", "channel": "walmart",
                       "started_at": now - timedelta(minutes=20), "due_at": now + timedelta(minutes=10)})
    open_items.append({"sla": "erp_posting", "correlation_id": "cid-amz-2", "channel": "amazon",
                       "started_at": now - timedelta(hours=3), "due_at": now - timedelta(hours=2, minutes=30)})
    open_items.append({"sla": "order_acknowledgement", "correlation_id": "cid-wm-9", "channel": "walmart",
                       "started_at": now - timedelta(hours=6), "due_at": now - timedelta(hours=2)})
    facts["overdue_walmart_erp"] = [f"cid-wm-{i}" for i in range(4, 0, -1)]  # most overdue first

    definitions = [
        {"name": "order_acknowledgement", "kind": "milestone_latency", "from_milestone": "order.received",
         "to_milestone": "order.acknowledged", "default_target_ms": 1_800_000, "targets_ms": '{"walmart": 14400000}',
         "objective": 0.99},
        {"name": "erp_posting", "kind": "milestone_latency", "from_milestone": "order.received",
         "to_milestone": "order.erp_posted", "default_target_ms": 1_800_000, "targets_ms": "{}", "objective": 0.99},
        {"name": "shipment_confirmation", "kind": "milestone_latency", "from_milestone": "fulfilment.shipped",
         "to_milestone": "shipment.shipment_confirmed", "default_target_ms": 3_600_000, "targets_ms": "{}",
         "objective": 0.99},
    ]

    def alert(fp: str, rule: str, sla: str, channel: str, severity: str, state: str, minutes: int, value: float,
              summary: str, **extra: Any) -> dict[str, Any]:
        labels = {"alertname": rule, "sla": sla, "channel": channel, "severity": severity}
        row = {"fingerprint": fp, "rule": rule, "labels": json.dumps(labels), "severity": severity, "state": state,
               "active_since": now - timedelta(minutes=minutes),
               "firing_since": now - timedelta(minutes=minutes - 5) if state in ("firing", "resolved") else None,
               "resolved_at": now - timedelta(minutes=5) if state == "resolved" else None, "last_value": value,
               "last_evaluated_at": now, "acknowledged_by": None, "acknowledged_at": None, "summary": summary}
        row.update(extra)
        return row

    alerts = [
        alert("fp-wm-erp", "ErpPostingSlow", "erp_posting", "walmart", "critical", "firing", 50, 143.0,
              "walmart: 143 orders not posted to the ERP within 30 min"),
        alert("fp-shop-err", "ErrorRateHigh", "error_rate", "shopify", "warning", "pending", 3, 0.043,
              "shopify: error rate 4.3% (warn at 2%)"),
        alert("fp-eb-inv", "InventoryStale", "inventory_freshness", "ebay", "warning", "firing", 130, 11_400_000.0,
              "ebay: STORE-0047 inventory not synced for 3 h 10 min", acknowledged_by="dana",
              acknowledged_at=now - timedelta(minutes=60)),
        alert("fp-amz-ack", "AckSlow", "order_acknowledgement", "amazon", "warning", "resolved", 300, 0.0,
              "amazon acknowledgements back within target"),
    ]
    alert_events = [
        {"at": now - timedelta(minutes=m), "fingerprint": fp, "rule": rule, "from_state": a, "to_state": b,
         "value": v, "labels": next(x["labels"] for x in alerts if x["fingerprint"] == fp), "summary": "seeded"}
        for m, fp, rule, a, b, v in (
            (50, "fp-wm-erp", "ErpPostingSlow", "inactive", "pending", 60.0),
            (45, "fp-wm-erp", "ErpPostingSlow", "pending", "firing", 90.0),
            (3, "fp-shop-err", "ErrorRateHigh", "inactive", "pending", 0.043),
            (5, "fp-amz-ack", "AckSlow", "firing", "resolved", 0.0),
        )
    ]
    facts["firing_alerts"] = 2

    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO alert_state (fingerprint, rule, labels, severity, state, active_since, firing_since, "
            "resolved_at, last_value, last_evaluated_at, acknowledged_by, acknowledged_at, summary) VALUES "
            "(:fingerprint, :rule, CAST(:labels AS jsonb), :severity, :state, :active_since, :firing_since, "
            ":resolved_at, :last_value, :last_evaluated_at, :acknowledged_by, :acknowledged_at, :summary)"), alerts)
        conn.execute(sa.text(
            "INSERT INTO alert_events (at, fingerprint, rule, from_state, to_state, value, labels, summary) VALUES "
            "(:at, :fingerprint, :rule, :from_state, :to_state, :value, CAST(:labels AS jsonb), :summary)"),
            alert_events)
        conn.execute(sa.text(
            "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment) VALUES "
            "(CAST(:m AS jsonb), :s, :e, 'ops', 'POS maintenance')"),
            {"m": json.dumps({"channel": "pos"}), "s": now - timedelta(minutes=10), "e": now + timedelta(hours=1)})
        conn.execute(sa.text(
            'INSERT INTO sla_status (sla, channel, "window", kind, computed_at, count, p50_ms, p95_ms, p99_ms, '
            "target_ms, within_target_ratio, open_breaches, oldest_breach_ms, value, threshold, health, reason, "
            "objective, error_budget_remaining, burn_rate_short, burn_rate_long, details) VALUES (:sla, :channel, "
            ":window, :kind, :computed_at, :count, :p50_ms, :p95_ms, :p99_ms, :target_ms, :within_target_ratio, "
            ":open_breaches, :oldest_breach_ms, :value, :threshold, :health, :reason, :objective, "
            ":error_budget_remaining, :burn_rate_short, :burn_rate_long, CAST(:details AS jsonb))"), status)
        conn.execute(sa.text(
            "INSERT INTO hop_health (channel, hop, position, computed_at, volume, backlog, p95_ms, health, reason) "
            "VALUES (:channel, :hop, :position, :computed_at, :volume, :backlog, :p95_ms, :health, :reason)"), hops)
        conn.execute(sa.text(
            "INSERT INTO event_rollup_minute (minute, channel, flow, stage, status, count) "
            "VALUES (:minute, :channel, :flow, :stage, :status, :count)"), events)
        conn.execute(sa.text(
            "INSERT INTO sla_rollup_minute (sla, channel, minute, count, met, hist) "
            "VALUES (:sla, :channel, :minute, :count, :met, CAST(:hist AS jsonb))"), sla_minutes)
        conn.execute(sa.text(
            "INSERT INTO freshness_state (sla, channel, key, last_at) VALUES (:sla, :channel, :key, :last_at)"), fresh)
        conn.execute(sa.text(
            "INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at) "
            "VALUES (:sla, :correlation_id, :channel, :started_at, :due_at)"), open_items)
        conn.execute(sa.text(
            "INSERT INTO sla_definitions (name, kind, from_milestone, to_milestone, default_target_ms, targets_ms, "
            "objective) VALUES (:name, :kind, :from_milestone, :to_milestone, :default_target_ms, "
            "CAST(:targets_ms AS jsonb), :objective)"), definitions)
        # the units the metrics room publishes with each definition (shaping reads them, not SLA names)
        conn.execute(sa.text(
            "INSERT INTO sla_definitions (name, kind, targets_ms, definition) VALUES "
            "('error_rate', 'rate', '{}', '{\"unit\": \"ratio\"}'), "
            "('dead_letters', 'rate', '{}', '{\"unit\": \"count\"}'), "
            "('inventory_freshness', 'freshness', '{}', '{\"unit\": \"ms\"}')"))
        # alerting runs: its last evaluation cycle succeeded just now (no banner)
        conn.execute(sa.text(
            "INSERT INTO alert_evaluations (rule, last_run_at, last_success_at, interval_seconds) "
            "VALUES ('', :now, :now, 30)"), {"now": now})
    return facts


# -- AppTest ------------------------------------------------------------------------------------
@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CONTROLTOWER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    monkeypatch.setenv("CONTROLTOWER_DATA_DIR", str(tmp_path / "data"))
    st.cache_data.clear()


@pytest.fixture
def seeded(engine: Engine, settings: Settings, app_env: None) -> dict[str, Any]:
    return seed(engine, settings, datetime.now(UTC))


def run(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_with(at: AppTest, column: str) -> Any:
    """The first dataframe shown with `column` (dataframes carry no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def plain(markdown: str) -> str:
    """What a reader sees of Markdown the dashboard escaped (backslash before punctuation dropped)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def markdown_text(at: AppTest) -> str:
    """Every Markdown and HTML element's text, in page order of each kind (Markdown, then HTML)."""
    return "\n".join([plain(m.value) for m in at.markdown] + [h.proto.body for h in at.html])


def html_with(at: AppTest, needle: str) -> str:
    return next(h.proto.body for h in at.html if needle in h.proto.body)


class _Table(HTMLParser):
    """The cells of the first HTML table: rows of (text, attributes) including header cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, dict[str, str | None]]]] = []
        self.cell: list[str] | None = None
        self.attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell, self.attrs = [], dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(("".join(self.cell).strip(), self.attrs))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def grid_cells(body: str) -> dict[tuple[str, str], tuple[str, dict[str, str | None]]]:
    """An HTML grid as {(row header, column header): (text, attributes)}."""
    table = _Table()
    table.feed(body)
    header = [text for text, _ in table.rows[0][1:]]
    return {(row[0][0], header[j]): cell for row in table.rows[1:] for j, cell in enumerate(row[1:])}


def test_empty_database_shows_the_friendly_message(engine: Engine, app_env: None) -> None:
    for page in (None, "views/breaches.py", "views/transaction.py"):
        at = run(page)
        assert any("controltower simulate" in i.value for i in at.info), page
        assert not at.get("plotly_chart")


def test_health_page_tiles_table_and_charts(seeded: dict[str, Any]) -> None:
    at = run()
    text = html_with(at, "open breaches")  # the channel cards
    # The critical channel comes first, with the reason of its worst SLA.
    assert text.index("walmart") < text.index("amazon")
    assert WALMART_REASON in text
    assert "CRITICAL" in text.upper()
    # The hop strip names the hops in order.
    strip = html_with(at, "Marketplace ingestion")
    assert strip.index("Marketplace ingestion") < strip.index("ERP posting") < strip.index("Carrier confirmation")

    table = table_with(at, "p95")
    walmart_erp = table[(table["Channel"] == "walmart") & (table["SLA"] == "erp_posting")].iloc[0]
    assert walmart_erp["p95"] == seeded["p95_walmart_erp"]
    assert walmart_erp["Target"] == "30 min"
    assert walmart_erp["Open breaches"] == 143
    assert walmart_erp["Health"] == "critical"
    amazon_ack = table[(table["Channel"] == "amazon") & (table["SLA"] == "order_acknowledgement")].iloc[0]
    assert amazon_ack["p95"] == seeded["p95_amazon_ack"]
    assert "all channels" in set(table["Channel"])

    # No chart library on the page people watch all day: HTML grids and inline SVG lines.
    assert not at.get("plotly_chart")
    svg = {m.value.split('data-chart="')[1].split('"')[0]: m.value for m in at.markdown if "<svg" in m.value}
    assert set(svg) == {"Throughput (events per 5 min)", "Error rate (% of events per 5 min)",
                        "Within target — all SLAs"}
    throughput = svg["Throughput (events per 5 min)"]
    assert throughput.count("<polyline") == len(CHANNELS) and all(f"{c}</span>" in throughput for c in CHANNELS)
    heat = grid_cells(html_with(at, "Inventory freshness (age"))
    assert {row for row, _ in heat} == set(CHANNELS)
    assert heat[("ebay", "STORE-0047")][0] == "! 3.2 h"  # 190 min, past ebay's 1 h max age
    assert not any(text.startswith("!") for key, (text, _) in heat.items() if key != ("ebay", "STORE-0047"))


def test_home_throughput_is_the_seeded_events(seeded: dict[str, Any], engine: Engine) -> None:
    flow = queries.throughput(engine, 6, now=datetime.now(UTC))
    assert int(flow["events"].sum()) == seeded["events_6h"]
    assert set(flow["channel"]) == set(CHANNELS)


def test_health_page_window_and_channel_filter(seeded: dict[str, Any]) -> None:
    at = run()
    at.multiselect(key="channels").set_value(["shopify"]).run()
    assert not at.exception
    table = table_with(at, "p95")
    assert set(table["Channel"]) == {"shopify"}
    assert "error rate 4.3%" in markdown_text(at)
    assert "walmart" not in html_with(at, "Channels × SLAs")
    at.segmented_control(key="window").set_value("24h").run()
    table = table_with(at, "p95")
    erp = table[table["SLA"] == "erp_posting"].iloc[0]
    assert erp["Count"] >= 300 * 24  # the 24 h row


def test_breaches_page_from_query_params_lists_only_overdue_items(seeded: dict[str, Any]) -> None:
    at = run("views/breaches.py", sla="erp_posting", channel="walmart")
    assert at.selectbox(key="sla").value == "erp_posting"
    assert at.selectbox(key="channel").value == "walmart"
    table = table_with(at, "Overdue by")
    assert list(table["Correlation id"]) == seeded["overdue_walmart_erp"]
    assert "cid-wm-0" not in set(table["Correlation id"])  # open, not yet due
    assert list(table["Transaction"]) == [f"transaction?id={c}" for c in seeded["overdue_walmart_erp"]]
    assert table.iloc[0]["Order id"] == "SO-2004"
    assert table.iloc[0]["Overdue by"] == "4 h 30 min"
    assert table.iloc[0]["Age"] == "5 h"
    assert at.metric[0].value == "4"

    at.selectbox(key="channel").set_value(None).run()
    assert set(table_with(at, "Overdue by")["Correlation id"]) == {*seeded["overdue_walmart_erp"], "cid-amz-2"}


def test_transaction_page_by_marketplace_order_number(seeded: dict[str, Any]) -> None:
    at = run("views/transaction.py", q="112-0000001-0000001")
    assert at.text_input(key="q").value == "112-0000001-0000001"
    milestones = table_with(at, "Milestone")
    assert list(milestones["Milestone"]) == [
        "order.received", "order.acknowledged", "order.erp_posted", "fulfilment.released", "fulfilment.shipped",
        "shipment.shipment_confirmed",
    ]
    header = next(m.value for m in at.markdown if "correlation id" in m.value)
    assert "SO-1001" in header and "amazon" in header and "cid-amz-1" in header
    verdicts = table_with(at, "From → to")
    assert set(verdicts["SLA"]) == {"order_acknowledgement", "erp_posting", "shipment_confirmation"}
    timeline = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = [t for t in timeline["data"] if t.get("showlegend") is not False]
    assert sum(len(t["x"]) for t in points) == len(FULL)
    error = next(t for t in points if t["name"] == "error")
    assert error["marker"]["color"] == "#cf222e" and error["text"] == ["order.erp_posted"]
    assert len(at.expander) == len(FULL)


def test_transaction_page_by_id_and_search_box(seeded: dict[str, Any]) -> None:
    at = run("views/transaction.py", id="cid-wm-2")
    assert "SO-2002" in markdown_text(at)
    at.text_input(key="q").set_value("no-such-order").run()
    assert not at.exception
    assert any("no-such-order" in plain(w.value) for w in at.warning)
    at.text_input(key="q").set_value("SKU-RED-42").run()
    assert "cid-amz-1" in markdown_text(at)


# -- formatting and the CLI command --------------------------------------------------------------
def test_dashboard_command_argv_and_env(tmp_path: Path) -> None:
    argv = dashboard_argv("0.0.0.0", 8600, cwd=tmp_path)
    assert argv[1:5] == ["-m", "streamlit", "run", str(MAIN)]
    assert argv[-6:] == ["--server.headless", "true", "--server.address", "0.0.0.0", "--server.port", "8600"]
    assert "--theme.primaryColor=#1f6feb" in argv  # the repository's config, started from elsewhere
    assert config_flags(cwd=MAIN.parent.parent) == []  # Streamlit reads it itself there
    settings = Settings.load({"database_url": "postgresql://u@h/db", "data_dir": tmp_path}, environ={})
    env = dashboard_env(settings, {"CONTROLTOWER_REFRESH_SECONDS": "5", "PATH": "/bin"})
    assert env["CONTROLTOWER_DATABASE_URL"] == "postgresql://u@h/db"
    assert env["CONTROLTOWER_DATA_DIR"] == str(tmp_path.resolve())
    assert env["CONTROLTOWER_REFRESH_SECONDS"] == "5" and env["PATH"] == "/bin"


# -- the pages added for the operations issue ----------------------------------------------------
def _last_hour(pairs: list[tuple[datetime, int]], now: datetime) -> int:
    return sum(c for minute, c in pairs if minute >= now - timedelta(hours=1))


def test_home_page_headline_counts_and_health_grid(seeded: dict[str, Any]) -> None:
    before = datetime.now(UTC)
    at = run()
    after = datetime.now(UTC)
    metrics = {m.label: m.value for m in at.metric}
    received = {f"{_last_hour(seeded['received_by_minute'], t):,}" for t in (before, after)}
    assert metrics["Orders received (last hour)"] in received
    assert metrics["Open breaches"] == "6"  # overdue open items: 4 walmart + amazon + walmart ack
    assert metrics["Firing alerts"] == str(seeded["firing_alerts"])
    assert metrics["Dead letters (last hour)"] == "5"

    cell = grid_cells(html_with(at, "Channels × SLAs"))
    assert [row for row, col in cell if col == "ERP posting"] == [*CHANNELS, "all channels"]
    assert [col for row, col in cell if row == "amazon"] == [
        "Dead letters", "ERP posting", "Error rate", "Inventory freshness", "Order acknowledgement"]
    text, attrs = cell[("walmart", "ERP posting")]
    assert text == "✖ p95 2 h 10 min" and attrs["data-health"] == "critical"
    assert attrs["title"] == f"walmart · erp_posting: CRITICAL · p95 2 h 10 min · {WALMART_REASON}"
    assert cell[("shopify", "Error rate")][0] == "! 4.3 %"
    assert cell[("ebay", "Inventory freshness")][0] == "! 3 h 10 min"
    assert cell[("amazon", "Order acknowledgement")][0] == "✓ p95 1 min 35 s"
    assert cell[("amazon", "Dead letters")][0] == ""  # no such SLA for a channel: an empty cell


def test_sidebar_names_the_app_and_version(seeded: dict[str, Any]) -> None:
    import controltower

    at = run()
    assert "Control Tower" in "\n".join(m.value for m in at.sidebar.markdown)
    assert any(controltower.__version__ in c.value for c in at.sidebar.caption)


def test_database_down_shows_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch, database_url: str,
                                                       app_env: None) -> None:
    missing = sa.engine.make_url(database_url).set(database="ct_no_such_database").render_as_string(hide_password=False)
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", missing)
    for page in (None, "views/breaches.py", "views/channel.py", "views/transaction.py", "views/reconciliation.py",
                 "views/inventory.py", "views/alerts.py"):
        at = run(page)
        assert not at.exception, page
        errors = [e.value for e in at.error]
        assert any("database is unreachable" in e and "ct_no_such_database" in plain(e) for e in errors), (page, errors)
        assert "Traceback" not in "\n".join(errors)


def test_percentile_of_merged_histograms_within_two_percent() -> None:
    rnd = random.Random(7)
    samples = [rnd.lognormvariate(math.log(40_000), 0.8) for _ in range(5000)]
    halves = [{}, {}]
    for i, sample in enumerate(samples):
        key = str(bucket_of(sample))  # JSON keys are strings
        halves[i % 2][key] = halves[i % 2].get(key, 0) + 1
    merged = histogram.merge(halves)
    assert sum(merged.values()) == len(samples)
    ordered = sorted(samples)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert abs(histogram.percentile(merged, q) / exact - 1) < 0.02, q
    assert histogram.percentile({}, 0.5) is None
    assert histogram.percentile({250: 1}, 0.5) == pytest.approx(histogram.bucket_value(250))


def test_latency_bins_merge_minutes_into_five_minute_bins() -> None:
    t0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    rows = pd.DataFrame([
        {"sla": "a", "minute": t0 + timedelta(minutes=m), "count": 2, "met": 1,
         "hist": {str(bucket_of(1000.0 * (m + 1))): 1, str(bucket_of(60_000.0)): 1}}
        for m in range(10)
    ])
    bins = queries.latency_bins(rows, bin_minutes=5)
    assert list(bins["count"]) == [10, 10] and list(bins["met"]) == [5, 5]
    assert list(bins["bucket"]) == [pd.Timestamp(t0), pd.Timestamp(t0 + timedelta(minutes=5))]
    assert bins.iloc[0]["p50_ms"] == pytest.approx(5000, rel=0.02)
    assert bins.iloc[0]["p95_ms"] == pytest.approx(60_000, rel=0.02)


def test_channel_page_latency_throughput_budget_and_breaches(seeded: dict[str, Any]) -> None:
    at = run("views/channel.py", channel="amazon")
    assert at.selectbox(key="channel").value == "amazon"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    ack = next(s for s in specs if s["layout"]["title"]["text"].startswith("order_acknowledgement"))
    p95 = next(t for t in ack["data"] if t["name"] == "p95")
    samples = seeded["amazon_ack_samples"]
    checked = 0
    for x, y in zip(p95["x"], p95["y"], strict=True):
        bucket = pd.Timestamp(x)
        bucket = bucket.tz_localize(UTC) if bucket.tzinfo is None else bucket
        in_bin = sorted(v for minute, values in samples.items()
                        if bucket <= pd.Timestamp(minute) < bucket + pd.Timedelta(minutes=5) for v in values)
        exact = in_bin[math.ceil(0.95 * len(in_bin)) - 1] / 60_000
        assert abs(y / exact - 1) < 0.025, (x, y, exact)  # 2 % plus the chart's rounding to 0.01 min
        checked += 1
    assert checked >= 60  # 6 h of 5-minute bins
    assert [round(s["y0"], 3) for s in ack["layout"]["shapes"]] == [30.0]  # the 30 min target
    flow = next(s for s in specs if "throughput and errors" in s["layout"]["title"]["text"])
    assert {t["name"] for t in flow["data"]} == {"events", "errors"}

    budgets = table_with(at, "Error budget left")
    row = budgets[(budgets["SLA"] == "erp_posting") & (budgets["Window"] == "1h")].iloc[0]
    assert row["Error budget left"] == "97 %" and row["Burn rate (short)"] == "0.1×"
    breaches = table_with(at, "Overdue by")
    assert list(breaches["Correlation id"]) == ["cid-amz-2"]
    assert list(breaches["Transaction"]) == ["transaction?id=cid-amz-2"]

    at.selectbox(key="channel").set_value("walmart").run()
    assert at.query_params["channel"] == ["walmart"] or at.query_params["channel"] == "walmart"
    breaches = table_with(at, "Overdue by")
    assert set(breaches["Correlation id"]) == {*seeded["overdue_walmart_erp"], "cid-wm-9"}
    assert "✖ CRITICAL" in markdown_text(at)


def test_transaction_story_reads_like_the_issue_example() -> None:
    tx = {
        "channel": "walmart",
        "milestones": {"order.received": "2026-11-22T09:12:04.000Z", "order.acknowledged": "2026-11-22T09:13:30.000Z",
                       "order.erp_posted": "2026-11-22T09:20:00.000Z", "fulfilment.released": "2026-11-22T09:41:00.000Z",
                       "fulfilment.shipped": "2026-11-22T14:05:00.000Z"},
        "events": [
            {"occurred_at": f"2026-11-22T14:{10 + i}:00.000Z", "flow": "shipment", "stage": "shipment_confirmed",
             "status": "retry"} for i in range(3)
        ] + [{"occurred_at": "2026-11-22T09:12:04.000Z", "flow": "order", "stage": "received", "status": "ok"}],
        "sla": [
            {"sla": "erp_posting", "state": "met", "due_at": "2026-11-22T09:42:04.000Z"},
            {"sla": "shipment_confirmation", "state": "pending", "due_at": "2026-11-22T18:00:00.000Z"},
        ],
    }
    assert transaction_story(tx) == (
        "Received from Walmart 09:12, acknowledged 09:13, posted to the ERP 09:20, released to the warehouse 09:41, "
        "shipped 14:05; confirmation to Walmart failed 3 times — blocking step: shipment confirmation, due by 18:00."
    )
    # Overdue beats pending; a recovered step says so; another day shows its date.
    tx["sla"].append({"sla": "erp_posting_x", "state": "overdue", "due_at": "2026-11-23T08:00:00.000Z"})
    tx["events"].append({"occurred_at": "2026-11-22T09:15:00.000Z", "flow": "order", "stage": "erp_posted",
                         "status": "error"})
    story = transaction_story(tx)
    assert "posting to the ERP failed once, then succeeded" in story
    assert story.endswith("blocking step: ERP posting x, overdue since 23 Nov 08:00.")
    assert transaction_story({"channel": "pos", "milestones": {}, "events": [], "sla": []}) == (
        "No milestone reached yet for this POS order.")


def test_transaction_page_story_deep_link_and_related_alerts(seeded: dict[str, Any]) -> None:
    at = run("views/transaction.py", correlation_id="cid-wm-2")
    assert at.text_input(key="q").value == "cid-wm-2"
    story = plain(at.info[0].value)
    assert story.startswith("Received from Walmart ")
    assert "acknowledged" in story and "posting to the ERP failed once" in story
    assert "blocking step: ERP posting, overdue since" in story
    alerts = table_with(at, "Firing since")
    assert list(alerts["Rule"]) == ["ErpPostingSlow"]

    at = run("views/transaction.py", id="cid-amz-1")
    story = plain(at.info[0].value)
    assert "shipment confirmed to Amazon" in story and "confirmation to Amazon failed once, then succeeded" in story
    assert "blocking step" not in story
    assert not any("Firing since" in d.value.columns for d in at.dataframe)  # no amazon alert is firing


def test_reconciliation_funnel_and_gap(seeded: dict[str, Any]) -> None:
    at = run("views/reconciliation.py", channel="ebay", day=seeded["recon_day"].isoformat())
    assert at.date_input(key="day").value == seeded["recon_day"]
    funnel = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert funnel["x"] == seeded["recon_funnel"]
    assert funnel["y"][0] == "received" and funnel["y"][-1] == "delivered"
    # The first gap with orders in it is selected: acknowledged but never posted to the ERP.
    assert at.selectbox(key="gap").value == "acknowledged → erp_posted"
    stuck = table_with(at, "External order id")
    assert list(stuck["Correlation id"]) == ["cid-eb-5"]
    assert list(stuck["External order id"]) == ["EB-9105"] and list(stuck["Order id"]) == ["SO-4005"]
    assert list(stuck["Transaction"]) == ["transaction?id=cid-eb-5"]

    at.selectbox(key="gap").set_value("shipped → shipment_confirmed").run()
    assert list(table_with(at, "External order id")["Correlation id"]) == ["cid-eb-3"]
    at.selectbox(key="gap").set_value("released → shipped").run()
    assert any("also reached shipped" in s.value for s in at.success)

    at.date_input(key="day").set_value(seeded["recon_day"] - timedelta(days=3)).run()
    assert any("No ebay orders" in i.value for i in at.info)


def test_inventory_page_heat_map_and_stale_feeds(seeded: dict[str, Any]) -> None:
    at = run("views/inventory.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Feeds (channel × location)"] == "22"  # 4 channels × 5 locations + pos at its 2 stores
    assert metrics["Stale feeds"] == "1"
    assert metrics["Max age"] == "3 h 10 min"
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    i, j = heat["y"].index("ebay"), heat["x"].index("STORE-0047")
    assert heat["z"][i][j] == pytest.approx(190, abs=0.2)
    assert heat["text"][i][j] == "! 3.2 h"
    assert not any(t.startswith("!") for row_i, row in enumerate(heat["text"]) for col_j, t in enumerate(row)
                   if (row_i, col_j) != (i, j))
    stale = table_with(at, "Over by")
    assert list(stale["Location"]) == ["STORE-0047"] and list(stale["Max age"]) == ["1 h"]
    assert list(stale["Over by"]) == ["2 h 10 min"]


def test_alerts_page_lists_acknowledges_and_silences(seeded: dict[str, Any], engine: Engine) -> None:
    at = run("views/alerts.py")
    active = table_with(at, "Acknowledged")
    assert list(active["Rule"]) == ["ErpPostingSlow", "InventoryStale", "ErrorRateHigh"]  # firing (critical first), pending
    assert list(active["State"]) == ["firing", "firing", "pending"]
    assert "AckSlow" not in set(active["Rule"])  # resolved
    assert active.iloc[0]["Labels"] == "alertname=ErpPostingSlow, channel=walmart, severity=critical, sla=erp_posting"
    assert active.iloc[0]["Value"] == "143" and active.iloc[0]["Acknowledged"] == "–"
    assert active.iloc[1]["Acknowledged"].startswith("dana at ")
    history = table_with(at, "Change")
    assert len(history) == 4 and history.iloc[0]["Change"] == "inactive → pending"
    silences = table_with(at, "Matchers")
    assert list(silences["Matchers"]) == ["channel=pos"] and list(silences["Active"]) == ["yes"]

    # A name is required.
    at.selectbox(key="ack_pick").set_value("fp-wm-erp")
    at.button(key="ack").click().run()
    assert any("Enter your name" in e.value for e in at.error)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT acknowledged_by FROM alert_state WHERE fingerprint = 'fp-wm-erp'")).scalar() is None

    at.text_input(key="who").set_value("Robin")
    at.selectbox(key="ack_pick").set_value("fp-wm-erp")
    at.button(key="ack").click().run()
    assert not at.exception
    with engine.connect() as conn:
        by, when = conn.execute(sa.text(
            "SELECT acknowledged_by, acknowledged_at FROM alert_state WHERE fingerprint = 'fp-wm-erp'")).one()
    assert by == "Robin" and abs((datetime.now(UTC) - when).total_seconds()) < 60
    with engine.connect() as conn:  # through controltower.alertops: the state history says so too
        assert conn.execute(sa.text("SELECT summary FROM alert_events WHERE fingerprint = 'fp-wm-erp' "
                                    "ORDER BY id DESC LIMIT 1")).scalar() == "acknowledged by Robin"
    assert any("Acknowledged" in s.value and "Robin" in s.value for s in at.success)
    assert table_with(at, "Acknowledged").iloc[0]["Acknowledged"].startswith("Robin at ")

    at.selectbox(key="silence_pick").set_value("fp-shop-err")
    at.selectbox(key="silence_duration").set_value("4h")
    at.text_input(key="silence_comment").set_value("deploy in progress")
    at.button(key="silence").click().run()
    assert not at.exception
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT matchers, ends_at - starts_at AS span, created_by, comment FROM alert_silences "
            "WHERE created_by = 'Robin'")).one()
    assert row.matchers == {"alertname": "ErrorRateHigh", "channel": "shopify", "sla": "error_rate", "severity": "warning"}
    assert row.span == timedelta(hours=4) and row.comment == "deploy in progress"
    assert "channel=shopify" in " ".join(table_with(at, "Matchers")["Matchers"])
    with engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT actor, action, target, detail->>'via' FROM alert_audit ORDER BY id")).all()
    assert [tuple(r) for r in audit] == [("Robin", "acknowledge", "fp-wm-erp", "dashboard"),
                                         ("Robin", "silence", f"silence:{audit[1].target.split(':')[1]}", "dashboard")]


def test_oidc_login_gates_every_page_when_configured(seeded: dict[str, Any]) -> None:
    at = AppTest.from_file(str(MAIN), default_timeout=30)
    at.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "test-only",
        "client_id": "control-tower", "client_secret": "test-only",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    }
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert "walmart" not in " ".join(m.value for m in at.markdown)  # no data before sign-in
    assert not at.dataframe


AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "test-only",
        "client_id": "control-tower", "client_secret": "test-only",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


def signed_in(email: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": email, "name": "Someone"}
    return at


def test_signed_in_user_outside_the_allow_list_is_refused(seeded: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLTOWER_DASHBOARD_ALLOWED_DOMAINS", "acme.com")
    at = signed_in("eve@evilacme.com").run()
    assert not at.exception
    assert any("is not allowed to use this dashboard" in plain(e.value) and "eve@evilacme.com" in plain(e.value)
               for e in at.error)
    assert [b.label for b in at.button] == ["Sign out"]
    assert not at.dataframe and not at.html and "walmart" not in markdown_text(at)

    at = signed_in("ana@acme.com").run()
    assert not at.exception and not at.error
    assert "walmart" in markdown_text(at)


def test_acknowledgement_records_the_signed_in_identity_not_a_typed_name(seeded: dict[str, Any],
                                                                        engine: Engine) -> None:
    at = signed_in("ana@acme.com").run()
    at.switch_page("views/alerts.py").run()
    assert not at.exception
    assert not [t for t in at.text_input if t.key == "who"]  # no name to type: the sign-in says who
    assert any("Acting as ana" in plain(c.value) for c in at.caption)
    at.selectbox(key="ack_pick").set_value("fp-wm-erp")
    at.button(key="ack").click().run()
    assert not at.exception
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT acknowledged_by FROM alert_state WHERE fingerprint = 'fp-wm-erp'")).scalar() == "ana@acme.com"
        assert conn.execute(sa.text("SELECT actor FROM alert_audit")).scalars().all() == ["ana@acme.com"]


def test_search_by_the_email_an_order_id_was_masked_from(seeded: dict[str, Any], engine: Engine,
                                                        settings: Settings) -> None:
    """Support types the customer's email: the dashboard finds the order stored under its token."""
    from controltower.masking import Masker

    now = datetime.now(UTC)
    record = {"event_id": "mail-1", "occurred_at": (now - timedelta(minutes=5)).isoformat(),
              "correlation_id": "cid-mail-1", "order_id": "jane.roe@example.com", "channel": "shopify",
              "flow": "order", "stage": "received"}
    assert EventStore(engine, settings, Masker()).ingest([record], source="test", now=now).accepted == 1
    at = run("views/transaction.py")
    at.text_input(key="q").set_value("jane.roe@example.com").run()
    assert not at.exception
    shown = markdown_text(at)
    assert "cid-mail-1" in shown and Masker().mask_identifier("jane.roe@example.com") in shown
    assert "jane.roe@example.com" not in shown.replace("jane\\.roe", "")
