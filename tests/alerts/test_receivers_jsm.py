"""Jira Service Management alerts against a loopback copy of the Operations integration API that
checks the documented request (GenieKey header, field limits, close by alias) and answers 202."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alerts.jsm import create_body
from alerts.notify import deliver_pending
from tests.alerts.test_notify import T0, fire, outbox, rules_for
from tests.conftest import LoopbackServer

KEY = "genie-0123-secret"
LIMITS = {"message": 130, "alias": 512, "description": 15000, "entity": 512, "source": 100}


def check_create(body: dict) -> list[str]:
    problems = [f"{k} longer than {n}" for k, n in LIMITS.items() if len(body.get(k, "")) > n]
    if not body.get("message"):
        problems.append("message is required")
    if body.get("priority") not in ("P1", "P2", "P3", "P4", "P5"):
        problems.append("priority")
    tags = body.get("tags", [])
    if len(tags) > 20 or any(not isinstance(t, str) or len(t) > 50 for t in tags):
        problems.append("tags")
    details = body.get("details", {})
    if not all(isinstance(v, str) for v in details.values()) or sum(len(k) + len(v) for k, v in details.items()) > 8000:
        problems.append("details must be a flat string map of at most 8000 characters")
    return problems


class FakeJsm:
    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.alerts: dict[str, dict] = {}  # alias -> {"body", "count", "open", "close"}
        self.requests: list[tuple[str, str]] = []
        self.statuses = list(statuses or [])
        self.delay = delay

        def accepted() -> JSONResponse:
            return JSONResponse({"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())},
                                status_code=202)

        def gate(request: Request) -> JSONResponse | None:
            self.requests.append((request.method, request.url.path + ("?" + request.url.query if request.url.query else "")))
            if self.delay:
                time.sleep(self.delay)
            if self.statuses:
                status = self.statuses.pop(0)
                return JSONResponse({"message": f"rejected {request.headers.get('authorization')}"}, status_code=status)
            if request.headers.get("authorization") != f"GenieKey {KEY}":
                return JSONResponse({"message": "Key format is not valid!"}, status_code=422)
            return None

        async def create(request: Request) -> JSONResponse:
            if (failed := gate(request)) is not None:
                return failed
            body = json.loads(await request.body())
            if problems := check_create(body):
                return JSONResponse({"message": "; ".join(problems)}, status_code=422)
            alias = body.get("alias") or str(uuid.uuid4())
            known = self.alerts.get(alias)
            if known and known["open"]:
                known["count"] += 1  # JSM deduplicates by alias
            else:
                self.alerts[alias] = {"body": body, "count": 1, "open": True, "close": None}
            return accepted()

        async def close(request: Request) -> JSONResponse:
            if (failed := gate(request)) is not None:
                return failed
            if request.query_params.get("identifierType") != "alias":
                return JSONResponse({"message": "identifierType"}, status_code=422)
            alias = request.path_params["alias"]
            if alias in self.alerts:
                self.alerts[alias].update(open=False, close=json.loads(await request.body()))
            return accepted()

        self.app = Starlette(routes=[
            Route("/jsm/ops/integration/v2/alerts", create, methods=["POST"]),
            Route("/jsm/ops/integration/v2/alerts/{alias}/close", close, methods=["POST"]),
        ])


def receiver(url: str, extra: str = "") -> str:
    return f"  ops: {{type: jsm, api_key_env: CT_JSM_KEY, url: '{url}/jsm/ops/integration'{extra}}}\n"


def test_firing_repeat_and_close_by_alias(engine, monkeypatch):
    monkeypatch.setenv("CT_JSM_KEY", KEY)
    jsm = FakeJsm()
    with LoopbackServer(jsm.app) as server:
        rs = rules_for(receiver(server.url))
        [t] = fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0).sent == 1
        # a re-send of the same notification (a leader crash before mark-as-sent) pages once
        import httpx

        from alerts.notify import send
        with httpx.Client() as client:
            send(rs.receivers["ops"], outbox(engine)[0]["payload"], client=client, environ={"CT_JSM_KEY": KEY})
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5)).sent == 1
    [(alias, alert)] = jsm.alerts.items()
    assert alias == t.fingerprint and alert["count"] == 2 and alert["open"] is False
    body = alert["body"]
    assert body["message"] == "[FIRING] UnpostedOrders: amazon: 143 orders unposted, oldest 1 h 30 min"
    assert body["priority"] == "P1" and body["source"] == "controltower" and body["entity"] == "erp_posting/amazon"
    assert body["tags"] == ["controltower", "page", "erp_posting", "amazon"]
    assert body["details"]["channel"] == "amazon" and body["details"]["alerts"] == "1"
    assert body["details"]["runbook_url"] == "https://wiki.example.com/unposted"
    assert "Offending transactions: http://dash.example:8501/breaches?sla=erp_posting&channel=amazon" in body["description"]
    assert alert["close"]["source"] == "controltower"
    assert alert["close"]["note"].startswith("Resolved at 2026-11-22T09:05:00.000Z: ")
    assert jsm.requests[-1] == ("POST", f"/jsm/ops/integration/v2/alerts/{t.fingerprint}/close?identifierType=alias")


def test_long_text_is_cut_to_the_documented_limits():
    alert = {"severity": "info", "labels": {"sla": "s" * 80, "channel": "c" * 600},
             "annotations": {f"a{i}": "x" * 900 for i in range(20)}, "fingerprint": "f" * 16}
    body = create_body("k" * 600, alert, message="m" * 500, summary="d" * 20000, count=3)
    assert check_create(body) == []
    assert len(body["message"]) == 130 and body["message"].endswith("…")
    assert len(body["alias"]) == 512 and body["priority"] == "P5"
    assert len(body["description"]) == 15000 and len(body["entity"]) == 512


def test_4xx_fails_5xx_and_timeouts_retry_and_the_key_never_shows(engine, monkeypatch):
    monkeypatch.setenv("CT_JSM_KEY", KEY)
    jsm = FakeJsm(statuses=[503, 401])
    with LoopbackServer(jsm.app) as server:
        rs = rules_for(receiver(server.url))
        fire(engine, rs)
        first = deliver_pending(engine, rs.receivers, T0)
        second = deliver_pending(engine, rs.receivers, T0 + timedelta(hours=1))
    assert (first.retried, second.failed) == (1, 1)
    [row] = outbox(engine)
    assert row["status"] == "failed" and row["last_error"].startswith("HTTP 401")
    assert KEY not in row["last_error"] and "GenieKey ***" in row["last_error"]
    assert all(KEY not in e for e in first.errors + second.errors)


def test_a_timeout_is_retried(engine, monkeypatch):
    monkeypatch.setenv("CT_JSM_KEY", KEY)
    jsm = FakeJsm(delay=1.0)
    with LoopbackServer(jsm.app) as server:
        rs = rules_for(receiver(server.url, ", timeout: 0.2s"))
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0)
    assert (report.sent, report.retried) == (0, 1) and "Timeout" in report.errors[0]
