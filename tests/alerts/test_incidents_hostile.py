"""Incidents under attack: parallel evaluations, acknowledgement then a new team, a removed rule,
muted routes, grouping switched off, retention, junk dashboard ids.

The SLA table and hop health are written directly (known inputs); the evaluator runs for real
against PostgreSQL, and the outbox rows it writes are what the tests read.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from alerts.evaluate import evaluate
from alerts.incidents import IncidentPolicy
from alerts.rules import parse
from controltower import alertops
from controltower.schema.metrics import hop_health
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row
from tests.app.test_dashboard import app_env, run  # noqa: F401  (app_env is a fixture)

T0 = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)  # a Sunday, 22:00 UTC
M = timedelta(minutes=1)
ERP = "the ERP or the middleware in front of it"

RULES = """
incidents: {group_by: hop}
time_intervals:
  - name: night
    time_intervals:
      - times: [{start_time: "00:00", end_time: "06:00"}]
receivers:
  oncall: {type: log}
  warehouse: {type: log}
default_receivers: [oncall]
routes:
  - match: {sla: warehouse_release}
    receivers: [warehouse]
  - match: {channel: ebay}
    receivers: [oncall]
    mute_time_intervals: [night]
rules:
  - {name: Unposted, sla: erp_posting, field: open_breaches, op: ">", value: 0, severity: page, repeat_interval: 1h}
  - {name: ReleaseLate, sla: warehouse_release, field: open_breaches, op: ">", value: 0, severity: ticket}
"""


def ruleset(text: str = RULES) -> Any:
    return parse(loads(text, "alerts.yaml"))


def put_hop(engine, channel: str, hop: str, position: int, health: str, sla: str, cause: str | None = None) -> None:
    values = {"channel": channel, "hop": hop, "position": position, "computed_at": T0, "volume": 10,
              "backlog": 0, "health": health, "sla": sla, "cause": cause}
    stmt = insert(hop_health).values(**values)
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=["channel", "hop"],
                                                set_={k: stmt.excluded[k] for k in ("health", "sla", "cause")}))


def erp_down(engine, channel: str = "amazon") -> None:
    put_hop(engine, channel, "ERP posting", 2, "critical", "erp_posting", ERP)
    put_hop(engine, channel, "warehouse release", 3, "warn", "warehouse_release", "the WMS")
    put_row(engine, channel=channel, open_breaches=3, health="critical")


def tick(engine, rs, at: datetime, policy: IncidentPolicy | None = None, rules=None) -> None:
    evaluate(engine, rs.rules if rules is None else rules, at, routes=rs.routes,
             incidents=rs.incidents if policy is None else policy)


def sent(engine) -> list[tuple[str, str]]:
    return [(r["kind"], r["receiver"]) for r in outbox(engine)]


def incident_rows(engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM incidents ORDER BY id"))]


def test_two_evaluations_at_once_page_the_incident_once(engine, migrated_engine):
    """Two schedulers for a moment (or `controltower alerts evaluate` by hand next to the leader):
    the second evaluation must not crash into the open-key index and fall back to per-rule pages."""
    rs = ruleset()
    erp_down(engine)
    errors: list[BaseException] = []

    def evaluate_in_thread() -> None:
        try:
            tick(engine, rs, T0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    blocker = migrated_engine.connect()
    trans = blocker.begin()
    # Hold the evaluations at their last write (the cycle's health row), after the incident insert.
    blocker.execute(sa.text("LOCK TABLE alert_evaluations IN EXCLUSIVE MODE"))
    threads = [threading.Thread(target=evaluate_in_thread) for _ in range(2)]
    try:
        for t in threads:
            t.start()
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = blocker.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )).scalar()
            if waiting >= 2:
                break
            time.sleep(0.05)
    finally:
        trans.rollback()
        blocker.close()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    assert sent(engine) == [("firing", "oncall")]  # one page, the incident's, not a per-rule one too
    [inc] = incident_rows(engine)
    assert inc["state"] == "open"


def test_a_team_not_yet_paged_is_paged_when_its_alert_joins_an_acknowledged_incident(engine):
    rs = ruleset()
    erp_down(engine)
    tick(engine, rs, T0)
    [inc] = incident_rows(engine)
    alertops.acknowledge_incident(engine, inc["id"], "robin", T0 + M)
    # downstream of the red ERP hop: the warehouse's alert joins the acknowledged incident
    put_row(engine, sla="warehouse_release", open_breaches=2, health="warn")
    tick(engine, rs, T0 + 2 * M)
    [again] = incident_rows(engine)
    assert again["id"] == inc["id"] and again["state"] == "acknowledged"
    assert sent(engine) == [("firing", "oncall"), ("firing", "warehouse")]
    # and acknowledged still means no repeats: two hours later nothing more
    tick(engine, rs, T0 + 2 * M + timedelta(hours=2))
    assert len(sent(engine)) == 2


def test_a_rule_removed_from_the_file_resolves_its_incident_and_says_so(engine):
    rs = ruleset()
    erp_down(engine)
    tick(engine, rs, T0)
    without = [r for r in rs.rules if r.name != "Unposted"]
    tick(engine, rs, T0 + M, rules=without)
    [inc] = incident_rows(engine)
    assert (inc["state"], inc["resolved_at"]) == ("resolved", T0 + M)
    rows = outbox(engine)
    assert [(r["kind"], r["receiver"]) for r in rows] == [("firing", "oncall"), ("resolved", "oncall")]
    assert rows[1]["payload"]["dedup_key"] == rows[0]["payload"]["dedup_key"] == f"incident-{inc['id']}"


def test_an_incident_repeat_waits_while_its_route_is_muted(engine):
    rs = ruleset()
    erp_down(engine, "ebay")  # ebay's route is muted 00:00-06:00
    tick(engine, rs, T0)  # Sunday 22:00: paged
    assert sent(engine) == [("firing", "oncall")]
    tick(engine, rs, T0 + timedelta(hours=4))  # 02:00, past the 1 h repeat: muted, nothing
    assert sent(engine) == [("firing", "oncall")]
    tick(engine, rs, T0 + timedelta(hours=8, minutes=30))  # 06:30: the mute is over, the repeat goes
    assert sent(engine) == [("firing", "oncall"), ("repeat", "oncall")]


def test_open_incidents_still_resolve_after_grouping_is_switched_off(engine):
    rs = ruleset()
    erp_down(engine)
    tick(engine, rs, T0)
    off = IncidentPolicy("none")
    tick(engine, rs, T0 + M, policy=off)  # still firing: the incident stays, nothing more is sent
    assert sent(engine) == [("firing", "oncall")]
    assert incident_rows(engine)[0]["state"] == "open"
    put_row(engine, open_breaches=0, health="ok")
    tick(engine, rs, T0 + 2 * M, policy=off)
    [inc] = incident_rows(engine)
    assert inc["state"] == "resolved"
    kinds = sent(engine)
    # the incident's page is resolved under its own key (the per-rule resolved notice goes out too)
    assert ("resolved", "oncall") in kinds and kinds[0] == ("firing", "oncall")
    incident_resolved = [r for r in outbox(engine) if r["kind"] == "resolved" and r["payload"].get("dedup_key")]
    assert [r["payload"]["dedup_key"] for r in incident_resolved] == [f"incident-{inc['id']}"]


def test_a_steady_incident_adds_no_timeline_entry_per_tick(engine):
    rs = ruleset()
    erp_down(engine)
    for i in range(10):
        put_hop(engine, "amazon", "ERP posting", 2, "critical" if i % 2 else "warn", "erp_posting", ERP)
        tick(engine, rs, T0 + i * M)
    with engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(sa.text("SELECT kind FROM incident_events ORDER BY id"))]
    assert kinds == ["opened", "alert attached", "notified"]


def test_retention_prunes_resolved_incidents_with_the_alert_history(engine, settings):
    from controltower import retention

    now = datetime(2027, 6, 1, tzinfo=UTC)
    old = now - timedelta(seconds=settings.retention_alerts) - timedelta(days=1)
    with engine.begin() as conn:
        for key, state, resolved in (("hop:old", "resolved", old), ("hop:recent", "resolved", now - M),
                                     ("hop:open", "open", None)):
            iid = conn.execute(sa.text(
                "INSERT INTO incidents (key, state, title, severity, opened_at, resolved_at, updated_at) "
                "VALUES (:k, :s, :k, 'page', :o, :r, :o) RETURNING id"), {"k": key, "s": state, "o": old, "r": resolved}
            ).scalar_one()
            conn.execute(sa.text("INSERT INTO incident_events (incident_id, at, kind, text) VALUES (:i, :o, 'opened', 'x')"),
                         {"i": iid, "o": old})
            conn.execute(sa.text("INSERT INTO incident_alerts (incident_id, fingerprint, rule, labels, attached_at) "
                                 "VALUES (:i, 'f', 'r', '{}', :o)"), {"i": iid, "o": old})
    plan = retention.plan(engine, settings, now)
    assert plan.rows["incidents"] == 1
    retention.apply(engine, settings, now)
    with engine.connect() as conn:
        keys = [k for (k,) in conn.execute(sa.text("SELECT key FROM incidents ORDER BY key"))]
        events = conn.execute(sa.text("SELECT count(*) FROM incident_events")).scalar()
        attached = conn.execute(sa.text("SELECT count(*) FROM incident_alerts")).scalar()
    assert keys == ["hop:open", "hop:recent"]  # open ones are kept however old
    assert (events, attached) == (2, 2)


@pytest.mark.parametrize("junk", ["²", "99999999999999999999", "-1", "1e3", "<b>7</b>"])
def test_the_dashboard_answers_junk_incident_ids_with_a_warning(engine, app_env, junk):  # noqa: F811
    erp_down(engine)  # some data, so the page does not stop at its empty state
    at = run("views/incidents.py", id=junk)  # `run` asserts the page raised nothing
    assert any("No incident" in w.value for w in at.warning)


def test_incident_http_answers_junk_with_404_or_400(engine, collector):
    import httpx

    rs = ruleset()
    erp_down(engine)
    tick(engine, rs, T0)
    [inc] = incident_rows(engine)
    base = f"{collector.url}/v1/incidents"
    for junk in ("-1", str(2**70), "abc", "9223372036854775807", "%C2%B2", "1.0"):
        r = httpx.get(f"{base}/{junk}")
        assert r.status_code == 404, (junk, r.status_code)
        assert httpx.post(f"{base}/{junk}/ack", json={"by": "x"}).status_code == 404
    r = httpx.get(base, params={"state": "x" * 5000})
    assert r.status_code == 400 and len(r.text) < 300
    assert httpx.post(f"{base}/{inc['id']}/ack", content=b"{not json").status_code == 400
    assert httpx.post(f"{base}/{inc['id']}/ack", json={"by": ["a"]}).status_code == 400
    r = httpx.post(f"{base}/{inc['id']}/ack", json={"by": "\u202eévil\x07" + "é" * 5000})
    assert r.status_code == 200
    assert r.json()["acknowledged_by"] == "évil" + "é" * 196  # control and bidi characters out, 200 kept
    assert httpx.post(f"{base}/{inc['id']}/ack").json()["acknowledged_by"] == r.json()["acknowledged_by"]


def test_the_resolved_notice_lists_the_alerts_that_were_paged_not_the_silenced_ones(engine):
    rs = ruleset()
    alertops.add_silence(engine, {"channel": "amazon"}, starts_at=T0 - M, ends_at=T0 + timedelta(hours=9),
                         created_by="test")
    erp_down(engine, "amazon")  # silenced: joins the incident (and opens it), pages nobody
    erp_down(engine, "b2b")
    tick(engine, rs, T0)
    put_row(engine, channel="amazon", open_breaches=0, health="ok")
    put_row(engine, channel="b2b", open_breaches=0, health="ok")
    tick(engine, rs, T0 + M)
    firing, resolved = (r["payload"] for r in outbox(engine))
    assert [a["labels"]["channel"] for a in firing["alerts"]] == ["b2b"]
    assert [a["labels"]["channel"] for a in resolved["alerts"]] == ["b2b"]
    assert resolved["labels"]["channel"] == "b2b"  # the notice is headed by what the page was
