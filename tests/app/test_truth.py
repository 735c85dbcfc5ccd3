"""The dashboard shows the core's one truth: open breaches, SLA units, judge verdicts, and
whether alerting runs (the banner on every page). Real Postgres, AppTest, values by hand."""

# ruff: noqa: F811  (the `seeded` and `app_env` fixtures come from test_dashboard)
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from app import queries, shaping
from collectors.store import EventStore
from controltower import slajudge
from controltower.settings import Settings
from tests.app.test_dashboard import app_env, plain, run, seeded, table_with  # noqa: F401 (fixtures)
from tests.app.test_safety import rendered_link

PAGES = (None, "views/breaches.py", "views/channel.py", "views/transaction.py", "views/reconciliation.py",
         "views/inventory.py", "views/alerts.py")
NOW = datetime(2026, 11, 30, 21, 30, tzinfo=UTC)


# -- open breaches: stored times out of range never break the page ---------------------------------
def test_open_breaches_page_lists_out_of_range_times_as_invalid(seeded: dict[str, Any], engine: Engine) -> None:
    with engine.begin() as conn:
        # as an older collector (or a restore) could have stored them: year 1 and 9999 with offsets,
        # which exist in PostgreSQL but not as Python datetimes in UTC
        conn.execute(sa.text(
            "INSERT INTO sla_open_items VALUES ('erp_posting', 'Y1', 'walmart', "
            "CAST('0001-01-01T00:00:00+05:00' AS timestamptz), CAST('0001-01-02T00:00:00+05:00' AS timestamptz)), "
            "('erp_posting', 'Y9999', 'walmart', CAST('9999-12-31T23:00:00-05:00' AS timestamptz), "
            "CAST('0001-01-01T00:30:00+05:00' AS timestamptz))"))
        conn.execute(sa.text(
            "INSERT INTO sla_deadlines VALUES ('ship_by_expected_date', 'cid-wm-1', "
            "CAST('9999-12-31T23:00:00-05:00' AS timestamptz)), ('ship_by_expected_date', 'cid-wm-2', "
            "CAST('0001-01-01T00:00:00+05:00' AS timestamptz))"))
    for page in PAGES:
        run(page)  # asserts no exception on every page
    at = run("views/breaches.py", sla="erp_posting", channel="walmart")
    table = table_with(at, "Overdue by")
    # year-1 due times sort first (Y9999's is due 0000-12-31 19:30 UTC, Y1's 0001-01-01 19:00 UTC);
    # the seeded ones follow, most overdue first
    assert list(table["Correlation id"]) == ["Y9999", "Y1", *seeded["overdue_walmart_erp"]]
    for cid in ("Y1", "Y9999"):
        row = table[table["Correlation id"] == cid].iloc[0]
        assert row["Note"].startswith("invalid date") and row["Age"] == "–" and row["Overdue by"] == "–"
    assert table.iloc[2]["Note"] == "" and table.iloc[2]["Overdue by"] == "4 h 30 min"
    assert at.metric[0].value == "6"
    assert any(plain(w.value).startswith("2 items with an invalid date stored") for w in at.warning)
    assert at.metric[1].value == "4 h 30 min"  # the oldest readable overdue time
    at = run("views/channel.py", channel="walmart")
    assert {"Y1", "Y9999"} <= set(table_with(at, "Overdue by")["Correlation id"])
    at = run("views/transaction.py", id="cid-wm-1")
    assert table_with(at, "Milestone") is not None


# -- reconciliation counts with the core's funnel --------------------------------------------------
def test_funnel_frames_come_from_the_core(seeded: dict[str, Any], engine: Engine) -> None:
    day = seeded["recon_day"]
    stages = queries.funnel(engine, "ebay", day)
    assert list(stages["stage"]) == ["received", "acknowledged", "erp_posted", "released", "shipped",
                                     "shipment_confirmed", "delivered"]
    assert list(stages["orders"]) == [5, 5, 4, 3, 3, 2, 1]
    gap = queries.funnel_gap(engine, "ebay", day, "acknowledged", "erp_posted")
    assert list(gap.columns) == queries.GAP_COLUMNS
    assert gap[["correlation_id", "order_id", "external_order_id"]].values.tolist() == [["cid-eb-5", "SO-4005", "EB-9105"]]
    empty = queries.funnel_gap(engine, "nowhere", day, "acknowledged", "erp_posted")
    assert empty.empty and list(empty.columns) == queries.GAP_COLUMNS


# -- the unit published with the definition decides percentages, not the SLA's name ---------------
@pytest.mark.parametrize(
    ("row", "value", "target"),
    [
        ({"sla": "error_rate", "kind": "rate", "unit": "ratio", "value": 0.043, "threshold": 0.02}, "4.3 %", "≤ 2.0 %"),
        # named error_rate but published as a count: a number, not a percentage
        ({"sla": "error_rate", "kind": "rate", "unit": "count", "value": 0.5, "threshold": 0.75}, "0.5", "≤ 0.75"),
        # any name: a ratio above 1 (and a threshold above 1) is still a percentage
        ({"sla": "late_share", "kind": "rate", "unit": "ratio", "value": 1.5, "threshold": 2.0}, "150.0 %", "≤ 200.0 %"),
        ({"sla": "dead_letters", "kind": "rate", "unit": "count", "value": 3.0, "threshold": 1.0}, "3", "≤ 1"),
        # not yet published: the shape of the numbers
        ({"sla": "x", "kind": "rate", "unit": None, "value": 0.25, "threshold": 0.5}, "25.0 %", "≤ 50.0 %"),
    ],
)
def test_ratio_or_count_by_published_unit(row: dict[str, Any], value: str, target: str) -> None:
    full = {"count": 10, "p50_ms": None, "p95_ms": None, "p99_ms": None, "target_ms": None, "within_target_ratio": None,
            "open_breaches": 0, "oldest_breach_ms": None, "health": "ok", "reason": None, "channel": "amazon",
            "window": "1h", "error_budget_remaining": None, "burn_rate_short": None, "burn_rate_long": None, **row}
    assert shaping.status_value(full) == value
    shown = shaping.sla_display(pd.DataFrame([full])).iloc[0]
    assert (shown["Value"], shown["Target"]) == (value, target)


def test_sla_status_carries_the_published_unit(seeded: dict[str, Any], engine: Engine) -> None:
    status = queries.sla_status(engine, "1h")
    units = dict(zip(status["sla"], status["unit"], strict=False))
    assert units["error_rate"] == "ratio" and units["dead_letters"] == "count"
    assert units["inventory_freshness"] == "ms"
    assert pd.isna(units["order_acknowledgement"])  # published without a unit in this seed
    grid = shaping.health_grid(status)
    shop = grid[(grid["channel"] == "shopify") & (grid["sla"] == "error_rate")].iloc[0]
    assert shop["value"] == "4.3 %"


# -- every judge state has a health; closed verdicts say what closed them --------------------------
def test_every_judge_state_has_a_health() -> None:
    assert set(slajudge.STATES) <= set(shaping.STATE_HEALTH)
    assert shaping.STATE_HEALTH["closed"] == "ok" and shaping.STATE_HEALTH["overdue"] == "critical"
    assert {shaping.STATE_HEALTH[s] for s in ("unjudged", "excluded", "not_started")} == {"unknown"}


def test_transaction_page_shows_a_closed_verdict_with_its_closing_milestone(seeded: dict[str, Any], engine: Engine,
                                                                            settings: Settings) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE sla_definitions SET definition = CAST(:d AS jsonb) WHERE name = 'erp_posting'"),
                     {"d": '{"closed_by": ["cancellation.confirmed"], "unit": "ms"}'})
    records = [
        {"event_id": f"cancel-{i}", "occurred_at": (now - timedelta(hours=3 - i)).isoformat(), "correlation_id": "cid-cancel",
         "order_id": "SO-9001", "channel": "amazon", "flow": flow, "stage": stage, "status": "ok", "system": "oms"}
        for i, (flow, stage) in enumerate((("order", "received"), ("cancellation", "confirmed")))
    ]
    result = EventStore(engine, settings).ingest(records, source="test", now=now)
    assert result.accepted == 2, result.rejected
    at = run("views/transaction.py", id="cid-cancel")
    verdicts = table_with(at, "From → to")
    erp = verdicts[verdicts["SLA"] == "erp_posting"].iloc[0]
    assert erp["State"] == "closed" and erp["Note"] == "closed by cancellation.confirmed"
    assert erp["Elapsed"] == "1 h"  # received → cancelled, not received → now


# -- alerting watches itself: the banner on every page --------------------------------------------
def _evaluations(engine: Engine, *rows: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alert_evaluations"))
        for row in rows:
            conn.execute(sa.text(
                "INSERT INTO alert_evaluations (rule, last_run_at, last_success_at, last_error, failing_since, "
                "consecutive_failures, interval_seconds) VALUES (:rule, :last_run_at, :last_success_at, :last_error, "
                ":failing_since, :consecutive_failures, :interval_seconds)"),
                {"last_run_at": None, "last_success_at": None, "last_error": None, "failing_since": None,
                 "consecutive_failures": 0, "interval_seconds": 30.0, **row})
    st.cache_data.clear()


def _banner(at: Any) -> list[str]:
    return [plain(e.value) for e in at.error if "Alerting" in plain(e.value)]


def test_stale_alerting_shows_the_banner_on_every_page(seeded: dict[str, Any], engine: Engine) -> None:
    now = datetime.now(UTC)
    last = now - timedelta(minutes=25)
    _evaluations(engine, {"rule": "", "last_run_at": now, "last_success_at": last, "consecutive_failures": 40,
                          "last_error": "numeric field overflow"})
    for page in PAGES:
        [banner] = _banner(run(page))
        # seconds pass while the pages render: "(25 min ago)" or "(25 min 4 s ago)"
        assert re.fullmatch(
            f"Alerting has not completed an evaluation since {last:%H:%M} UTC \\(25 min( [0-9]+ s)? ago\\) "
            "— on-call is not being paged. Last error: numeric field overflow", banner), (page, banner)


def test_never_evaluated_is_worded_and_fresh_success_shows_nothing(seeded: dict[str, Any], engine: Engine) -> None:
    assert not run().error  # the seed: the last cycle succeeded just now
    _evaluations(engine)
    assert _banner(run("views/alerts.py")) == [
        "Alerting has never completed an evaluation — on-call is not being paged. "
        "Is the scheduler (controltower scheduler) running?"]


def test_failing_rule_is_a_warning_with_its_name_as_text(seeded: dict[str, Any], engine: Engine) -> None:
    now = datetime.now(UTC)
    evil = "[Re-authenticate](https://evil.example/login)"
    _evaluations(engine, {"rule": "", "last_run_at": now, "last_success_at": now},
                 {"rule": evil, "last_run_at": now, "last_error": "boom", "failing_since": now - timedelta(minutes=5),
                  "consecutive_failures": 10},
                 {"rule": "ErpPostingSlow", "last_run_at": now, "last_success_at": now})
    at = run()
    assert not _banner(at)
    [warning] = [w.value for w in at.warning if "fail" in plain(w.value)]
    assert plain(warning) == f"1 alert rule fails to evaluate and cannot fire: {evil}."
    assert not rendered_link(warning)


def test_no_banner_on_an_empty_database(engine: Engine, app_env: None) -> None:
    at = run()  # no events, no evaluation yet: a fresh demo before the scheduler's first tick
    assert not at.error and not at.warning
    assert any("controltower simulate" in i.value for i in at.info)


@pytest.mark.parametrize(
    ("health", "text"),
    [
        ({"stale": False, "last_success_at": NOW}, None),
        ({"stale": True, "last_success_at": None}, "Alerting has never completed an evaluation — on-call is not "
                                                   "being paged. Is the scheduler (controltower scheduler) running?"),
        ({"stale": True, "last_success_at": NOW - timedelta(minutes=7)},
         "Alerting has not completed an evaluation since 21:23 UTC (7 min ago) — on-call is not being paged."),
        ({"stale": True, "last_success_at": NOW - timedelta(days=1, hours=2)},
         "Alerting has not completed an evaluation since 29 Nov 19:30 UTC (1 d 2 h ago) — on-call is not being paged."),
        ({"stale": True, "last_success_at": NOW - timedelta(minutes=2), "last_error": "x" * 300},
         "Alerting has not completed an evaluation since 21:28 UTC (2 min ago) — on-call is not being paged. "
         "Last error: " + "x" * 200 + "…"),
    ],
)
def test_alerting_banner_text(health: dict[str, Any], text: str | None) -> None:
    assert shaping.alerting_banner(health, NOW) == text


def test_failing_rules_text() -> None:
    assert shaping.failing_rules_text({"failing_rules": []}) is None
    rules = [{"rule": "A", "error": "e", "since": NOW, "failures": 2}, {"rule": "B", "error": "e", "since": NOW, "failures": 1}]
    assert shaping.failing_rules_text({"failing_rules": rules}) == "2 alert rules fail to evaluate and cannot fire: A, B."


def test_pos_order_page_shows_no_acknowledgement_verdict(seeded: dict[str, Any], engine: Engine,
                                                       settings: Settings) -> None:
    """The shipped order_acknowledgement excludes POS (a till sale needs no marketplace ack): the
    transaction page must not call a POS order overdue, exactly like the SLA table."""
    from metrics import definitions

    definitions.publish(engine, definitions.load())
    now = datetime.now(UTC)
    record = {"event_id": "pos-till-1", "occurred_at": (now - timedelta(hours=3)).isoformat(),
              "correlation_id": "cid-pos-till", "order_id": "POS-7001", "channel": "pos", "flow": "order",
              "stage": "received", "status": "ok", "system": "pos"}
    assert EventStore(engine, settings).ingest([record], source="test", now=now).accepted == 1
    at = run("views/transaction.py", id="cid-pos-till")
    verdicts = table_with(at, "From → to")
    assert "order_acknowledgement" not in set(verdicts["SLA"])  # excluded: not judged, not shown
    assert verdicts[verdicts["SLA"] == "erp_posting"].iloc[0]["State"] == "overdue"  # 3 h > 30 min: still owed
