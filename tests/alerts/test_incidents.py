"""Incidents: grouping by the most upstream red hop (pure), silences, acknowledgement (core, HTTP, CLI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.incidents import Cause, Hop, HopMap, title, where
from alerts.notify import deliver_pending
from alerts.rules import parse
from controltower import alertops
from controltower.yamlfile import loads
from tests.alerts.test_incidents_outage import NOW, RULES, seed_outage
from tests.alerts.test_notify import Recorder
from tests.conftest import LoopbackServer

ERP = "the ERP or the middleware in front of it"


def hops(amazon_ack: str = "ok", amazon_erp: str = "critical", ebay_erp: str = "warn") -> HopMap:
    rows = []
    for ch, ack, erp in (("amazon", amazon_ack, amazon_erp), ("ebay", "ok", ebay_erp), ("walmart", "ok", "ok")):
        rows += [Hop(ch, "acknowledgement", 1, ack, "order_acknowledgement", "the order connector"),
                 Hop(ch, "ERP posting", 2, erp, "erp_posting", ERP),
                 Hop(ch, "warehouse release", 3, "warn" if ch == "amazon" else "ok", "warehouse_release", "the WMS")]
    return HopMap(rows)


@pytest.mark.parametrize(("labels", "hop_map", "key"), [
    ({"sla": "erp_posting", "channel": "amazon"}, hops(), "hop:ERP posting"),
    ({"sla": "warehouse_release", "channel": "amazon"}, hops(), "hop:ERP posting"),  # downstream of a red hop
    ({"sla": "warehouse_release", "channel": "amazon"}, hops(amazon_erp="ok"), "hop:warehouse release"),  # its own
    ({"sla": "erp_posting", "channel": "amazon"}, hops(amazon_ack="warn"), "hop:acknowledgement"),  # most upstream
    ({"sla": "warehouse_release", "channel": "pos"}, hops(), "hop:warehouse release"),  # hop not on that channel
    ({"sla": "error_rate", "channel": "amazon"}, hops(), "sla:error_rate"),  # judges no hop
])
def test_an_alert_belongs_to_the_most_upstream_red_hop_of_its_channel(labels, hop_map, key):
    assert hop_map.cause_of(labels).key == key


def test_titles_name_the_hop_its_channels_and_the_cause():
    since = datetime(2026, 11, 23, 9, 12, tzinfo=UTC)
    cause = Cause("hop:ERP posting", "ERP posting", ERP, "erp_posting")
    assert title(cause, hops(), ["amazon"], since) == (
        f"ERP posting is breaching on 2 of 3 channels (amazon, ebay) since 09:12 UTC → {ERP}")
    assert title(cause, hops(ebay_erp="ok"), ["amazon"], since) == f"ERP posting is breaching on amazon since 09:12 UTC → {ERP}"
    assert where(["a", "b", "c", "d", "e"], 5) == "on all 5 channels"
    assert title(Cause("sla:error_rate", None, None, "error_rate"), hops(), ["ebay", "amazon"], since) == (
        "error_rate is breaching on all 2 channels since 09:12 UTC")


def test_incidents_key_is_validated_with_its_line():
    from controltower.errors import ConfigError

    with pytest.raises(ConfigError, match=r"alerts.yaml:3: incidents.group_by 'cause' is not one of hop, none"):
        parse(loads("rules: []\nincidents:\n  group_by: cause\n", "alerts.yaml"))
    assert parse(loads("rules: []\n", "alerts.yaml")).incidents.group_by == "hop"
    assert not parse(loads("rules: []\nincidents: {group_by: none}\n", "alerts.yaml")).incidents.enabled


def _outage(engine, settings, server_url: str, *, silence: bool = False):
    import metrics.definitions
    import metrics.jobs

    defs = metrics.definitions.load()
    seed_outage(engine, settings)
    rs = parse(loads(RULES.replace("URL", f"{server_url}/hook"), "alerts.yaml"))
    if silence:
        alertops.add_silence(engine, {"severity": "page"}, starts_at=NOW - timedelta(hours=1),
                             ends_at=NOW + timedelta(hours=9), created_by="test")
        alertops.add_silence(engine, {"severity": "ticket"}, starts_at=NOW - timedelta(hours=1),
                             ends_at=NOW + timedelta(hours=9), created_by="test")

    def tick(at: datetime) -> None:
        metrics.jobs.refresh(engine, defs, at)
        evaluate(engine, rs.rules, at, routes=rs.routes, incidents=rs.incidents)
        deliver_pending(engine, rs.receivers, at)

    tick(NOW)
    tick(NOW + timedelta(minutes=11))
    return tick


def test_an_incident_whose_alerts_are_all_silenced_sends_nothing(engine, settings):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        tick = _outage(engine, settings, server.url, silence=True)
        tick(NOW + timedelta(hours=5))  # past the first rule's repeat_interval (4h): still nothing
    assert recorder.requests == []
    [inc] = alertops.list_incidents(engine)
    assert (inc["state"], inc["alert_count"], inc["notified_receivers"]) == ("open", 7, [])


def test_repeats_follow_the_first_rule_until_the_incident_is_acknowledged(engine, settings, collector):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        tick = _outage(engine, settings, server.url)
        [inc] = alertops.list_incidents(engine)
        tick(NOW + timedelta(minutes=11, hours=4))  # the first alert's rule repeats every 4 h
        assert [r["body"]["status"] for r in recorder.requests] == ["firing", "firing"]
        # the repeat carries the alerts still firing: the burn rate's late samples left its 1 h window
        repeat = recorder.requests[1]["body"]
        assert len(repeat["alerts"]) == 6 and repeat["alerts"][0]["labels"]["alertname"] == "UnpostedOrders"

        listed = httpx.get(f"{collector.url}/v1/incidents").json()["incidents"]
        assert [(i["id"], i["state"], i["alert_count"]) for i in listed] == [(inc["id"], "open", 7)]
        r = httpx.post(f"{collector.url}/v1/incidents/{inc['id']}/ack", json={"by": "robin"})
        assert r.status_code == 200 and r.json() == {"id": inc["id"], "state": "acknowledged", "acknowledged_by": "robin"}
        assert httpx.post(f"{collector.url}/v1/incidents/999/ack", json={"by": "robin"}).status_code == 404
        assert httpx.get(f"{collector.url}/v1/incidents?state=nope").status_code == 400
        one = httpx.get(f"{collector.url}/v1/incidents/{inc['id']}").json()
        assert one["state"] == "acknowledged" and len(one["alerts"]) == 7
        assert [e["kind"] for e in one["timeline"]][-1] == "acknowledged"

        tick(NOW + timedelta(minutes=11, hours=8, seconds=30))  # acknowledged: no repeat
        assert len(recorder.requests) == 2
    with engine.connect() as conn:
        acked = conn.execute(sa.text("SELECT count(*) FROM alert_state WHERE acknowledged_by = 'robin'")).scalar()
        audit = conn.execute(sa.text("SELECT actor, action, target, detail->>'via' FROM alert_audit")).all()
    assert acked == 6  # the pending and firing ones (the burn rate alert had resolved)
    assert [tuple(a) for a in audit] == [("robin", "acknowledge_incident", f"incident:{inc['id']}", "http")]
    again = alertops.acknowledge_incident(engine, inc["id"], "someone else", NOW)
    assert again["acknowledged_by"] == "robin"  # no repeat of the acknowledgement


def test_cli_lists_and_acknowledges_incidents(engine, settings):
    from typer.testing import CliRunner

    from wiring.cli import app

    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        _outage(engine, settings, server.url)
    [inc] = alertops.list_incidents(engine)
    env = {"CONTROLTOWER_DATABASE_URL": settings.database_url}
    runner = CliRunner()
    out = runner.invoke(app, ["alerts", "incidents", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert '"alert_count": 7' in out.output and "ERP posting is breaching on all 5 channels" in out.output
    out = runner.invoke(app, ["alerts", "incident-ack", str(inc["id"]), "--by", "kim"], env=env)
    assert out.exit_code == 0, out.output
    assert f"acknowledged incident {inc['id']} by kim" in out.output
    out = runner.invoke(app, ["alerts", "incident-ack", "4242", "--by", "kim"], env=env)
    assert out.exit_code == 1 and "no open incident 4242" in out.output
