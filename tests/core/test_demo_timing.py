"""The demo shows the point in minutes: its outage has breached by the time the live clock reaches
the present, and its own alert rules page for it within their short `for`.

Runs the demo's timeline (its default backfill is shortened; the fault counts back from the
present, so it lands in the same place) at a fixed afternoon clock through the real store, the
real SLA engine and the real evaluator. The full demo, with its processes and wall time, is
measured by bench/demo_timing.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import load_rules
from controltower.errors import ConfigError
from controltower.settings import parse_duration
from metrics import jobs as metric_jobs
from simulator.emit import StoreSink
from simulator.faults import parse_faults
from simulator.run import Run
from wiring import demo

CHANNELS = {"amazon", "shopify", "ebay", "walmart", "pos"}


def afternoon() -> datetime:
    """Yesterday 15:00 UTC: a busy hour (US morning) that the store still accepts as recent."""
    return (datetime.now(UTC) - timedelta(days=1)).replace(hour=15, minute=0, second=0, microsecond=0)


def test_demo_rules_are_the_shipped_rules_with_for_at_most_two_minutes(tmp_path):
    shipped, mine = load_rules(None), load_rules(demo.write_demo_rules(tmp_path))
    assert [r.name for r in mine.rules] == [r.name for r in shipped.rules]

    def condition(rule):
        return (rule.sla, rule.channel, rule.window, rule.field, rule.op, rule.value, rule.also, rule.severity)

    assert [condition(r) for r in mine.rules] == [condition(r) for r in shipped.rules]
    fors = {r.name: r.for_seconds for r in mine.rules}
    assert fors["UnpostedOrders"] == 120.0 and max(fors.values()) == 120.0
    assert dict(shipped.receivers) == dict(mine.receivers) and mine.receivers["log"].type == "log"
    # the rules must outlast the catch-up, when in-flight work looks overdue against real time
    catch_up_s = parse_duration(demo.DEFAULT_CATCH_UP) / (demo.DEFAULT_SPEED - 1)
    assert 60 < catch_up_s < 120 <= min(v for v in fors.values() if v)


def test_demo_rules_shorten_only_longer_for_values():
    text = "rules:\n  - name: A\n    for: 10m\n    keep_firing_for: 10m\n  - name: B\n    for: 90s\n  - for: \"1h\"\n"
    out = demo.demo_rules_text(text)
    assert out.endswith("rules:\n  - name: A\n    for: 2m\n    keep_firing_for: 10m\n  - name: B\n    for: 90s\n"
                        "  - for: 2m\n")


def test_children_get_the_demo_rules_and_tick_unless_the_user_chose_their_own(tmp_path):
    rules = demo.write_demo_rules(tmp_path)
    env = demo.child_environment({"PATH": "/bin"}, "http://127.0.0.1:8501", rules)
    assert env["CONTROLTOWER_ALERTS_FILE"] == str(rules)
    assert env["CONTROLTOWER_EVALUATION_INTERVAL"] == "10s"
    assert env["CONTROLTOWER_DASHBOARD_URL"] == "http://127.0.0.1:8501"
    mine = demo.child_environment({"CONTROLTOWER_ALERTS_FILE": "/etc/ct/alerts.yaml",
                                   "CONTROLTOWER_EVALUATION_INTERVAL": "1m"}, "http://x", rules)
    assert mine["CONTROLTOWER_ALERTS_FILE"] == "/etc/ct/alerts.yaml"
    assert mine["CONTROLTOWER_EVALUATION_INTERVAL"] == "1m"


def test_demo_outage_has_breached_when_the_live_clock_reaches_the_present(engine, settings, tmp_path):
    present = afternoon()
    lead = parse_duration(demo.DEFAULT_CATCH_UP)
    run = Run(seed=7, faults=parse_faults([demo.DEFAULT_FAULT]), ids="real", backfill=2 * 3600, lead=lead,
              now=present)
    (window,) = run.plan.windows
    # erp_outage@-4h+4.5h: four hours before the present, an hour into the 5 h catch-up, until 30 min after
    assert window.start == present.timestamp() - 4 * 3600 == run.origin + 3600
    assert window.end == present.timestamp() + 1800
    sink = StoreSink(engine, settings)
    run.backfill(sink)
    run.advance(sink, present.timestamp())  # the live clock has caught up
    assert sink.totals.rejected == 0

    with engine.connect() as conn:
        late_postings = conn.execute(sa.text(
            "SELECT count(*) FROM events WHERE flow = 'order' AND stage = 'erp_posted' AND occurred_at >= :t"),
            {"t": datetime.fromtimestamp(window.start, UTC)}).scalar_one()
    assert late_postings == 0  # the backfill posted nothing the outage holds back

    truth = run.result()
    due = (present - timedelta(minutes=30)).isoformat(timespec="milliseconds")
    expected: dict[str, int] = {}
    for order in truth["unposted_orders"]:
        if order["received_at"] < due:
            expected[order["channel"]] = expected.get(order["channel"], 0) + 1
    assert set(expected) == CHANNELS and expected["amazon"] >= 50

    metric_jobs.refresh(engine, metric_jobs.load_definitions(settings), present, settings)
    with engine.connect() as conn:
        hops = {r.channel: r for r in conn.execute(sa.text(
            "SELECT channel, health, backlog FROM hop_health WHERE sla = 'erp_posting'"))}
    assert {ch: hops[ch].backlog for ch in CHANNELS} == expected
    assert hops["amazon"].health == "critical"  # the home page's ERP posting hop is red

    rules = load_rules(demo.write_demo_rules(tmp_path)).rules
    unposted = [r for r in rules if r.name == "UnpostedOrders"]
    first = evaluate(engine, unposted, present)
    assert {t.labels["channel"]: t.to_state for t in first} == dict.fromkeys(CHANNELS, "pending")
    later = evaluate(engine, unposted, present + timedelta(seconds=unposted[0].for_seconds))
    assert {t.labels["channel"]: (t.to_state, t.notification) for t in later} == dict.fromkeys(
        CHANNELS, ("firing", "firing"))


def test_demo_rules_rewrite_only_the_rules_for_values_not_text_that_looks_like_one():
    text = (
        "# for: 10m in a comment stays\n"
        "rules:\n"
        "  - name: A\n"
        "    for: 10m   # ten minutes\n"
        "    annotations:\n"
        "      description: |\n"
        "        for: 30m the ERP did not post\n"
        "      summary: 'for: 1h'\n"
        "  - {name: B, summary: \"x for: 9m\", for: 15m}\n"
        "  - name: C\n"
        "    for: '1h'\n"
    )
    out = demo.demo_rules_text(text)
    body = out[out.index("# for: 10m in a comment"):]
    assert body == text.replace("for: 10m   #", "for: 2m   #").replace("for: 15m}", "for: 2m}").replace(
        "for: '1h'", "for: 2m")


def test_a_missing_alerts_file_of_the_user_is_one_line_before_anything_starts(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        demo.check_alerts_file({"CONTROLTOWER_ALERTS_FILE": str(missing)})
    assert str(exc.value) == f"CONTROLTOWER_ALERTS_FILE: {missing}: no such file"
    demo.check_alerts_file({})  # the demo's own rules: nothing to check
