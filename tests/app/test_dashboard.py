"""The dashboard under Streamlit's AppTest, against a real Postgres seeded with known rows.

`seed()` writes what the metrics job and the collectors would have written (SLA table, hops,
open items, rollups, freshness) plus real transactions through the collectors' EventStore; the
browser test and the screenshot script reuse it.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from app import data
from app.commands import config_flags, dashboard_argv, dashboard_env
from collectors.store import EventStore
from controltower.settings import Settings

MAIN = Path(data.__file__).resolve().parent / "main.py"
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
            status.append(_sla_row("inventory_freshness", channel, window, now, kind="freshness",
                                   count=len(LOCATIONS), value=190.0 if stale else 12.0, threshold=60.0,
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
    facts["events_6h"] = sum(e["count"] for e in events)
    facts["errors_6h"] = sum(e["count"] for e in events if e["status"] == "error")
    # Older than 24 h: never in a chart.
    events.append({"minute": minute0 - timedelta(hours=30), "channel": "amazon", "flow": "order",
                   "stage": "received", "status": "ok", "count": 999_999})

    sla_minutes = []
    for m in range(350):
        minute = minute0 - timedelta(minutes=m)
        for channel in CHANNELS:
            for sla in ("order_acknowledgement", "erp_posting"):
                count = rnd.randint(5, 30)
                met = count if rnd.random() > 0.1 else count - 1
                if sla == "erp_posting" and channel == "walmart" and m < 120:
                    met = int(count * (0.2 + m / 300))
                sla_minutes.append({"sla": sla, "channel": channel, "minute": minute, "count": count, "met": met,
                                    "hist": "{}"})

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

    with engine.begin() as conn:
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


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_empty_database_shows_the_friendly_message(engine: Engine, app_env: None) -> None:
    for page in (None, "views/breaches.py", "views/transaction.py"):
        at = run(page)
        assert any("controltower simulate" in i.value for i in at.info), page
        assert not at.get("plotly_chart")


def test_health_page_tiles_table_and_charts(seeded: dict[str, Any]) -> None:
    at = run()
    text = markdown_text(at)
    # The critical channel comes first, with the reason of its worst SLA.
    assert text.index("walmart") < text.index("amazon")
    assert WALMART_REASON in text
    assert "CRITICAL" in text.upper()
    # The hop strip names the hops in order.
    strip = next(m.value for m in at.markdown if "Marketplace ingestion" in m.value)
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

    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    specs = {json.dumps(s["layout"]["title"]["text"]): s for s in charts.values()}
    throughput = next(s for t, s in specs.items() if "Throughput" in t)
    assert sum(sum(trace["y"]) for trace in throughput["data"]) == seeded["events_6h"]
    assert {trace["name"] for trace in throughput["data"]} == set(CHANNELS)
    assert any("Error rate" in t for t in specs)
    assert any("Within target" in t for t in specs)
    heat = next(s for t, s in specs.items() if "freshness" in t)
    assert heat["data"][0]["y"] == CHANNELS and "STORE-0047" in heat["data"][0]["x"]


def test_health_page_window_and_channel_filter(seeded: dict[str, Any]) -> None:
    at = run()
    at.multiselect(key="channels").set_value(["shopify"]).run()
    assert not at.exception
    table = table_with(at, "p95")
    assert set(table["Channel"]) == {"shopify"}
    assert "error rate 4.3%" in markdown_text(at)
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
    assert any("no-such-order" in w.value for w in at.warning)
    at.text_input(key="q").set_value("SKU-RED-42").run()
    assert "cid-amz-1" in markdown_text(at)


# -- formatting and the CLI command --------------------------------------------------------------
@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "–"), (850, "850 ms"), (4_200, "4.2 s"), (42_000, "42 s"), (245_000, "4 min 5 s"), (60_000, "1 min"),
     (7_800_000, "2 h 10 min"), (7_200_000, "2 h"), (273_600_000, "3 d 4 h")],
)
def test_human_duration(ms: float | None, text: str) -> None:
    assert data.human_duration(ms) == text


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
