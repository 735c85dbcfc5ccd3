"""Delivery of the outbox to real receivers on loopback: webhook, PagerDuty, Slack, SMTP."""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alerts.evaluate import evaluate
from alerts.notify import backoff, deliver_pending
from alerts.rules import parse
from controltower.schema.alerts import alert_notifications
from controltower.schema.metrics import sla_status
from controltower.yamlfile import loads
from tests.conftest import LoopbackServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class Recorder:
    """A tiny HTTP receiver: records every JSON body; answers from a scripted list of statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])

        async def receive(request: Request) -> JSONResponse:
            self.requests.append({"path": request.url.path, "body": json.loads(await request.body()),
                                  "headers": dict(request.headers)})
            status = self.statuses.pop(0) if self.statuses else 200
            return JSONResponse({"status": "ok" if status < 300 else "error"}, status_code=status)

        self.app = Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


def rules_for(yaml_receivers: str, default: str = ""):
    names = default or ", ".join(line.split(":")[0].strip() for line in yaml_receivers.splitlines() if line.strip())
    return parse(loads(f"""
receivers:
{yaml_receivers}
default_receivers: [{names}]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
    severity: page
    annotations:
      summary: "{{channel}}: {{open_breaches}} orders unposted, oldest {{oldest_breach_human}}"
      description: "Not posted to the ERP within {{target_human}}."
    runbook_url: https://wiki.example.com/unposted
""", "test.yaml"))


def fire(engine, ruleset, at=T0, open_breaches=143):
    values = {"sla": "erp_posting", "channel": "amazon", "window": "1h", "kind": "milestone_latency",
              "computed_at": at, "health": "critical", "open_breaches": open_breaches,
              "oldest_breach_ms": 5_400_000, "target_ms": 1_800_000}
    stmt = insert(sla_status).values(**values)
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["sla", "channel", "window"],
            set_={k: stmt.excluded[k] for k in values if k not in ("sla", "channel", "window")}))
    return evaluate(engine, ruleset.rules, at, dashboard_url="http://dash.example:8501")


def outbox(engine):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(alert_notifications).order_by(alert_notifications.c.id))]


def key_structure(value):
    """The shape of a JSON value: dict keys (recursively) and list element shapes, no values."""
    if isinstance(value, dict):
        return {k: key_structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_structure(v) for v in value[:1]]
    return type(value).__name__ if not isinstance(value, bool) else "bool"


def test_webhook_payload_matches_alertmanager_v4(engine):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        ruleset = rules_for(f"  hook: {{type: webhook, url: '{server.url}/alerts'}}\n")
        fire(engine, ruleset)
        report = deliver_pending(engine, ruleset.receivers, T0)
        assert (report.sent, report.retried, report.failed) == (1, 0, 0)
        fire(engine, ruleset, at=T0 + timedelta(minutes=5), open_breaches=0)
        assert deliver_pending(engine, ruleset.receivers, T0 + timedelta(minutes=5)).sent == 1
    firing, resolved = (r["body"] for r in recorder.requests)
    for ours, name in ((firing, "webhook_firing.json"), (resolved, "webhook_resolved.json")):
        theirs = json.loads((FIXTURES / name).read_text())
        assert set(ours) == set(theirs)
        assert set(ours["alerts"][0]) == set(theirs["alerts"][0])
        assert key_structure({k: v for k, v in ours.items() if k not in ("alerts", "groupLabels", "commonLabels", "commonAnnotations")}) == \
            key_structure({k: v for k, v in theirs.items() if k not in ("alerts", "groupLabels", "commonLabels", "commonAnnotations")})
        assert ours["version"] == "4" and ours["truncatedAlerts"] == 0
    assert firing["status"] == "firing" and firing["receiver"] == "hook"
    alert = firing["alerts"][0]
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["labels"]["alertname"] == "UnpostedOrders" and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["summary"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
    assert alert["annotations"]["runbook_url"] == "https://wiki.example.com/unposted"
    assert alert["generatorURL"] == "http://dash.example:8501/breaches?sla=erp_posting&channel=amazon"
    # grouped by alertname, as Alertmanager's default route groups
    assert firing["groupKey"] == '{}:{alertname="UnpostedOrders"}'
    assert firing["groupLabels"] == {"alertname": "UnpostedOrders"}
    assert firing["commonLabels"] == alert["labels"]
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == "2026-11-22T09:05:00.000Z"
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert [r["status"] for r in outbox(engine)] == ["sent", "sent"]


def test_retries_with_exponential_backoff_until_delivered(engine):
    recorder = Recorder(statuses=[500, 500, 200])
    with LoopbackServer(recorder.app) as server:
        ruleset = rules_for(f"  hook: {{type: webhook, url: '{server.url}/alerts'}}\n")
        fire(engine, ruleset)
        first = deliver_pending(engine, ruleset.receivers, T0)
        assert (first.sent, first.retried) == (0, 1)
        [row] = outbox(engine)
        assert (row["status"], row["attempts"], row["last_error"][:8]) == ("pending", 1, "HTTP 500")
        assert row["next_attempt_at"] == T0 + timedelta(seconds=backoff(1))

        # not due yet: nothing is sent
        assert deliver_pending(engine, ruleset.receivers, T0 + timedelta(seconds=10)).retried == 0
        assert len(recorder.requests) == 1

        second_at = row["next_attempt_at"]
        assert deliver_pending(engine, ruleset.receivers, second_at).retried == 1
        [row] = outbox(engine)
        assert row["attempts"] == 2
        assert row["next_attempt_at"] - second_at == timedelta(seconds=backoff(2)) == 2 * timedelta(seconds=backoff(1))

        third = deliver_pending(engine, ruleset.receivers, row["next_attempt_at"])
        assert third.sent == 1
    [row] = outbox(engine)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    assert len(recorder.requests) == 3
    assert recorder.requests[0]["body"] == recorder.requests[2]["body"]


def test_gives_up_after_max_attempts_and_on_permanent_errors(engine):
    recorder = Recorder(statuses=[400])
    with LoopbackServer(recorder.app) as server:
        ruleset = rules_for(
            f"  bad: {{type: webhook, url: '{server.url}/b'}}\n"
            "  closed: {type: webhook, url: 'http://127.0.0.1:9/closed'}\n"
        )
        fire(engine, ruleset)
        at = T0
        for _ in range(3):
            deliver_pending(engine, ruleset.receivers, at, max_attempts=3)
            at += timedelta(hours=2)
    rows = {r["receiver"]: r for r in outbox(engine)}
    # 400: the receiver rejects the payload, retrying cannot help
    assert (rows["bad"]["status"], rows["bad"]["attempts"], rows["bad"]["last_error"][:8]) == ("failed", 1, "HTTP 400")
    # connection refused on port 9: retried, then failed after max_attempts
    assert (rows["closed"]["status"], rows["closed"]["attempts"]) == ("failed", 3)
    assert "Connect" in rows["closed"]["last_error"]
    assert len(recorder.requests) == 1


def test_pagerduty_events_v2(engine):
    recorder = Recorder(statuses=[202, 202])
    secret = "R0UTINGKEYsecret0123456789abcdef"
    with LoopbackServer(recorder.app) as server:
        ruleset = rules_for(
            f"  pd: {{type: pagerduty, routing_key_env: TEST_PD_KEY, url: '{server.url}/v2/enqueue'}}\n"
        )
        fire(engine, ruleset)
        fire_row = outbox(engine)
        assert len(fire_row) == 1
        assert deliver_pending(engine, ruleset.receivers, T0, environ={"TEST_PD_KEY": secret}).sent == 1
        # the alert resolves; the secret is missing now: an error naming the variable, never a value
        fire(engine, ruleset, at=T0 + timedelta(minutes=1), open_breaches=0)
        report = deliver_pending(engine, ruleset.receivers, T0 + timedelta(minutes=2), environ={})
        assert report.retried == 1 and "TEST_PD_KEY is not set" in report.errors[0]
        assert deliver_pending(engine, ruleset.receivers, T0 + timedelta(hours=1), environ={"TEST_PD_KEY": secret}).sent == 1
    trigger = recorder.requests[0]["body"]
    assert trigger["routing_key"] == secret
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == fire_row[0]["fingerprint"]
    assert set(trigger["payload"]) >= {"summary", "source", "severity", "custom_details"}
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == "amazon: 143 orders unposted, oldest 1 h 30 min"
    assert trigger["links"][0] == {"href": "http://dash.example:8501/breaches?sla=erp_posting&channel=amazon",
                                   "text": "Offending transactions"}
    assert {"href": "https://wiki.example.com/unposted", "text": "Runbook"} in trigger["links"]
    assert recorder.requests[1]["body"] == {"routing_key": secret, "event_action": "resolve",
                                            "dedup_key": fire_row[0]["fingerprint"]}
    assert all(secret not in (r["last_error"] or "") for r in outbox(engine))


def test_pagerduty_resolve_and_slack(engine):
    from alerts.notify import pagerduty_payload, slack_payload

    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        ruleset = rules_for("  slack: {type: slack, url_env: TEST_SLACK_URL}\n")
        fire(engine, ruleset)
        env = {"TEST_SLACK_URL": f"{server.url}/services/T000/B000/XXXX"}
        assert deliver_pending(engine, ruleset.receivers, T0, environ=env).sent == 1
    body = recorder.requests[0]["body"]
    assert recorder.requests[0]["path"] == "/services/T000/B000/XXXX"
    assert "UnpostedOrders" in body["text"] and "143 orders unposted" in body["text"]
    assert body["blocks"][0]["type"] == "section"
    assert "Offending transactions" in json.dumps(body["blocks"])
    resolved = pagerduty_payload("k", {**outbox(engine)[0]["payload"], "status": "resolved"})
    assert resolved == {"routing_key": "k", "event_action": "resolve", "dedup_key": outbox(engine)[0]["fingerprint"]}
    assert slack_payload({**outbox(engine)[0]["payload"], "status": "resolved", "kind": "resolved"})["text"].startswith(":large_green_circle: [RESOLVED]")


class _SMTPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        self.wfile.write(b"220 localhost test SMTP\r\n")
        message = {"rcpt": []}
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode().strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 localhost\r\n")
            elif verb.startswith("MAIL FROM"):
                message["from"] = line.decode().strip()[10:]
                self.wfile.write(b"250 OK\r\n")
            elif verb.startswith("RCPT TO"):
                message["rcpt"].append(line.decode().strip()[8:])
                self.wfile.write(b"250 OK\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                message["data"] = b"".join(data)
                server.messages.append(dict(message))  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 OK\r\n")


def test_email_through_a_real_smtp_server(engine):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        ruleset = rules_for(
            f"  mail: {{type: email, smtp_host: 127.0.0.1, smtp_port: {port}, "
            "from: tower@example.com, to: [ops@example.com, oncall@example.com]}\n"
        )
        fire(engine, ruleset)
        assert deliver_pending(engine, ruleset.receivers, T0).sent == 1
    finally:
        server.shutdown()
        server.server_close()
    [msg] = server.messages  # type: ignore[attr-defined]
    assert msg["rcpt"] == ["<ops@example.com>", "<oncall@example.com>"]
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)  # unfolds long headers
    # the stdlib folds this long subject right after "Subject:"; readers drop the fold's space
    assert parsed["Subject"].strip() == "[FIRING] UnpostedOrders: amazon: 143 orders unposted, oldest 1 h 30 min"
    body = parsed.get_payload(decode=True).decode()
    assert "http://dash.example:8501/breaches?sla=erp_posting&channel=amazon" in body
    assert "Not posted to the ERP within 30 min." in body
    assert "severity:  page" in body
