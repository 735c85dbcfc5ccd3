"""`controltower alerts test RECEIVER`: routing shown, the sample sent straight to the receiver,
one readable line and exit 1 on failure."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.alerts.test_notify import Recorder
from tests.alerts.test_receivers_ticket import ENV, FakeJira
from tests.conftest import LoopbackServer
from wiring.cli import app

RULES = """
time_intervals:
  - name: always
    time_intervals:
      - years: ["2000:2999"]
receivers:
  hook: {{type: webhook, url: "{url}/hook"}}
  erp: {{type: webhook, url: "{url}/erp"}}
  down: {{type: webhook, url: "http://127.0.0.1:9/x"}}
  jira: {{type: ticket, url: "{url}", project: OPS, user_env: CT_JIRA_USER, token_env: CT_JIRA_TOKEN}}
default_receivers: [hook]
routes:
  - match: {{channel: walmart}}
    receivers: [erp]
    mute_time_intervals: [always]
rules: []
"""


def invoke(tmp_path, database_url, url, *args):
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES.format(url=url))
    base = ["--database-url", database_url, "--data-dir", str(tmp_path)]
    return CliRunner().invoke(app, [*base, "alerts", "test", *args, "--file", str(rules)])


def test_sends_the_sample_and_shows_its_route(engine, tmp_path, database_url):
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        result = invoke(tmp_path, database_url, server.url, "hook", "--resolve")
        routed = invoke(tmp_path, database_url, server.url, "erp", "--label", "channel=walmart")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "labels: alertname=ControlTowerTest, sla=erp_posting, channel=amazon, severity=page",
        "route: none matches; a rule without receivers sends to default_receivers: hook",
        "firing test notification to hook (webhook): sent",
        "resolved test notification to hook (webhook): sent",
    ]
    firing, resolved = (r["body"] for r in recorder.requests[:2])
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    assert firing["alerts"][0]["labels"] == {"alertname": "ControlTowerTest", "sla": "erp_posting",
                                             "channel": "amazon", "severity": "page"}
    assert routed.exit_code == 0, routed.output
    assert routed.output.splitlines()[1:3] == [
        "route: #1 (match channel=walmart) -> erp", "muted now: mute_time_intervals always"]
    assert recorder.requests[2]["path"] == "/erp"  # sent anyway: the test goes straight to the receiver


def test_failure_is_one_line_and_exit_1(engine, tmp_path, database_url):
    result = invoke(tmp_path, database_url, "http://127.0.0.1:9", "down")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("error: firing test notification to down (webhook) failed: Connect")
    unknown = invoke(tmp_path, database_url, "http://127.0.0.1:9", "nobody")
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "error: unknown receiver 'nobody' (defined: down, erp, hook, jira)"


def test_a_ticket_receiver_opens_and_closes_a_ticket(engine, tmp_path, database_url, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    jira = FakeJira()
    with LoopbackServer(jira.app) as server:
        jira.url = server.url
        result = invoke(tmp_path, database_url, server.url, "jira", "--resolve")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "firing test notification to jira (ticket): opened OPS-1",
        "resolved test notification to jira (ticket): closed OPS-1",
    ]
    assert jira.issues["OPS-1"]["status"] == "Done"
