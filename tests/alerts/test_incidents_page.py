"""The Incidents page under AppTest: the list, one incident with its alerts and timeline, acknowledge."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import parse
from controltower.yamlfile import loads
from tests.alerts.test_incidents_outage import CHANNELS, NOW, RULES, seed_outage
from tests.app.test_dashboard import app_env, run, table_with  # noqa: F401  (app_env is a fixture)


def test_incidents_page_lists_shows_and_acknowledges(engine, settings, app_env: Any) -> None:  # noqa: F811
    import metrics.definitions
    import metrics.jobs

    defs = metrics.definitions.load()
    seed_outage(engine, settings)
    rs = parse(loads(RULES.replace("URL", "http://127.0.0.1:9/hook"), "alerts.yaml"))
    for at in (NOW, NOW + timedelta(minutes=11)):
        metrics.jobs.refresh(engine, defs, at)
        evaluate(engine, rs.rules, at, routes=rs.routes, incidents=rs.incidents)
    with engine.connect() as conn:
        incident_id = conn.execute(sa.text("SELECT id FROM incidents")).scalar_one()

    at = run("views/incidents.py")
    listed = table_with(at, "Alerts")
    assert list(listed["Id"]) == [incident_id] and list(listed["Alerts"]) == [7]
    assert list(listed["Channels"]) == [", ".join(CHANNELS)]
    assert list(listed["Orders at risk"]) == [60]
    assert listed.iloc[0]["Title"].startswith("ERP posting is breaching on all 5 channels since 12:11 UTC")

    at = run("views/incidents.py", id=str(incident_id))
    alerts = table_with(at, "Transactions")
    assert len(alerts) == 7 and alerts.iloc[0]["Rule"] == "UnpostedOrders" and alerts.iloc[0]["First"] == "yes"
    assert set(alerts["Transactions"]) >= {f"http://127.0.0.1:8501/breaches?sla=erp_posting&channel={ch}"
                                           for ch in CHANNELS}
    timeline = table_with(at, "What")
    assert list(timeline["Kind"])[:2] == ["opened", "alert attached"]

    at.text_input(key="who").set_value("Robin")
    at.button(key="incident_ack").click().run()
    assert not at.exception
    with engine.connect() as conn:
        state, by = conn.execute(sa.text("SELECT state, acknowledged_by FROM incidents")).one()
        audit = conn.execute(sa.text("SELECT actor, detail->>'via' FROM alert_audit")).all()
    assert (state, by) == ("acknowledged", "Robin")
    assert [tuple(a) for a in audit] == [("Robin", "dashboard")]
