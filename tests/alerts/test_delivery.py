"""Routing, grouping, throttling and digests; ordered, exactly-once delivery to real receivers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import parse
from controltower.db import make_engine
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row
from tests.alerts.test_notify import Recorder
from tests.conftest import LoopbackServer

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def ruleset(url: str, options: str = "", routes: str = ""):
    return parse(loads(f"""
receivers:
  hook: {{type: webhook, url: "{url}/hook"}}
  walmart-oncall: {{type: webhook, url: "{url}/walmart"}}
  erp: {{type: webhook, url: "{url}/erp"}}
default_receivers: [hook]
{routes}
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
    labels: {{team: erp}}
    annotations:
      summary: "{{channel}}: {{open_breaches}} unposted"
{options}
""", "test.yaml"))


def run(engine, rs, at):
    return evaluate(engine, rs.rules, at, dashboard_url="http://dash", routes=rs.routes)


def bodies(recorder, path=None):
    return [r["body"] for r in recorder.requests if path is None or r["path"] == path]


def test_two_channels_firing_together_are_one_webhook_with_two_alerts(engine):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url)
        put_row(engine, channel="amazon", open_breaches=3)
        put_row(engine, channel="ebay", open_breaches=5)
        assert len(run(engine, rs, T0)) == 2
        assert len(outbox(engine)) == 1
        assert deliver_pending(engine, rs.receivers, T0).sent == 1
    [body] = bodies(recorder)
    assert body["status"] == "firing" and body["groupKey"] == '{}:{alertname="UnpostedOrders"}'
    assert [a["labels"]["channel"] for a in body["alerts"]] == ["amazon", "ebay"]
    assert [a["annotations"]["summary"] for a in body["alerts"]] == ["amazon: 3 unposted", "ebay: 5 unposted"]
    assert body["commonLabels"] == {"alertname": "UnpostedOrders", "sla": "erp_posting", "window": "1h",
                                    "severity": "ticket", "team": "erp"}
    assert body["groupLabels"] == {"alertname": "UnpostedOrders"}


def test_routes_first_match_wins_else_rule_receivers(engine):
    recorder = Recorder()
    routes = """routes:
  - match: {channel: walmart}
    receivers: [walmart-oncall]
  - match: {team: erp, channel: ebay}
    receivers: [erp, hook]
  - match: {team: erp}
    receivers: [erp]
"""
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url, routes=routes)
        put_row(engine, channel="walmart", open_breaches=1)
        put_row(engine, channel="ebay", open_breaches=2)
        put_row(engine, channel="amazon", open_breaches=3)
        run(engine, rs, T0)
        assert deliver_pending(engine, rs.receivers, T0).sent == 3
    by_path = {}
    for r in recorder.requests:
        by_path.setdefault(r["path"], []).extend(a["labels"]["channel"] for a in r["body"]["alerts"])
    assert by_path == {"/walmart": ["walmart"], "/erp": ["amazon", "ebay"], "/hook": ["ebay"]}


def test_throttle_caps_notifications_per_hour_and_defers_the_rest(engine):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url, "    max_notifications_per_hour: 2")
        put_row(engine, channel="amazon", open_breaches=1)
        run(engine, rs, T0)                      # 1st notification
        put_row(engine, channel="ebay", open_breaches=1)
        run(engine, rs, T0 + 5 * M)              # 2nd
        put_row(engine, channel="shopify", open_breaches=1)
        [t] = run(engine, rs, T0 + 10 * M)       # 3rd within the hour: held back
        assert (t.to_state, t.notification, t.deferred) == ("firing", None, "throttled")
        put_row(engine, channel="amazon", open_breaches=0)
        out = run(engine, rs, T0 + 20 * M)       # a resolved notification is never held back
        assert sorted((t.labels["channel"], t.notification, t.deferred) for t in out) == [
            ("amazon", "resolved", None), ("shopify", None, "throttled")]
        assert run(engine, rs, T0 + 59 * M)[0].deferred == "throttled"
        [t] = run(engine, rs, T0 + 61 * M)       # the first has left the hour: shopify goes out now
        assert (t.labels["channel"], t.notification) == ("shopify", "firing")
        assert deliver_pending(engine, rs.receivers, T0 + 61 * M).sent == 4
    got = [(b["status"], [a["labels"]["channel"] for a in b["alerts"]]) for b in bodies(recorder)]
    assert got == [("firing", ["amazon"]), ("firing", ["ebay"]), ("resolved", ["amazon"]), ("firing", ["shopify"])]


def test_digest_first_at_once_then_one_summary_per_interval(engine):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url, "    digest_interval: 15m")
        put_row(engine, channel="amazon", open_breaches=1)
        run(engine, rs, T0)                                  # first: at once
        put_row(engine, channel="ebay", open_breaches=1)
        [t] = run(engine, rs, T0 + 5 * M)
        assert (t.to_state, t.deferred) == ("firing", "digest")
        run(engine, rs, T0 + 10 * M)
        assert len(outbox(engine)) == 1
        run(engine, rs, T0 + 15 * M)                         # summary: both firing
        put_row(engine, channel="amazon", open_breaches=0)
        run(engine, rs, T0 + 20 * M)                         # amazon resolves: held for the digest
        run(engine, rs, T0 + 30 * M)                         # summary: ebay firing, amazon resolved
        put_row(engine, channel="ebay", open_breaches=0)
        run(engine, rs, T0 + 35 * M)
        run(engine, rs, T0 + 45 * M)                         # last summary: ebay resolved
        run(engine, rs, T0 + 60 * M)                         # nothing fires: no more summaries
        run(engine, rs, T0 + 75 * M)
        assert deliver_pending(engine, rs.receivers, T0 + 75 * M).sent == 4
    got = [(b["status"], [(a["labels"]["channel"], a["status"]) for a in b["alerts"]]) for b in bodies(recorder)]
    assert got == [
        ("firing", [("amazon", "firing")]),
        ("firing", [("amazon", "firing"), ("ebay", "firing")]),
        ("firing", [("ebay", "firing"), ("amazon", "resolved")]),
        ("resolved", [("ebay", "resolved")]),
    ]
    assert [r["created_at"] - T0 for r in outbox(engine)] == [timedelta(0), 15 * M, 30 * M, 45 * M]


def test_receiver_down_then_up_gets_everything_once_in_order(engine):
    recorder = Recorder(statuses=[503, 503])
    with LoopbackServer(recorder.app) as server:
        rs = ruleset(server.url)
        for i, ch in enumerate(["amazon", "ebay", "shopify"]):
            put_row(engine, channel=ch, open_breaches=1)
            run(engine, rs, T0 + i * M)
            deliver_pending(engine, rs.receivers, T0 + i * M, base_backoff=60)
        # amazon failed twice (backoff 60 s, then 120 s); ebay and shopify waited behind it
        assert [r["status"] for r in outbox(engine)] == ["pending", "pending", "pending"]
        report = deliver_pending(engine, rs.receivers, T0 + 10 * M, base_backoff=60)
        assert report.sent == 3
        assert deliver_pending(engine, rs.receivers, T0 + 20 * M).sent == 0
    channels = [b["alerts"][0]["labels"]["channel"] for b in bodies(recorder)]
    assert channels == ["amazon", "amazon", "amazon", "ebay", "shopify"]  # 2 failures, then in order
    assert [r["status"] for r in outbox(engine)] == ["sent"] * 3


def test_two_concurrent_deliverers_send_each_notification_exactly_once(engine, database_url):
    import time

    recorder = Recorder()
    original = recorder.app

    async def slow(scope, receive, send):  # a slow receiver widens the window for a double send
        if scope["type"] == "http":
            time.sleep(0.02)
        await original(scope, receive, send)

    with LoopbackServer(slow) as server:
        rs = ruleset(server.url, routes="""routes:
  - match: {channel: c1}
    receivers: [walmart-oncall]
  - match: {channel: c2}
    receivers: [erp]
""")
        for i in range(12):
            put_row(engine, channel=f"c{i % 4}", open_breaches=i + 1)
            run(engine, rs, T0 + i * M)
            put_row(engine, channel=f"c{i % 4}", open_breaches=0)
            run(engine, rs, T0 + i * M + 30 * timedelta(seconds=1))
        total = len(outbox(engine))
        assert total == 24
        engines = [make_engine(database_url, pool_size=2) for _ in range(2)]
        reports = []
        barrier = threading.Barrier(2)

        def work(e):
            barrier.wait()
            reports.append(deliver_pending(e, rs.receivers, T0 + 30 * M))

        threads = [threading.Thread(target=work, args=(e,)) for e in engines]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        for e in engines:
            e.dispose()
    assert sum(r.sent for r in reports) == total
    assert [r.retried + r.failed for r in reports] == [0, 0]

    def key(alert):
        return alert["fingerprint"], alert["status"], alert["startsAt"], alert["endsAt"]

    sent = [(r["path"], key(r["body"]["alerts"][0])) for r in recorder.requests]
    assert len(sent) == total == len(set(sent))  # every notification once, none twice
    # ... and each receiver still got its notifications in creation order
    for path in {p for p, _ in sent}:
        mine = [k for p, k in sent if p == path]
        rows = [key(r["payload"]["alerts"][0]) for r in outbox(engine)
                if f"/{r['receiver']}".replace("/walmart-oncall", "/walmart") == path]
        assert mine == rows


def test_cli_deliveries_and_audit_log(engine, database_url, tmp_path, settings):
    import httpx
    from typer.testing import CliRunner

    from alerts.http import routes
    from controltower.context import AppContext
    from controltower.web import build_app
    from wiring.cli import app

    rs = ruleset("http://127.0.0.1:9")  # nothing listens on port 9: the delivery fails
    put_row(engine, channel="amazon", open_breaches=4)
    [t] = run(engine, rs, T0)
    assert deliver_pending(engine, rs.receivers, T0).retried == 1
    runner = CliRunner()
    base = ["--database-url", database_url, "--data-dir", str(tmp_path)]
    shown = runner.invoke(app, [*base, "alerts", "deliveries", "--json"])
    assert shown.exit_code == 0, shown.output
    import json

    [row] = json.loads(shown.output)["deliveries"]
    assert (row["id"], row["receiver"], row["status"], row["attempts"], row["alert_count"]) == (1, "hook", "pending", 1, 1)
    assert "Connect" in row["last_error"]
    table = runner.invoke(app, [*base, "alerts", "deliveries"])
    assert table.exit_code == 0 and "┃" in table.output  # the human table (its width follows the terminal)

    assert runner.invoke(app, [*base, "alerts", "silence", "-m", "channel=ebay", "--by", "dave",
                               "--comment", "ebay maintenance"]).exit_code == 0
    assert runner.invoke(app, [*base, "alerts", "ack", t.fingerprint, "--by", "erin"]).exit_code == 0
    with LoopbackServer(build_app(AppContext(settings, engine), routes(AppContext(settings, engine)))) as server:
        assert httpx.post(f"{server.url}/v1/alerts/{t.fingerprint}/ack", json={"by": "frank"}).status_code == 200
    audit = json.loads(runner.invoke(app, [*base, "alerts", "audit", "--json"]).output)["audit"]
    got = [(a["actor"], a["action"], a["target"], a["detail"]["via"]) for a in audit]
    assert got == [("frank", "acknowledge", t.fingerprint, "http"), ("erin", "acknowledge", t.fingerprint, "cli"),
                   ("dave", "silence", "silence:1", "cli")]
    assert audit[2]["detail"]["matchers"] == {"channel": "ebay"} and audit[2]["detail"]["comment"] == "ebay maintenance"
    text = runner.invoke(app, [*base, "alerts", "audit"]).output
    assert "dave silence silence:1 via cli: channel=ebay" in text
