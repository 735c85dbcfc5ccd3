"""The Identity page under AppTest: orphans per system and channel, duplicate orders and hubs from
real ingest (linking included) and the metrics job's signals, on a real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collectors.store import EventStore
from controltower.settings import Settings
from metrics import definitions, signals
from tests.app.test_dashboard import app_env, run, table_with  # noqa: F401  (fixture)
from tests.app.test_injection import assert_inert, page_text

PAGE = "views/identity.py"
EVIL_KEY = "[Your session expired](https://evil.example/sso)"
EVIL_CID = "CAR-<img src=x onerror=alert(1)>"
EVIL_HUB = '<a href="https://evil.example/h">PENDING</a>'


def _event(cid: str, milestone: str, at: datetime, *, system: str, channel: str | None = None, n: int = 0,
           **attributes: Any) -> dict[str, Any]:
    flow, stage = milestone.split(".")
    record = {"event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
              "flow": flow, "stage": stage, "status": "ok", "system": system, "attributes": attributes}
    if channel:
        record["channel"] = channel
    return record


def seed(engine: Engine, settings: Settings) -> datetime:
    """Three orphans (two carrier scans nobody ordered, an ERP posting on ebay), one duplicate
    order on amazon (two ERP documents), one order that is fine, two hubs."""
    now = datetime.now(UTC)
    at = now - timedelta(hours=1)
    records = [
        _event(EVIL_CID, "shipment.first_scan", at, system="carrier", tracking_number=EVIL_KEY),
        _event("CAR-2", "shipment.first_scan", at + timedelta(minutes=5), system="carrier", tracking_number="1Z0002"),
        _event("ERP-3", "order.erp_posted", at + timedelta(minutes=10), system="erp", channel="ebay", erp_document="4500003"),
        _event("MKT-1", "order.received", at, system="marketplace", channel="amazon", external_order_id="112-1"),
        _event("ERP-1a", "order.erp_posted", at + timedelta(minutes=2), system="erp", channel="amazon",
               external_order_id="112-1", erp_document="4500011"),
        _event("ERP-1b", "order.erp_posted", at + timedelta(minutes=3), system="erp", channel="amazon",
               external_order_id="112-1", erp_document="4500012"),
        _event("MKT-2", "order.received", at, system="marketplace", channel="amazon", external_order_id="112-2"),
        _event("ERP-2", "order.erp_posted", at + timedelta(minutes=2), system="erp", channel="amazon",
               external_order_id="112-2", erp_document="4500021"),
    ]
    result = EventStore(engine, settings).ingest(records, source="test", now=at + timedelta(minutes=11))
    assert not result.rejected, result.rejected
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO identity_hubs (kind, value, fanout, first_seen_at, last_seen_at) VALUES"
            " ('tracking_number', :evil, 64, :a, :b), ('erp_document', 'DEFAULT', 23, :a, :a)"),
            {"evil": EVIL_HUB, "a": at, "b": now})
    signals.refresh(engine, definitions.load(), now, settings)
    return now


@pytest.fixture
def seeded(engine: Engine, settings: Settings, app_env: None) -> datetime:  # noqa: F811
    return seed(engine, settings)


def test_identity_page_counts_chart_and_lists(seeded: datetime) -> None:
    at = run(PAGE)
    assert {m.label: m.value for m in at.metric} == {"Orphans": "3", "Duplicate orders": "1", "Hubs": "2"}
    bars = {trace["name"]: dict(zip(trace["x"], trace["y"], strict=True))
            for trace in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert bars == {"ebay": {"carrier": 0, "erp": 1}, "unknown": {"carrier": 2, "erp": 0}}

    orphans = table_with(at, "Keys")
    assert list(orphans["Correlation id"]) == ["ERP-3", "CAR-2", EVIL_CID]  # newest first
    assert list(orphans["System"]) == ["erp", "carrier", "carrier"]
    assert list(orphans["Channel"]) == ["ebay", "unknown", "unknown"]
    assert list(orphans["Keys"]) == ["erp_document 4500003", "tracking_number 1Z0002", f"tracking_number {EVIL_KEY}"]
    assert list(orphans["Milestones"]) == ["order.erp_posted", "shipment.first_scan", "shipment.first_scan"]
    assert orphans["Age"].iloc[0].startswith("50 min") and orphans["Age"].iloc[2].startswith("1 h")
    assert orphans["Transaction"].iloc[1] == "transaction?id=CAR-2"

    duplicates = table_with(at, "ERP documents")
    assert list(duplicates["Correlation id"]) == ["MKT-1"]  # the canonical member, not the business id
    assert list(duplicates["ERP documents"]) == ["4500011, 4500012"]
    assert list(duplicates["Members"]) == ["MKT-1, ERP-1a, ERP-1b"]

    hubs = table_with(at, "Fan-out")
    assert list(hubs["Value"]) == [EVIL_HUB, "DEFAULT"] and list(hubs["Fan-out"]) == [64, 23]
    assert_inert(at)
    assert "evil.example" not in page_text(at)  # hostile values only ever inside dataframes (text)


def test_identity_page_filters_from_the_url(seeded: datetime) -> None:
    at = run(PAGE, system="carrier", channel="unknown")
    assert at.selectbox(key="system").value == "carrier" and at.selectbox(key="channel").value == "unknown"
    assert list(table_with(at, "Keys")["Correlation id"]) == ["CAR-2", EVIL_CID]
    at.selectbox(key="system").set_value("erp").run()
    assert any("No orphans for erp · unknown" in i.value for i in at.info)
    assert at.query_params["system"] in ("erp", ["erp"])  # the URL follows the filters
    at.selectbox(key="channel").set_value(None).run()
    assert list(table_with(at, "Keys")["Correlation id"]) == ["ERP-3"]
    assert_inert(at)


def test_identity_page_without_signals_says_so(engine: Engine, settings: Settings, app_env: None) -> None:  # noqa: F811
    ok = [_event("MKT-9", "order.received", datetime.now(UTC) - timedelta(minutes=30), system="marketplace",
                 channel="amazon", external_order_id="112-9")]
    assert EventStore(engine, settings).ingest(ok, source="test", now=datetime.now(UTC)).accepted == 1
    signals.refresh(engine, definitions.load(), datetime.now(UTC), settings)
    at = run(PAGE)
    assert {m.label: m.value for m in at.metric} == {"Orphans": "0", "Duplicate orders": "0", "Hubs": "0"}
    assert [s.value.split(":")[0] for s in at.success] == ["No orphans", "No duplicate orders", "No hubs"]
    assert not at.get("plotly_chart")


def test_identity_page_on_an_empty_database_shows_the_friendly_message(engine: Engine, app_env: None) -> None:  # noqa: F811
    at = run(PAGE)
    assert any("controltower simulate" in i.value for i in at.info)


def test_identity_page_counts_more_duplicates_and_hubs_than_it_lists(engine: Engine, settings: Settings,
                                                                     app_env: None) -> None:  # noqa: F811
    """Found by review: the Duplicate orders and Hubs figures were the length of the lists, which stop
    at 500: 501 of each read "500"."""
    now = datetime.now(UTC)
    at = now - timedelta(hours=1)
    records = []
    for i in range(501):
        records += [
            _event(f"MKT-{i}", "order.received", at, system="marketplace", channel="amazon", external_order_id=f"X-{i}"),
            _event(f"ERP-{i}a", "order.erp_posted", at, system="erp", channel="amazon", external_order_id=f"X-{i}",
                   erp_document=f"A-{i}"),
            _event(f"ERP-{i}b", "order.erp_posted", at, system="erp", channel="amazon", external_order_id=f"X-{i}",
                   erp_document=f"B-{i}"),
        ]
    result = EventStore(engine, settings).ingest(records, source="test", now=at)
    assert not result.rejected, result.rejected
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO identity_hubs (kind, value, fanout, first_seen_at, last_seen_at) "
            "SELECT 'tracking_number', 'HUB-' || i, 21 + i, :a, :a FROM generate_series(1, 501) i"), {"a": at})
    signals.refresh(engine, definitions.load(), now, settings)
    page = run(PAGE)
    assert {m.label: m.value for m in page.metric} == {"Orphans": "0", "Duplicate orders": "501", "Hubs": "501"}
    assert len(table_with(page, "ERP documents")) == 500 and len(table_with(page, "Fan-out")) == 500
