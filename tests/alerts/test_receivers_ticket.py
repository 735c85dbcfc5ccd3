"""The Jira ticket receiver against a loopback Jira Cloud (REST v3) that checks the documented
requests (basic auth, issue fields, ADF description, JQL search, transitions): one ticket per
dedup key, found by its label after a crash, closed with a comment on resolve."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerts.notify import deliver_pending
from controltower.schema.alerts import alert_tickets
from tests.alerts.test_notify import T0, fire, outbox, rules_for
from tests.conftest import LoopbackServer

USER, TOKEN = "ops@example.com", "jira-token-secret"
ENV = {"CT_JIRA_USER": USER, "CT_JIRA_TOKEN": TOKEN}


def check_adf(doc: dict) -> bool:
    return (doc.get("type") == "doc" and doc.get("version") == 1 and bool(doc.get("content"))
            and all(p["type"] == "paragraph" and p["content"] and all(n["type"] == "text" and n["text"]
                                                                      for n in p["content"]) for p in doc["content"]))


class FakeJira:
    TRANSITIONS = [{"id": "11", "name": "To Do"}, {"id": "21", "name": "In Progress"}, {"id": "31", "name": "Done"}]

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.issues: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.statuses = list(statuses or [])
        self.url = ""

        def gate(request: Request) -> Response | None:
            self.calls.append((request.method, request.url.path))
            if self.statuses:
                return JSONResponse({"errorMessages": ["unavailable"]}, status_code=self.statuses.pop(0))
            expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"errorMessages": [f"bad auth {request.headers.get('authorization')}"]},
                                    status_code=401)
            return None

        async def create(request: Request) -> Response:
            if (failed := gate(request)) is not None:
                return failed
            fields = json.loads(await request.body()).get("fields", {})
            errors = {}
            if not fields.get("project", {}).get("key"):
                errors["project"] = "project is required"
            if not fields.get("issuetype", {}).get("name"):
                errors["issuetype"] = "issue type is required"
            summary = fields.get("summary", "")
            if not summary or len(summary) > 255 or "\n" in summary:
                errors["summary"] = "summary: one line of at most 255 characters"
            if not check_adf(fields.get("description", {})):
                errors["description"] = "Operation value must be an Atlassian Document"
            if any(" " in label for label in fields.get("labels", [])):
                errors["labels"] = "labels cannot contain spaces"
            if errors:
                return JSONResponse({"errorMessages": [], "errors": errors}, status_code=400)
            return JSONResponse(self.add(fields), status_code=201)

        async def search(request: Request) -> Response:
            if (failed := gate(request)) is not None:
                return failed
            jql = json.loads(await request.body())["jql"]
            label = re.search(r'labels = "([^"]+)"', jql).group(1)
            open_only = "statusCategory != Done" in jql
            found = [{"id": i["id"], "key": k, "fields": {"status": {"name": i["status"]}}}
                     for k, i in reversed(self.issues.items())
                     if label in i["fields"]["labels"] and not (open_only and i["status"] == "Done")]
            return JSONResponse({"issues": found[:1], "isLast": True})

        async def transitions(request: Request) -> Response:
            if (failed := gate(request)) is not None:
                return failed
            issue = self.issues.get(request.path_params["key"])
            if issue is None:
                return JSONResponse({"errorMessages": ["Issue does not exist"]}, status_code=404)
            if request.method == "GET":
                return JSONResponse({"transitions": self.TRANSITIONS})
            wanted = json.loads(await request.body())["transition"]["id"]
            name = {t["id"]: t["name"] for t in self.TRANSITIONS}.get(wanted)
            if name is None:
                return JSONResponse({"errorMessages": ["Transition id is not valid"]}, status_code=400)
            issue["status"] = name
            return Response(status_code=204)

        async def comment(request: Request) -> Response:
            if (failed := gate(request)) is not None:
                return failed
            body = json.loads(await request.body())["body"]
            if not check_adf(body):
                return JSONResponse({"errorMessages": ["Comment body is not valid ADF"]}, status_code=400)
            self.issues[request.path_params["key"]]["comments"].append(body["content"][0]["content"][0]["text"])
            return JSONResponse({"id": "1"}, status_code=201)

        async def issue(request: Request) -> Response:
            if (failed := gate(request)) is not None:
                return failed
            key = request.path_params["key"]
            if key not in self.issues:
                return JSONResponse({"errorMessages": ["Issue does not exist"]}, status_code=404)
            status = self.issues[key]["status"]
            category = {"Done": "done", "To Do": "new"}.get(status, "indeterminate")
            return JSONResponse({"key": key, "fields": {"status": {"name": status, "statusCategory": {"key": category}}}})

        self.app = Starlette(routes=[
            Route("/rest/api/3/issue", create, methods=["POST"]),
            Route("/rest/api/3/issue/{key}", issue, methods=["GET"]),
            Route("/rest/api/3/search/jql", search, methods=["POST"]),
            Route("/rest/api/3/issue/{key}/transitions", transitions, methods=["GET", "POST"]),
            Route("/rest/api/3/issue/{key}/comment", comment, methods=["POST"]),
        ])

    def add(self, fields: dict) -> dict:
        number = self.made = getattr(self, "made", 0) + 1  # numbers are never reused, even after a delete
        key = f"{fields['project']['key']}-{number}"
        self.issues[key] = {"id": str(10000 + number), "fields": fields, "status": "To Do", "comments": []}
        return {"id": str(10000 + number), "key": key, "self": f"{self.url}/rest/api/3/issue/{10000 + number}"}


def receiver(url: str, extra: str = "") -> str:
    return (f"  jira: {{type: ticket, template: jira, url: '{url}', project: OPS, user_env: CT_JIRA_USER,"
            f" token_env: CT_JIRA_TOKEN{extra}}}\n")


def tickets(engine):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(alert_tickets))]


def test_opens_once_closes_on_resolve_and_reopens_for_a_new_episode(engine):
    jira = FakeJira()
    with LoopbackServer(jira.app) as server:
        jira.url = server.url
        rs = rules_for(receiver(server.url))
        [t] = fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).sent == 1
        # the same notification delivered again (a takeover re-send) opens nothing new
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alert_notifications SET status = 'pending'"))
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).sent == 1
        assert list(jira.issues) == ["OPS-1"]
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5), environ=ENV).sent == 1
        issue = jira.issues["OPS-1"]
        assert issue["status"] == "Done"
        [note] = issue["comments"]  # (the summary's text at resolve time is the evaluator's business)
        assert note.startswith("Resolved at 2026-11-22T09:05:00.000Z: amazon: ")
        [row] = tickets(engine)
        assert (row["ticket_key"], row["ticket_id"], row["state"]) == ("OPS-1", "10001", "closed")
        assert row["dedup_key"] == t.fingerprint and row["closed_at"] == T0 + timedelta(minutes=5)
        # it fires again: a new ticket
        fire(engine, rs, at=T0 + timedelta(minutes=10))
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=10), environ=ENV).sent == 1
        assert list(jira.issues) == ["OPS-1", "OPS-2"] and tickets(engine)[0]["state"] == "open"
    fields = jira.issues["OPS-1"]["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "[FIRING] UnpostedOrders: amazon: 143 orders unposted, oldest 1 h 30 min"
    assert fields["labels"] == ["controltower", f"ct-{t.fingerprint}"]
    texts = [n for p in fields["description"]["content"] for n in p["content"]]
    assert texts[0]["text"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
    link = next(n for n in texts if n["text"] == "Offending transactions")
    assert link["marks"] == [{"type": "link", "attrs": {
        "href": "http://dash.example:8501/breaches?sla=erp_posting&channel=amazon"}}]
    # the name "Done" was resolved through GET .../transitions, then POSTed as its id
    assert ("GET", "/rest/api/3/issue/OPS-1/transitions") in jira.calls


def test_after_a_crash_between_create_and_store_the_label_finds_the_ticket(engine):
    jira = FakeJira()
    with LoopbackServer(jira.app) as server:
        jira.url = server.url
        rs = rules_for(receiver(server.url, ", close_transition: 31"))
        [t] = fire(engine, rs)
        # created by a deliverer that died before its transaction (the mapping) committed
        jira.add({"project": {"key": "OPS"}, "labels": ["controltower", f"ct-{t.fingerprint}"]})
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).sent == 1
        assert list(jira.issues) == ["OPS-1"]
        assert [(r["ticket_key"], r["state"]) for r in tickets(engine)] == [("OPS-1", "open")]
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5), environ=ENV).sent == 1
    assert jira.issues["OPS-1"]["status"] == "Done"
    assert ("GET", "/rest/api/3/issue/OPS-1/transitions") not in jira.calls  # an id needs no lookup


def test_5xx_retries_without_a_ticket_4xx_fails_and_the_token_never_shows(engine):
    jira = FakeJira(statuses=[503])
    with LoopbackServer(jira.app) as server:
        jira.url = server.url
        rs = rules_for(receiver(server.url))
        fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).retried == 1
        assert tickets(engine) == [] and jira.issues == {}
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(hours=1), environ=ENV).sent == 1
        assert list(jira.issues) == ["OPS-1"]
        # wrong credentials: 401 is permanent, and the token is scrubbed from what is stored
        fire(engine, rs, at=T0 + timedelta(minutes=90), open_breaches=0)
        bad = {"CT_JIRA_USER": USER, "CT_JIRA_TOKEN": "other-secret-token"}
        report = deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=90), environ=bad)
    assert report.failed == 1
    row = outbox(engine)[-1]
    assert row["status"] == "failed" and row["last_error"].startswith("HTTP 401")
    encoded = base64.b64encode(f"{USER}:other-secret-token".encode()).decode()
    assert "other-secret-token" not in row["last_error"] and encoded not in row["last_error"]
    assert tickets(engine)[0]["state"] == "open"


def test_an_unknown_transition_name_fails_with_the_names_available(engine):
    jira = FakeJira()
    with LoopbackServer(jira.app) as server:
        jira.url = server.url
        rs = rules_for(receiver(server.url, ", close_transition: Closed"))
        fire(engine, rs)
        deliver_pending(engine, rs.receivers, T0, environ=ENV)
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        report = deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5), environ=ENV)
    assert report.failed == 1
    assert report.errors == ["jira: OPS-1: no transition named 'Closed' (available: To Do, In Progress, Done)"]
