"""The new receivers attacked: a misbehaving Jira, JSM or Teams (malformed, slow, huge or
throttling answers), a ticket closed or deleted by a human, hostile YAML. Each test pins one
defect found in review: delivery must not stop, hang or lose tickets, and bad YAML gets one
`file:line` error."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerts import ticketing
from alerts.notify import deliver_pending
from alerts.rules import parse
from alerts.transport import DeliveryError, call
from controltower.errors import ConfigError
from controltower.yamlfile import loads
from tests.alerts.test_notify import T0, Recorder, fire, outbox, rules_for
from tests.alerts.test_receivers_ticket import ENV, FakeJira, receiver, tickets
from tests.conftest import LoopbackServer

HOOK = "  z_hook: {{type: webhook, url: '{url}/hook'}}\n"


def jira_receiver(url: str, extra: str = "") -> str:
    return receiver(url, extra).replace("  jira:", "  a_jira:")


# -- a misbehaving Jira must not stop delivery to everyone else ---------------------------------

class OddJira(FakeJira):
    """FakeJira whose search and create answers can be replaced by scripted JSON."""

    def __init__(self, search: object = None, create: object = None) -> None:
        super().__init__()
        routes = {r.path: r for r in self.app.routes}

        async def odd_search(request: Request) -> Response:
            return JSONResponse(search)

        async def odd_create(request: Request) -> Response:
            return JSONResponse(create, status_code=201)

        if search is not None:
            routes["/rest/api/3/search/jql"] = Route("/rest/api/3/search/jql", odd_search, methods=["POST"])
        if create is not None:
            routes["/rest/api/3/issue"] = Route("/rest/api/3/issue", odd_create, methods=["POST"])
        self.app = Starlette(routes=list(routes.values()))


@pytest.mark.parametrize("search", [
    {"issues": [{"id": "10001"}]},  # no key
    {"issues": "OPS-1"},  # not a list
    {"issues": [["OPS-1"]]},
])
def test_a_malformed_search_answer_fails_that_row_and_the_next_receiver_still_gets_its_page(engine, search):
    jira, hook = OddJira(search=search), Recorder()
    with LoopbackServer(jira.app) as js, LoopbackServer(hook.app) as hs:
        rs = rules_for(jira_receiver(js.url) + HOOK.format(url=hs.url))
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0, environ=ENV)
    assert (report.sent, report.retried) == (1, 1)
    assert [r["path"] for r in hook.requests] == ["/hook"]
    [row] = [r for r in outbox(engine) if r["receiver"] == "a_jira"]
    assert row["status"] == "pending" and "search" in row["last_error"] and jira.issues == {}


@pytest.mark.parametrize("key", ["../../../rest/api/3/myself", "OPS-1?x=1", {"k": 1}, "OPS-1/comment", "x" * 300])
def test_a_ticket_key_that_is_not_a_jira_key_is_refused_and_never_used_in_a_path(engine, key):
    jira = OddJira(create={"id": "10001", "key": key})
    with LoopbackServer(jira.app) as server:
        rs = rules_for(jira_receiver(server.url))
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0, environ=ENV)
    assert report.retried == 1 and tickets(engine) == []
    assert "not a Jira issue key" in report.errors[0]


def test_an_unusable_url_from_the_environment_is_a_delivery_error_not_a_crash(engine):
    hook = Recorder()
    with LoopbackServer(hook.app) as hs:
        rs = rules_for("  a_teams: {type: teams, url_env: CT_TEAMS_URL}\n" + HOOK.format(url=hs.url))
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0, environ={"CT_TEAMS_URL": "https://[::1/x?sig=abc"})
    assert (report.sent, report.failed) == (1, 1) and len(hook.requests) == 1
    assert "sig=abc" not in report.errors[0]


def test_a_key_that_cannot_go_in_a_header_is_a_permanent_error(engine):
    rs = rules_for("  a_jsm: {type: jsm, api_key_env: CT_JSM_KEY, url: 'http://127.0.0.1:9'}\n")
    fire(engine, rs)
    report = deliver_pending(engine, rs.receivers, T0, environ={"CT_JSM_KEY": "clé-secrète"})
    assert report.failed == 1 and "clé" not in report.errors[0]


# -- slow, huge and throttling answers ----------------------------------------------------------

class RawServer:
    """A loopback TCP server that answers every connection with `script(conn)`."""

    def __init__(self, script) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.script = script
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.script(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _drip(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b" ")
        time.sleep(0.1)


def _huge(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Type: text/html\r\nContent-Length: 31457280\r\n\r\n")
    chunk = b"<p>" + b"x" * 65530 + b"</p>"
    for _ in range(31457280 // len(chunk)):
        if stop.is_set():
            return
        conn.sendall(chunk)


def test_an_answer_dripping_one_byte_at_a_time_stops_at_the_timeout():
    server = RawServer(_drip)
    try:
        started = time.monotonic()
        with httpx.Client() as client, pytest.raises(DeliveryError) as caught:
            call(client, "POST", server.url + "/hook", body={}, timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 3.5, elapsed
    assert not caught.value.permanent and "1s" in str(caught.value)


def test_a_30_mb_error_page_is_not_read_whole_and_the_message_stays_short():
    server = RawServer(_huge)
    try:
        started = time.monotonic()
        with httpx.Client() as client, pytest.raises(DeliveryError) as caught:
            call(client, "POST", server.url + "/hook", body={}, timeout=5.0)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert str(caught.value).startswith("HTTP 500: <p>xxx") and len(str(caught.value)) < 300
    assert elapsed < 2.0, elapsed


def test_jsm_429_waits_as_long_as_retry_after_says_and_422_fails_for_good(engine):
    answers = [(429, {"Retry-After": "900"}), (422, {})]
    seen = []

    async def alerts_api(request: Request) -> Response:
        seen.append(request.url.path)
        status, headers = answers.pop(0)
        return JSONResponse({"message": "Request throttled" if status == 429 else "Alias is invalid"},
                            status_code=status, headers=headers)

    app = Starlette(routes=[Route("/v2/alerts", alerts_api, methods=["POST"])])
    with LoopbackServer(app) as server:
        rs = rules_for(f"  jsm: {{type: jsm, api_key_env: CT_JSM_KEY, url: '{server.url}'}}\n")
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0, environ={"CT_JSM_KEY": "genie-secret"})
        assert report.retried == 1
        [row] = outbox(engine)
        assert row["next_attempt_at"] == T0 + timedelta(seconds=900)  # not the 30 s backoff
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(seconds=899), environ={"CT_JSM_KEY": "x"}).sent == 0
        report = deliver_pending(engine, rs.receivers, T0 + timedelta(seconds=900),
                                 environ={"CT_JSM_KEY": "genie-secret"})
    assert report.failed == 1 and "Alias is invalid" in report.errors[0] and len(seen) == 2


def test_teams_answering_200_with_an_error_text_is_not_a_delivery():
    async def legacy(request: Request) -> Response:
        return Response("Webhook message delivery failed with error: Microsoft Teams endpoint returned "
                        "HTTP error 429 with ContextId tcid=0", status_code=200)

    app = Starlette(routes=[Route("/hook", legacy, methods=["POST"])])
    from alerts.notify import send
    from alerts.probe import sample
    rs = rules_for("  teams: {type: teams, url_env: CT_TEAMS_URL}\n")
    with LoopbackServer(app) as server, httpx.Client() as client, pytest.raises(DeliveryError) as caught:
        send(rs.receivers["teams"], sample({}, T0, "http://dash"), client=client,
             environ={"CT_TEAMS_URL": server.url + "/hook"})
    assert "HTTP error 429" in str(caught.value) and not caught.value.permanent


# -- tickets a human closed or deleted ----------------------------------------------------------

class HumanJira(FakeJira):
    """Jira as people use it: a Done issue offers only "Reopen"; a deleted issue answers 404."""

    def __init__(self) -> None:
        super().__init__()
        inner = self.app

        async def app(scope, receive, send):
            path = scope.get("path", "")
            if scope["type"] == "http" and "/rest/api/3/issue/" in path:
                key = path.split("/")[5]
                if key not in self.issues:
                    response = JSONResponse({"errorMessages": ["Issue does not exist or you do not have "
                                                               "permission to see it."]}, status_code=404)
                    return await response(scope, receive, send)
                if self.issues[key]["status"] == "Done" and path.endswith("/transitions"):
                    response = JSONResponse({"transitions": [{"id": "41", "name": "Reopen"}]})
                    if scope["method"] == "POST":
                        response = JSONResponse({"errorMessages": ["Transition id is not valid"]}, status_code=400)
                    return await response(scope, receive, send)
            return await inner(scope, receive, send)

        self.app = app


@pytest.mark.parametrize("human", ["closed", "deleted"])
def test_a_ticket_a_human_closed_or_deleted_does_not_swallow_the_next_episode(engine, human):
    jira = HumanJira()
    with LoopbackServer(jira.app) as server:
        rs = rules_for(receiver(server.url))
        fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).sent == 1
        if human == "closed":
            jira.issues["OPS-1"]["status"] = "Done"
        else:
            del jira.issues["OPS-1"]
        fire(engine, rs, at=T0 + timedelta(minutes=5), open_breaches=0)
        report = deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=5), environ=ENV)
        assert report.sent == 1, report.errors
        assert [r["state"] for r in tickets(engine)] == ["closed"]
        fire(engine, rs, at=T0 + timedelta(minutes=10))
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=10), environ=ENV).sent == 1
    assert "OPS-2" in jira.issues and jira.issues["OPS-2"]["status"] == "To Do"
    assert [(r["ticket_key"], r["state"]) for r in tickets(engine)] == [("OPS-2", "open")]


def test_a_stale_open_mapping_from_an_earlier_episode_is_checked_before_it_is_trusted(engine):
    """The resolve of episode 1 never reached Jira (it failed for good); episode 2 must not be
    answered "already open" from the mapping when Jira has no open ticket any more."""
    jira = FakeJira()
    with LoopbackServer(jira.app) as server:
        rs = rules_for(receiver(server.url))
        fire(engine, rs)
        assert deliver_pending(engine, rs.receivers, T0, environ=ENV).sent == 1
        jira.issues["OPS-1"]["status"] = "Done"  # closed by hand; our mapping still says open
        with engine.begin() as conn:  # the resolve was lost (e.g. dropped during a mute)
            conn.execute(sa.text("UPDATE alert_state SET state = 'resolved', resolved_at = :t, "
                                 "firing_since = NULL, active_since = NULL"), {"t": T0 + timedelta(minutes=5)})
        fire(engine, rs, at=T0 + timedelta(minutes=10))
        assert deliver_pending(engine, rs.receivers, T0 + timedelta(minutes=10), environ=ENV).sent == 1
    assert list(jira.issues) == ["OPS-1", "OPS-2"]
    assert [(r["ticket_key"], r["state"]) for r in tickets(engine)] == [("OPS-2", "open")]


# -- injection ----------------------------------------------------------------------------------

def test_labels_of_different_dedup_keys_never_collide_and_stay_jql_safe():
    keys = ['incident:erp/posting', 'incident:erp_posting', 'x" OR project = SECRET OR labels = "y',
            "a b", "a\\b", "ä" * 400]
    labels = [ticketing.label(k) for k in keys]
    assert len(set(labels)) == len(keys)
    for lab in labels:
        assert len(lab) <= 255 and all(c.isascii() and (c.isalnum() or c in "_.:-") for c in lab)
    fp = "3f2a9c0d11aa22bb"
    assert ticketing.label(fp) == "ct-" + fp  # a fingerprint's label is unchanged (tickets opened before)


def test_control_characters_never_reach_the_issue():
    from alerts.rules import Receiver
    rcv = Receiver(name="j", type="ticket", project="OPS")
    alert = {"labels": {"sla": "erp\x00", "channel": "amazon"}, "annotations": {"description": "a\x1b[31mred\x07"},
             "severity": "page", "startsAt": "t"}
    body = ticketing.issue_body(rcv, "k", alert, "[FIRING] R", "sum\x00mary\r\nline2\u2028x")
    text = json.dumps(body, ensure_ascii=False)
    for bad in ("\\u0000", "\\u001b", "\\u0007", "\u2028"):
        assert bad not in text
    assert body["fields"]["summary"] == "[FIRING] R: summary line2 x"


# -- hostile YAML -------------------------------------------------------------------------------

def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(loads(text, "rules.yaml"))
    return str(caught.value)


@pytest.mark.parametrize("period, where", [
    ('times: [{start_time: "²:00", end_time: "10:00"}]', "start_time"),
    ('days_of_month: ["' + "9" * 5000 + '"]', "days_of_month"),
    ('years: ["2026:' + "9" * 5000 + '"]', "years"),
    ('days_of_month: ["¹"]', "days_of_month"),
    ('months: ["٣"]', "months"),
])
def test_odd_digits_in_time_intervals_are_one_file_line_error(period, where):
    message = _error("receivers:\n  l: {type: log}\nrules: []\ntime_intervals:\n  - name: a\n"
                     "    time_intervals:\n      - " + period + "\n")
    assert message.startswith("rules.yaml:7: ") and where in message and len(message) < 300


@pytest.mark.parametrize("extra, what", [
    ("url: 'https://[::1/x'", "url"),
    ("url: 'https://exa mple.com/x'", "url"),
    ("url: 'https://'", "url"),
    ("url_env: T, timeout: 0s", "timeout"),
    ("url_env: T, timeout: 3650d", "timeout"),
])
def test_receiver_urls_and_timeouts_are_checked_when_loaded(extra, what):
    message = _error("receivers:\n  t: {type: teams, " + extra + "}\nrules: []\n")
    assert message.startswith("rules.yaml:2: ") and what in message


def test_a_redirect_to_another_host_is_not_followed_and_the_credentials_stay_home(engine):
    elsewhere = Recorder()

    async def moved(request: Request) -> Response:
        return Response(status_code=307, headers={"Location": f"{other.url}/steal"})

    app = Starlette(routes=[Route("/{path:path}", moved, methods=["GET", "POST"])])
    with LoopbackServer(elsewhere.app) as other, LoopbackServer(app) as server:
        rs = rules_for(receiver(server.url))
        fire(engine, rs)
        report = deliver_pending(engine, rs.receivers, T0, environ=ENV)
    assert elsewhere.requests == []
    assert report.failed == 1 and "redirect" in report.errors[0] and "not followed" in report.errors[0]


def test_a_teams_card_for_a_huge_group_stays_under_the_28_kb_message_limit():
    from alerts.teams import card
    alert = {"status": "firing", "severity": "page", "labels": {"sla": "erp_posting", "channel": "amazon"},
             "annotations": {"description": "d" * 30000}, "dashboard_url": "http://dash/x"}
    summary = "\n".join(f"firing: channel {i}: 143 orders unposted, oldest 1 h 30 min" for i in range(600))
    body = card("[FIRING:600] UnpostedOrders", summary, alert, 600)
    size = len(json.dumps(body).encode())
    assert size < 28_000, size
    text = body["attachments"][0]["content"]["body"][1]["text"]
    assert text.startswith("firing: channel 0: 143") and text.endswith("more)")
