"""Actions on exception groups and their audit, through the CLI and the HTTP API (real loopback server)."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.metrics.helpers import NOW, ingest, minutes
from tests.metrics.test_exceptions_grouping import failed, groups, tick
from wiring.cli import app


def seed(engine, settings) -> int:
    ingest(engine, settings, [failed("x1", "order.erp_posted", NOW - minutes(5), "Gateway timeout from ERP", code="504"),
                              failed("x2", "order.erp_posted", NOW - minutes(4), "Gateway timeout from ERP", code="504")])
    tick(engine, NOW)
    [g] = groups(engine)
    return int(g["id"])


def audit(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT actor, action, via FROM exception_actions ORDER BY id"))]


def cli(tmp_path, database_url, *args: str):
    base = ["--database-url", database_url, "--data-dir", str(tmp_path)]
    return CliRunner().invoke(app, [*base, "exceptions", *args])


def test_cli_actions_are_audited_with_by(engine, settings, tmp_path, database_url) -> None:
    gid = str(seed(engine, settings))
    listed = cli(tmp_path, database_url, "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert '"class": "timeout"' in listed.output and '"open_count": 2' in listed.output
    for args in (("assign", gid, "robin"), ("comment", gid, "called dana@example.com about it"),
                 ("tag", gid, "erp", "peak"), ("tag", gid, "--remove", "peak"), ("snooze", gid, "--for", "2h"),
                 ("reopen", gid), ("resolve", gid, "--note", "ERP back")):
        result = cli(tmp_path, database_url, *args, "--by", "dana")
        assert result.exit_code == 0, (args, result.output)
    g = groups(engine)[0]
    assert (g["assignee"], g["tags"], g["state"], g["resolution"], g["resolved_by"]) == (
        "robin", ["erp"], "resolved", "manual", "dana")
    assert audit(engine) == [("dana", a, "cli") for a in ("assign", "comment", "tag", "tag", "snooze", "reopen",
                                                          "resolve")]
    with engine.connect() as conn:
        text = conn.execute(sa.text("SELECT detail->>'text' FROM exception_actions WHERE action = 'comment'")).scalar_one()
    assert "dana@example.com" not in text and text.startswith("called ")
    again = cli(tmp_path, database_url, "resolve", gid, "--by", "dana")
    assert again.exit_code == 1 and "already resolved" in again.output
    shown = cli(tmp_path, database_url, "show", gid)
    assert shown.exit_code == 0 and "Audit trail" in shown.output
    stats = cli(tmp_path, database_url, "stats", "--json")
    assert stats.exit_code == 0 and '"manual": 1' in stats.output
    missing = cli(tmp_path, database_url, "show", "999")
    assert missing.exit_code == 1 and "no exception group 999" in missing.output


def test_cli_check_names_the_line(tmp_path) -> None:
    bad = tmp_path / "exceptions.yaml"
    bad.write_text("rules:\n  - class: slow\n    match: {message: [x]}\n")
    result = CliRunner().invoke(app, ["exceptions", "check", str(bad)])
    assert result.exit_code != 0 and str(result.exception).startswith(f"{bad}:2: class: 'slow'")  # main() prints it
    assert CliRunner().invoke(app, ["exceptions", "check"]).exit_code == 0


def test_http_lists_shows_and_acts(engine, settings, collector) -> None:
    gid = seed(engine, settings)
    with httpx.Client(base_url=collector.url) as client:
        listed = client.get("/v1/exceptions", params={"class": "timeout"}).json()["exceptions"]
        assert [(g["id"], g["open_count"], g["milestone"]) for g in listed] == [(gid, 2, "order.erp_posted")]
        assert client.get("/v1/exceptions", params={"class": "auth"}).json()["exceptions"] == []
        assert client.get("/v1/exceptions", params={"state": "bogus"}).status_code == 400
        r = client.post(f"/v1/exceptions/{gid}/assign", json={"by": "sam", "assignee": "robin"})
        assert r.status_code == 200 and r.json()["assignee"] == "robin"
        assert client.post(f"/v1/exceptions/{gid}/tag", json={"by": "sam", "add": ["erp"]}).json()["tags"] == ["erp"]
        assert client.post(f"/v1/exceptions/{gid}/snooze", json={"by": "sam", "for": "1h"}).json()["state"] == "snoozed"
        assert client.post(f"/v1/exceptions/{gid}/snooze", json={"by": "sam"}).status_code == 400
        assert client.post(f"/v1/exceptions/{gid}/comment", json={"text": ""}).status_code == 400
        r = client.post(f"/v1/exceptions/{gid}/resolve", json={"by": "sam", "note": "fixed"})
        assert r.status_code == 200 and (r.json()["state"], r.json()["resolved_by"]) == ("resolved", "sam")
        assert client.post(f"/v1/exceptions/{gid}/resolve", json={"by": "sam"}).status_code == 409
        assert client.post("/v1/exceptions/999/assign", json={"assignee": "x"}).status_code == 404
        assert client.post(f"/v1/exceptions/{gid}/explode", json={}).status_code == 404
        one = client.get(f"/v1/exceptions/{gid}").json()
        assert [o["correlation_id"] for o in one["occurrences"]] == ["x2", "x1"]
        assert [(a["actor"], a["action"], a["via"]) for a in one["actions"]] == [
            ("sam", "assign", "http"), ("sam", "tag", "http"), ("sam", "snooze", "http"), ("sam", "resolve", "http")]
