"""Alerting can't silently stop (#10 finding 2): rule isolation, sane impact amounts, the record of
its own health, its /metrics collector and the watchdog notification at a real receiver."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import parse
from alerts.selfmetrics import AlertingCollector
from controltower.alertops import evaluation_health
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row
from tests.alerts.test_notify import Recorder
from tests.conftest import LoopbackServer

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HUGE = "9" * 140_000


def ruleset(url: str = "http://127.0.0.1:9", watchdog: str = "", impact: str = "true"):
    return parse(loads(f"""
receivers:
  hook: {{type: webhook, url: "{url}/hook"}}
default_receivers: [hook]
{watchdog}
rules:
  - name: UnacknowledgedImpact
    sla: order_acknowledgement
    field: open_breaches
    op: ">"
    value: 0
    impact: {impact}
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
""", "alerts.yaml"))


@contextmanager
def table_away(engine, name: str):
    """A real failure of whatever reads `name`: the table is gone for the block, then back."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {name} RENAME TO {name}_away"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {name}_away RENAME TO {name}"))


def run(engine, rs, at, **kw):
    return evaluate(engine, rs.rules, at, dashboard_url="http://dash", routes=rs.routes,
                    watchdog_rule=rs.watchdog, interval_seconds=30, **kw)


def seed_orders(engine, settings, totals: dict[str, str]) -> None:
    """order.received events through the real store, each an open acknowledgement breach past due."""
    from collectors.store import EventStore
    from controltower.masking import Masker, MaskingRules

    t0 = NOW - timedelta(hours=3)
    store = EventStore(engine, settings, Masker(MaskingRules.load(None)))
    store.ingest([
        {"event_id": f"e-{cid}", "occurred_at": t0.isoformat(), "correlation_id": cid, "channel": "walmart",
         "flow": "order", "stage": "received", "status": "ok", "system": "marketplace",
         "attributes": {"order_total": "1"}}
        for cid in totals], source="test", now=t0)
    with engine.begin() as conn:
        for cid, total in totals.items():
            # the value as a collector that accepted it stores it (set by SQL: no ingest limit decides this test)
            conn.execute(sa.text("UPDATE events SET attributes = jsonb_set(attributes, '{order_total}', to_jsonb(CAST(:v AS text))) "
                                 "WHERE correlation_id = :cid"), {"v": total, "cid": cid})
            conn.execute(sa.text("INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at) "
                                 "VALUES ('order_acknowledgement', :cid, 'walmart', :t0, :due)"),
                         {"cid": cid, "t0": t0, "due": t0 + timedelta(minutes=15)})
    put_row(engine, sla="order_acknowledgement", channel="walmart", at=NOW, open_breaches=len(totals))
    put_row(engine, sla="erp_posting", channel="amazon", at=NOW, open_breaches=5)


def test_a_140000_digit_order_total_stops_no_rule_and_is_ignored_with_a_count(engine, settings):
    seed_orders(engine, settings, {"c1": HUGE, "c2": "100.50", "c3": "19.5"})
    rs = ruleset()
    fired = run(engine, rs, NOW)
    assert sorted((t.rule, t.to_state, t.notification) for t in fired) == [
        ("UnacknowledgedImpact", "firing", "firing"), ("UnpostedOrders", "firing", "firing")]
    [impact_row] = [r for r in outbox(engine) if r["rule"] == "UnacknowledgedImpact"]
    # 100.50 + 19.5 by hand; the 140,000 digits are left out, not summed, not failing
    assert impact_row["payload"]["impact"] == {"orders_at_risk": 3, "order_value_at_risk": 120.0, "orders_priced": 2}
    assert impact_row["payload"]["annotations"]["order_value_at_risk"] == "120.00"
    health = evaluation_health(engine, NOW)
    assert (health["failing_rules"], health["ignored_amounts_total"], health["stale"]) == ([], 1, False)
    run(engine, rs, NOW + timedelta(minutes=1))  # firing, nothing new to send: impact not queried again
    assert evaluation_health(engine, NOW)["ignored_amounts_total"] == 1


@pytest.mark.parametrize("amount", ["1e400", "NaN", "-Infinity", "12,50", "1" * 19, "0." + "1" * 13, " 5", "5\n"])
def test_amounts_that_are_not_sane_numbers_are_ignored(engine, settings, amount):
    seed_orders(engine, settings, {"c1": amount, "c2": "7"})
    run(engine, ruleset(), NOW)
    [impact_row] = [r for r in outbox(engine) if r["rule"] == "UnacknowledgedImpact"]
    assert impact_row["payload"]["impact"]["order_value_at_risk"] == 7.0
    assert evaluation_health(engine, NOW)["ignored_amounts_total"] == 1


def test_a_failing_rule_is_recorded_and_the_others_go_on(engine, settings):
    seed_orders(engine, settings, {"c1": "10"})
    rs = ruleset()
    with table_away(engine, "sla_open_items"):
        fired = run(engine, rs, NOW)
    assert [(t.rule, t.to_state) for t in fired] == [("UnpostedOrders", "firing")]
    assert [r["rule"] for r in outbox(engine)] == ["UnpostedOrders"]
    health = evaluation_health(engine, NOW)
    [failing] = health["failing_rules"]
    assert (failing["rule"], failing["since"], failing["failures"]) == ("UnacknowledgedImpact", NOW, 1)
    assert failing["error"].startswith("ProgrammingError: (psycopg.errors.UndefinedTable)")
    assert health["last_success_at"] == NOW and not health["stale"]

    fired = run(engine, rs, NOW + timedelta(minutes=1))  # the table is back: the rule catches up
    assert [(t.rule, t.to_state) for t in fired] == [("UnacknowledgedImpact", "firing")]
    assert evaluation_health(engine, NOW + timedelta(minutes=1))["failing_rules"] == []


def test_health_is_stale_after_three_intervals_and_when_never_run(engine):
    assert evaluation_health(engine, NOW) == {
        "last_success_at": None, "interval_seconds": 30.0, "stale": True, "failing_rules": [],
        "last_error": None, "ignored_amounts_total": 0}
    run(engine, ruleset(), NOW)
    assert not evaluation_health(engine, NOW + timedelta(seconds=90))["stale"]
    assert evaluation_health(engine, NOW + timedelta(seconds=91))["stale"]
    assert evaluation_health(engine, NOW + timedelta(seconds=91), interval_seconds=60)["stale"] is False


def test_a_cycle_that_fails_as_a_whole_is_recorded_and_keeps_the_last_success(engine):
    rs = ruleset()
    run(engine, rs, NOW)
    with table_away(engine, "sla_status"):
        with pytest.raises(sa.exc.ProgrammingError):
            run(engine, rs, NOW + timedelta(minutes=5))
    health = evaluation_health(engine, NOW + timedelta(minutes=5))
    assert health["last_success_at"] == NOW and health["stale"]
    assert health["last_error"].startswith("ProgrammingError: (psycopg.errors.UndefinedTable)")


def test_metrics_collector_exposes_last_success_rule_failures_and_ignored_amounts(engine, settings):
    seed_orders(engine, settings, {"c1": HUGE})
    with table_away(engine, "sla_open_items"):
        run(engine, ruleset(), NOW)
    run(engine, ruleset(), NOW + timedelta(seconds=30))  # the rule recovers and ignores the huge amount
    registry = CollectorRegistry()
    registry.register(AlertingCollector(engine, clock=lambda: NOW + timedelta(seconds=40)))
    text = generate_latest(registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("controltower_alerts_last_success_timestamp_seconds", ())] == (NOW + timedelta(seconds=30)).timestamp()
    assert samples[("controltower_alerts_evaluation_stale", ())] == 0
    assert samples[("controltower_alerts_rule_failures", (("rule", "UnacknowledgedImpact"),))] == 0
    assert samples[("controltower_alerts_rule_failures", (("rule", "UnpostedOrders"),))] == 0
    assert samples[("controltower_alerts_ignored_amounts_total", ())] == 1
    # one failing cycle of one rule shows as 1
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alert_evaluations SET consecutive_failures = 2 WHERE rule = 'UnpostedOrders'"))
    text = generate_latest(registry).decode()
    assert 'controltower_alerts_rule_failures{rule="UnpostedOrders"} 2.0' in text


def test_watchdog_reaches_a_real_receiver_every_interval_and_stops_with_evaluation(engine):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url, watchdog="watchdog: {interval: 1h}")
        for minute in (0, 30, 59, 60, 90, 125):
            run(engine, rs, NOW + timedelta(minutes=minute))
            deliver_pending(engine, rs.receivers, NOW + timedelta(minutes=minute))
        watch = [r["body"] for r in recorder.requests if r["body"]["groupLabels"]["alertname"] == "Watchdog"]
        # minutes 0, 60 and 125 (the interval counts from the last one sent)
        assert [b["alerts"][0]["startsAt"] for b in watch] == [
            "2026-11-22T12:00:00.000Z", "2026-11-22T13:00:00.000Z", "2026-11-22T14:05:00.000Z"]
        assert all(b["status"] == "firing" and b["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z" for b in watch)
        assert "repeats every 1 h" in watch[0]["alerts"][0]["annotations"]["summary"]
        # evaluation stops (its table is gone): no watchdog however long we wait
        with table_away(engine, "sla_status"):
            with pytest.raises(sa.exc.ProgrammingError):
                run(engine, rs, NOW + timedelta(hours=5))
        deliver_pending(engine, rs.receivers, NOW + timedelta(hours=5))
        assert len([r for r in recorder.requests if r["body"]["groupLabels"]["alertname"] == "Watchdog"]) == 3


def test_watchdog_names_failing_rules(engine, settings):
    seed_orders(engine, settings, {"c1": "10"})
    rs = ruleset(watchdog="watchdog: {interval: 10m, receivers: [hook]}")
    with table_away(engine, "sla_open_items"):
        run(engine, rs, NOW)
    [watch] = [r for r in outbox(engine) if r["rule"] == "Watchdog"]
    assert watch["payload"]["summary"].endswith("1 rule(s) failing: UnacknowledgedImpact.")


def test_impact_reads_the_milestone_and_amounts_the_rule_names(engine, settings):
    """The meaning (which event carries the order value) is in the YAML, not the code."""
    seed_orders(engine, settings, {"c1": "10", "c2": "5"})
    with engine.begin() as conn:  # c2 also carries a `gross` attribute, listed first by the rule
        conn.execute(sa.text("UPDATE events SET attributes = attributes || '{\"gross\": \"40\"}' WHERE correlation_id = 'c2'"))
    rs = ruleset(impact="{milestone: order.received, amounts: [gross, order_total]}")
    assert (rs.rules[0].impact_milestone, rs.rules[0].impact_amounts) == ("order.received", ("gross", "order_total"))
    run(engine, rs, NOW)
    [row] = [r for r in outbox(engine) if r["rule"] == "UnacknowledgedImpact"]
    assert row["payload"]["impact"] == {"orders_at_risk": 2, "order_value_at_risk": 50.0, "orders_priced": 2}
    elsewhere = ruleset(impact="{milestone: order.shipped, amounts: [gross, order_total]}")
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE alert_state, alert_notifications"))
    run(engine, elsewhere, NOW)  # no order.shipped events: orders at risk, no value
    [row] = [r for r in outbox(engine) if r["rule"] == "UnacknowledgedImpact"]
    assert row["payload"]["impact"] == {"orders_at_risk": 2}


def test_a_rule_whose_results_cannot_be_written_is_the_only_one_lost(engine, settings):
    """The batch write fails (a real constraint refuses one rule's rows): rule by rule, the rest land."""
    seed_orders(engine, settings, {"c1": "10"})
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE alert_state ADD CONSTRAINT refuse_unposted CHECK (rule <> 'UnpostedOrders')"))
    try:
        fired = run(engine, ruleset(), NOW)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE alert_state DROP CONSTRAINT refuse_unposted"))
    assert [(t.rule, t.to_state) for t in fired] == [("UnacknowledgedImpact", "firing")]
    assert [r["rule"] for r in outbox(engine)] == ["UnacknowledgedImpact"]
    [failing] = evaluation_health(engine, NOW)["failing_rules"]
    assert failing["rule"] == "UnpostedOrders" and "CheckViolation" in failing["error"]
