"""The Exceptions page under AppTest: the work queue with filters, one group, assign records the identity, counts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from controltower import exceptionops
from tests.app.test_dashboard import app_env, run, table_with  # noqa: F401  (app_env is a fixture)
from tests.metrics.helpers import NOW, ingest, minutes
from tests.metrics.test_exceptions_grouping import failed, tick


def test_exceptions_page_lists_filters_shows_and_assigns(engine, settings, app_env: Any) -> None:  # noqa: F811
    ingest(engine, settings, [
        failed("w1", "order.erp_posted", NOW - minutes(9), "Gateway timeout from ERP", code="504"),
        failed("w2", "order.erp_posted", NOW - minutes(8), "Gateway timeout from ERP", code="504"),
        failed("w3", "order.acknowledged", NOW - minutes(7), "Unknown SKU ZX-9", channel="ebay"),
    ])
    tick(engine, NOW)
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT class, id FROM exception_groups")).all())
    exceptionops.resolve(engine, ids["mapping"], "mapped the SKU", "sam", NOW + minutes(30))

    listed = table_with(run("views/exceptions.py"), "Milestone")
    assert list(listed["Id"]) == [ids["timeout"]]  # active only: the resolved one is not listed
    assert list(listed["Open"]) == [2] and list(listed["Class"]) == ["timeout"]
    every = table_with(run("views/exceptions.py", state="all", channel="ebay"), "Milestone")
    assert list(every["Id"]) == [ids["mapping"]] and list(every["State"]) == ["resolved"]

    at = run("views/exceptions.py", id=str(ids["timeout"]))
    links = [(link.proto.page, link.proto.query_string) for link in at.get("page_link")]
    assert any(page.endswith("replay") and query == f"group={ids['timeout']}" for page, query in links), links
    occurrences = table_with(at, "Awaits")
    assert sorted(occurrences["Correlation id"]) == ["w1", "w2"]
    assert set(occurrences["Transaction"]) == {"transaction?id=w1", "transaction?id=w2"}
    at.text_input(key="who").set_value("Robin")
    at.text_input(key="exc_assignee").set_value("robin")
    at.button(key="exc_assign").click().run()
    assert not at.exception
    with engine.connect() as conn:
        assignee = conn.execute(sa.text("SELECT assignee FROM exception_groups WHERE id = :i"),
                                {"i": ids["timeout"]}).scalar_one()
        audit = conn.execute(sa.text("SELECT actor, action, via FROM exception_actions WHERE group_id = :i"),
                             {"i": ids["timeout"]}).all()
    assert assignee == "robin" and [tuple(a) for a in audit] == [("Robin", "assign", "dashboard")]
    trail = table_with(at, "Who")
    assert list(trail["Who"]) == ["Robin"] and list(trail["Action"]) == ["assign"]
