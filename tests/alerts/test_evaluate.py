"""The alert state machine over known SLA rows, with explicit evaluation times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from alerts.evaluate import acknowledge, add_silence, evaluate, list_alerts
from alerts.rules import parse
from controltower.schema.alerts import alert_events, alert_notifications, alert_state
from controltower.schema.metrics import sla_status
from controltower.yamlfile import loads

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
DASH = "http://dash.example:8501"

RULES = parse(loads("""
receivers:
  hook: {type: webhook, url: "http://127.0.0.1:9/hook"}
  mail: {type: email, smtp_host: 127.0.0.1, from: a@example.com, to: b@example.com}
default_receivers: [hook, mail]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
    for: 10m
    severity: page
    labels: {team: erp}
    annotations:
      summary: "{channel}: {open_breaches} orders unposted, oldest {oldest_breach_human}"
    runbook_url: https://wiki.example.com/unposted
    repeat_interval: 1h
""", "test.yaml")).rules


def put_row(engine, *, sla="erp_posting", channel="amazon", window="1h", at=T0, **fields):
    values = {"sla": sla, "channel": channel, "window": window, "kind": "milestone_latency",
              "computed_at": at, "health": "ok", **fields}
    stmt = insert(sla_status).values(**values)
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["sla", "channel", "window"],
            set_={k: stmt.excluded[k] for k in values if k not in ("sla", "channel", "window")}))


def outbox(engine):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(alert_notifications).order_by(alert_notifications.c.id))]


def state_of(engine, fp):
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(alert_state).where(alert_state.c.fingerprint == fp)).one()._mapping)


def run(engine, at):
    return evaluate(engine, RULES, at, dashboard_url=DASH)


def test_pending_firing_resolved_with_one_notification_per_transition(engine):
    put_row(engine, open_breaches=143, oldest_breach_ms=5_400_000, health="critical")
    put_row(engine, channel="ebay", open_breaches=0, health="ok")  # never matches the condition
    put_row(engine, window="24h", open_breaches=500)  # other window: not this rule's

    [t] = run(engine, T0)
    assert (t.from_state, t.to_state, t.notification) == ("inactive", "pending", None)
    assert t.labels == {"alertname": "UnpostedOrders", "sla": "erp_posting", "channel": "amazon",
                        "window": "1h", "severity": "page", "team": "erp"}
    assert outbox(engine) == []
    assert run(engine, T0 + timedelta(minutes=5)) == []  # still pending: `for` not elapsed

    [t] = run(engine, T0 + timedelta(minutes=10))
    assert (t.from_state, t.to_state, t.notification, t.receivers) == ("pending", "firing", "firing", ("hook", "mail"))
    rows = outbox(engine)
    assert [(r["receiver"], r["kind"], r["status"]) for r in rows] == [("hook", "firing", "pending"), ("mail", "firing", "pending")]
    payload = rows[0]["payload"]
    assert payload["summary"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
    assert payload["endsAt"] == "0001-01-01T00:00:00Z"
    assert payload["startsAt"] == "2026-11-22T09:10:00.000Z"
    assert payload["annotations"]["runbook_url"] == "https://wiki.example.com/unposted"
    assert payload["dashboard_url"] == f"{DASH}/breaches?sla=erp_posting&channel=amazon"
    assert payload["fingerprint"] == t.fingerprint and len(t.fingerprint) == 16

    [alert] = list_alerts(engine)
    assert (alert["state"], alert["last_value"], alert["firing_since"]) == ("firing", 143, T0 + timedelta(minutes=10))

    # still firing, before the repeat interval: nothing new
    assert run(engine, T0 + timedelta(minutes=30)) == []
    assert len(outbox(engine)) == 2

    put_row(engine, open_breaches=0, health="ok")
    [t] = run(engine, T0 + timedelta(minutes=40))
    assert (t.from_state, t.to_state, t.notification) == ("firing", "resolved", "resolved")
    rows = outbox(engine)
    assert [r["kind"] for r in rows] == ["firing", "firing", "resolved", "resolved"]
    assert rows[-1]["payload"]["endsAt"] == "2026-11-22T09:40:00.000Z"
    assert rows[-1]["payload"]["status"] == "resolved"
    assert run(engine, T0 + timedelta(minutes=45)) == []
    assert list_alerts(engine) == []

    with engine.connect() as conn:
        history = [(r.from_state, r.to_state) for r in conn.execute(sa.select(alert_events).order_by(alert_events.c.id))]
    assert history == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]


def test_pending_that_clears_never_notifies(engine):
    put_row(engine, open_breaches=2)
    run(engine, T0)
    put_row(engine, open_breaches=0)
    [t] = run(engine, T0 + timedelta(minutes=3))
    assert (t.from_state, t.to_state) == ("pending", "inactive")
    assert outbox(engine) == []


def test_vanished_row_resolves(engine):
    put_row(engine, open_breaches=2)
    run(engine, T0)
    run(engine, T0 + timedelta(minutes=10))
    with engine.begin() as conn:
        conn.execute(sa.delete(sla_status))
    [t] = run(engine, T0 + timedelta(minutes=11))
    assert (t.to_state, t.notification) == ("resolved", "resolved")


def test_repeat_interval_and_acknowledgement(engine):
    put_row(engine, open_breaches=5)
    run(engine, T0)
    [t] = run(engine, T0 + timedelta(minutes=10))
    fp = t.fingerprint
    assert run(engine, T0 + timedelta(minutes=69)) == []
    [t] = run(engine, T0 + timedelta(minutes=70))
    assert (t.from_state, t.to_state, t.notification) == ("firing", "firing", "repeat")
    assert [r["kind"] for r in outbox(engine)] == ["firing", "firing", "repeat", "repeat"]

    acked = acknowledge(engine, fp[:6], "alice", T0 + timedelta(minutes=80))
    assert acked["fingerprint"] == fp
    assert state_of(engine, fp)["acknowledged_by"] == "alice"
    assert run(engine, T0 + timedelta(hours=5)) == []  # acknowledged: no repeats
    assert len(outbox(engine)) == 4

    # resolves (notified), then fires again: the acknowledgement no longer applies
    put_row(engine, open_breaches=0)
    run(engine, T0 + timedelta(hours=6))
    put_row(engine, open_breaches=9)
    run(engine, T0 + timedelta(hours=7))
    [t] = run(engine, T0 + timedelta(hours=7, minutes=10))
    assert t.notification == "firing"
    assert state_of(engine, fp)["acknowledged_by"] is None
    assert [r["kind"] for r in outbox(engine)][-4:] == ["resolved", "resolved", "firing", "firing"]


def test_silence_suppresses_notifications_but_not_state(engine):
    add_silence(engine, {"channel": "amazon", "team": "erp"}, starts_at=T0, ends_at=T0 + timedelta(hours=1),
                created_by="bob", comment="ERP maintenance")
    add_silence(engine, {"channel": "ebay"}, starts_at=T0, ends_at=T0 + timedelta(hours=9), created_by="bob")
    put_row(engine, open_breaches=5)
    run(engine, T0)
    [t] = run(engine, T0 + timedelta(minutes=10))
    assert (t.to_state, t.notification, t.silenced, t.receivers) == ("firing", "firing", True, ())
    assert outbox(engine) == []
    assert list_alerts(engine)[0]["state"] == "firing"

    # the silence ends while the alert still fires: it is notified then, once
    [t] = run(engine, T0 + timedelta(minutes=61))
    assert (t.notification, t.silenced) == ("firing", False)
    assert [r["kind"] for r in outbox(engine)] == ["firing", "firing"]
    assert run(engine, T0 + timedelta(minutes=62)) == []


def test_silenced_when_resolving_sends_nothing(engine):
    put_row(engine, open_breaches=5)
    run(engine, T0)
    run(engine, T0 + timedelta(minutes=10))
    add_silence(engine, {"alertname": "UnpostedOrders"}, starts_at=T0, ends_at=T0 + timedelta(hours=2), created_by="x")
    put_row(engine, open_breaches=0)
    [t] = run(engine, T0 + timedelta(minutes=20))
    assert (t.to_state, t.silenced) == ("resolved", True)
    assert [r["kind"] for r in outbox(engine)] == ["firing", "firing"]


def test_state_change_and_outbox_share_one_transaction(engine, monkeypatch):
    """A failure after the state was computed leaves neither the state nor the notification of that
    rule (its savepoint rolls back), is recorded as the rule's error, and the cycle goes on."""
    from alerts import evaluate as mod
    from controltower.alertops import evaluation_health

    put_row(engine, open_breaches=5)
    run(engine, T0)
    original = mod._RuleRun.step

    def broken(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise RuntimeError("process died")

    monkeypatch.setattr(mod._RuleRun, "step", broken)
    assert run(engine, T0 + timedelta(minutes=10)) == []
    monkeypatch.setattr(mod._RuleRun, "step", original)
    assert outbox(engine) == []
    assert list_alerts(engine)[0]["state"] == "pending"
    health = evaluation_health(engine, T0 + timedelta(minutes=10))
    assert health["failing_rules"] == [{"rule": "UnpostedOrders", "error": "RuntimeError: process died",
                                        "since": T0 + timedelta(minutes=10), "failures": 1}]
    assert health["last_success_at"] == T0 + timedelta(minutes=10) and not health["stale"]
    [t] = run(engine, T0 + timedelta(minutes=11))
    assert t.to_state == "firing" and len(outbox(engine)) == 2
    assert evaluation_health(engine, T0 + timedelta(minutes=11))["failing_rules"] == []


def test_removed_rule_retires_quietly(engine):
    put_row(engine, open_breaches=5)
    run(engine, T0)
    run(engine, T0 + timedelta(minutes=10))
    assert evaluate(engine, [], T0 + timedelta(minutes=11)) == []
    assert list_alerts(engine) == []
    assert len(outbox(engine)) == 2


def test_http_lists_and_acknowledges_alerts(engine, settings):
    import httpx

    from alerts.http import routes
    from controltower import apikeys
    from controltower.context import AppContext
    from controltower.web import build_app
    from tests.conftest import LoopbackServer

    put_row(engine, open_breaches=143, oldest_breach_ms=5_400_000)
    put_row(engine, channel="ebay", open_breaches=1)
    run(engine, T0)
    assert len(run(engine, T0 + timedelta(minutes=10))) == 2
    with LoopbackServer(build_app(AppContext(settings, engine), routes(AppContext(settings, engine)))) as server:
        body = httpx.get(f"{server.url}/v1/alerts").json()
        assert [(a["rule"], a["state"], a["labels"]["channel"]) for a in body["alerts"]] == [
            ("UnpostedOrders", "firing", "amazon"), ("UnpostedOrders", "firing", "ebay")]
        alert = body["alerts"][0]
        assert alert["summary"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
        assert alert["severity"] == "page" and alert["value"] == 143 and alert["acknowledged"] is False
        assert alert["firing_since"] == "2026-11-22T09:10:00.000Z"
        assert alert["dashboard_url"] == f"{DASH}/breaches?sla=erp_posting&channel=amazon"

        ack = httpx.post(f"{server.url}/v1/alerts/{alert['fingerprint']}/ack", json={"by": "carol"})
        assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "carol"
        assert httpx.post(f"{server.url}/v1/alerts/ffffffffffffffff/ack").status_code == 404
        [acked] = [a for a in httpx.get(f"{server.url}/v1/alerts").json()["alerts"]
                   if a["fingerprint"] == alert["fingerprint"]]
        assert acked["acknowledged"] is True and acked["acknowledged_by"] == "carol"

    # once an API key exists, reads need one with the read scope
    token = apikeys.create(engine, "reader", ("read",))
    with LoopbackServer(build_app(AppContext(settings, engine), routes(AppContext(settings, engine)))) as server:
        assert httpx.get(f"{server.url}/v1/alerts").status_code == 401
        ok = httpx.get(f"{server.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and len(ok.json()["alerts"]) == 2


def test_cli_list_silence_ack(engine, database_url, tmp_path):
    from typer.testing import CliRunner

    from wiring.cli import app

    put_row(engine, open_breaches=3)
    from alerts.rules import load_rules

    rules = load_rules(None).rules
    evaluate(engine, rules, T0)
    [t] = evaluate(engine, rules, T0 + timedelta(minutes=10))
    runner = CliRunner()
    base = ["--database-url", database_url, "--data-dir", str(tmp_path)]
    listed = runner.invoke(app, [*base, "alerts", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert t.fingerprint in listed.output and "UnpostedOrders" in listed.output
    silenced = runner.invoke(app, [*base, "alerts", "silence", "-m", "channel=amazon", "--for", "2h",
                                   "--comment", "ERP maintenance", "--by", "dave"])
    assert silenced.exit_code == 0, silenced.output
    assert "channel=amazon" in silenced.output
    shown = runner.invoke(app, [*base, "alerts", "silences"])
    assert "ERP maintenance" in shown.output and "dave" in shown.output
    acked = runner.invoke(app, [*base, "alerts", "ack", t.fingerprint[:8], "--by", "erin"])
    assert acked.exit_code == 0, acked.output
    assert state_of(engine, t.fingerprint)["acknowledged_by"] == "erin"
    bad = runner.invoke(app, [*base, "alerts", "silence", "-m", "nonsense"])
    assert bad.exit_code == 1


def test_acknowledge_tells_no_such_alert_from_an_ambiguous_prefix(engine):
    """What the dashboard and the HTTP API need: "no such alert" (404) apart from other refusals."""
    import pytest

    from controltower.alertops import AmbiguousFingerprint, NoSuchAlert
    from controltower.errors import ControlTowerError

    with engine.begin() as conn:
        conn.execute(alert_state.insert(), [
            {"fingerprint": fp, "rule": "R", "labels": {"channel": ch}, "severity": "page", "state": state,
             "active_since": T0, "last_evaluated_at": T0}
            for fp, ch, state in (("abc1000000000000", "amazon", "firing"), ("abc2000000000000", "ebay", "pending"),
                                  ("def1000000000000", "pos", "resolved"))])
    with pytest.raises(NoSuchAlert, match="no pending or firing alert with fingerprint 'def1'"):
        acknowledge(engine, "def1", "ana", T0, via="dashboard")  # resolved: nothing to acknowledge
    with pytest.raises(NoSuchAlert):
        acknowledge(engine, "0123", "ana", T0, via="dashboard")
    with pytest.raises(AmbiguousFingerprint, match="matches 2 alerts"):
        acknowledge(engine, "abc", "ana", T0, via="dashboard")
    with pytest.raises(ControlTowerError, match="fingerprint: missing"):
        acknowledge(engine, "  ", "ana", T0)
    acked = acknowledge(engine, "ABC2", "ana", T0 + timedelta(minutes=1), via="dashboard")
    assert (acked["fingerprint"], acked["acknowledged_by"]) == ("abc2000000000000", "ana")
    assert issubclass(NoSuchAlert, ControlTowerError) and issubclass(AmbiguousFingerprint, ControlTowerError)
