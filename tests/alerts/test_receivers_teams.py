"""Microsoft Teams receiver against a loopback Workflows webhook that checks the Adaptive Card."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerts.notify import deliver_pending
from alerts.teams import plain
from tests.alerts.test_notify import T0, fire, outbox, rules_for
from tests.conftest import LoopbackServer

SIG = "sig=s3cr3t-signature"


class Workflows:
    """A Teams Workflows trigger: 202 for a message with one Adaptive Card, 400 otherwise."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.cards: list[dict] = []
        self.statuses = list(statuses or [])

        async def trigger(request: Request) -> Response:
            if self.statuses:
                status = self.statuses.pop(0)
                return JSONResponse({"error": {"message": f"echo {request.url}"}}, status_code=status)
            body = json.loads(await request.body())
            problems = check_message(body)
            if problems or request.headers.get("content-type") != "application/json":
                return JSONResponse({"error": {"code": "InvalidRequestContent", "message": problems}}, status_code=400)
            self.cards.append(body["attachments"][0]["content"])
            return Response(status_code=202)

        self.app = Starlette(routes=[Route("/workflows/{rest:path}", trigger, methods=["POST"])])


def check_message(body: dict) -> list[str]:
    problems = []
    if body.get("type") != "message" or not isinstance(body.get("attachments"), list) or len(body["attachments"]) != 1:
        return ["expected type message with one attachment"]
    att = body["attachments"][0]
    if att.get("contentType") != "application/vnd.microsoft.card.adaptive" or "contentUrl" not in att:
        problems.append("attachment contentType/contentUrl")
    card = att.get("content", {})
    if card.get("type") != "AdaptiveCard" or card.get("version") != "1.4" or not card.get("$schema"):
        problems.append("card type/version/$schema")
    for element in card.get("body", []):
        if element["type"] == "TextBlock" and not isinstance(element.get("text"), str):
            problems.append("TextBlock.text")
        if element["type"] == "FactSet" and not all(set(f) == {"title", "value"} for f in element["facts"]):
            problems.append("Fact title/value")
    for action in card.get("actions", []):
        if action.get("type") != "Action.OpenUrl" or not action.get("url", "").startswith("http"):
            problems.append("Action.OpenUrl")
    return problems


def test_firing_and_resolved_cards(engine):
    teams = Workflows()
    with LoopbackServer(teams.app) as server:
        rs = rules_for(f"  chat: {{type: teams, url: '{server.url}/workflows/abc?{SIG}'}}\n")
        fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0).sent == 1
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5)).sent == 1
    firing, resolved = teams.cards
    title, summary, description, facts = firing["body"]
    assert (title["text"], title["color"], title["weight"]) == (r"\[FIRING\] UnpostedOrders", "Attention", "Bolder")
    assert summary["text"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
    assert description["text"] == "Not posted to the ERP within 30 min."
    assert {f["title"]: f["value"] for f in facts["facts"]} == {
        "Severity": "page", "SLA": r"erp\_posting", "Channel": "amazon", "Alerts": "1"}
    assert firing["actions"] == [
        {"type": "Action.OpenUrl", "title": "Offending transactions",
         "url": "http://dash.example:8501/breaches?sla=erp_posting&channel=amazon"},
        {"type": "Action.OpenUrl", "title": "Runbook", "url": "https://wiki.example.com/unposted"},
    ]
    assert resolved["body"][0]["color"] == "Good" and resolved["body"][0]["text"] == r"\[RESOLVED\] UnpostedOrders"
    assert {f["title"]: f["value"] for f in resolved["body"][-1]["facts"]}["Resolved"] == "2026-11-22T09:05:00.000Z"


@pytest.mark.parametrize(("raw", "shown"), [
    ("**bold** and _it_", r"\*\*bold\*\* and \_it\_"),
    ("[click](http://evil.example)", r"\[click\](http://evil.example)"),
    ("- item\n1. first\n  + x", "\\- item\n\\1. first\n  \\+ x"),
    ("`code` ~strike~ <b> # h | t", r"\`code\` \~strike\~ \<b\> \# h \| t"),
    ("{{DATE(2026-01-01T00:00:00Z, SHORT)}}", "{\\{DATE(2026-01-01T00:00:00Z, SHORT)}}"),
    ("back\\slash", "back\\\\slash"),
    ("SO-1001 costs 12.50", "SO-1001 costs 12.50"),  # ordinary text is left alone
])
def test_source_text_is_escaped_not_rendered(raw, shown):
    assert plain(raw) == shown


def test_a_channel_name_cannot_inject_a_link(engine):
    teams = Workflows()
    with LoopbackServer(teams.app) as server:
        rs = rules_for(f"  chat: {{type: teams, url: '{server.url}/workflows/abc'}}\n")
        from sqlalchemy.dialects.postgresql import insert

        from alerts.evaluate import evaluate
        from controltower.schema.metrics import sla_status

        with engine.begin() as conn:
            conn.execute(insert(sla_status).values(
                sla="erp_posting", channel="[pay here](http://evil.example)", window="1h", kind="milestone_latency",
                computed_at=T0, health="critical", open_breaches=2, oldest_breach_ms=60_000, target_ms=1_800_000))
        evaluate(engine, rs.rules, T0, dashboard_url="http://dash")
        assert deliver_pending(engine, rs.receivers, T0).sent == 1
    [card] = teams.cards
    assert card["body"][1]["text"].startswith(r"\[pay here\](http://evil.example): 2 orders unposted")
    channel = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}["Channel"]
    assert channel == r"\[pay here\](http://evil.example)"


def test_errors_retry_or_fail_and_the_url_never_shows(engine, monkeypatch):
    teams = Workflows(statuses=[502, 400])
    with LoopbackServer(teams.app) as server:
        monkeypatch.setenv("CT_TEAMS_URL", f"{server.url}/workflows/abc?{SIG}")
        rs = rules_for("  chat: {type: teams, url_env: CT_TEAMS_URL}\n")
        fire(engine, rs)
        first = deliver_pending(engine, rs.receivers, T0)
        assert (first.sent, first.retried, first.failed) == (0, 1, 0)
        second = deliver_pending(engine, rs.receivers, T0 + timedelta(hours=1))
        assert (second.sent, second.retried, second.failed) == (0, 0, 1)  # 400: permanent
    [row] = outbox(engine)
    assert row["status"] == "failed" and row["last_error"].startswith("HTTP 400")
    assert "s3cr3t" not in row["last_error"] and "***" in row["last_error"]
    assert all("s3cr3t" not in e for e in first.errors + second.errors)
