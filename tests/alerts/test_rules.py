"""Alert rules files: the shipped defaults load; every mistake names its file and line."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from alerts.rules import DEFAULT_FILE, load_rules, render, template_fields
from controltower.errors import ConfigError

GOOD = """\
receivers:
  hook:
    type: webhook
    url: http://127.0.0.1:9/hook
  pd:
    type: pagerduty
    routing_key_env: PD_KEY
  mail:
    type: email
    smtp_host: 127.0.0.1
    smtp_port: 2525
    from: tower@example.com
    to: [ops@example.com]
default_receivers: [hook]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    channel: amazon
    field: open_breaches
    op: ">"
    value: 0
    for: 10m
    severity: page
    labels: {team: erp}
    annotations:
      summary: "{channel}: {open_breaches} orders unposted, oldest {oldest_breach_human}"
    runbook_url: https://wiki.example.com/unposted
    repeat_interval: 4h
    receivers: [pd, mail]
  - name: Stale
    sla: "*"
    field: health
    op: ">="
    value: warn
"""


def write(tmp_path, text):
    path = tmp_path / "alerts.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_loads(tmp_path):
    ruleset = load_rules(write(tmp_path, GOOD))
    assert [r.name for r in ruleset.rules] == ["UnpostedOrders", "Stale"]
    first, second = ruleset.rules
    assert first.for_seconds == 600 and first.repeat_interval_seconds == 4 * 3600
    assert first.receivers == ("pd", "mail") and second.receivers == ("hook",)
    assert first.annotations["runbook_url"] == "https://wiki.example.com/unposted"
    assert second.window == "1h" and second.for_seconds == 0
    assert set(ruleset.receivers) == {"hook", "pd", "mail"}
    assert ruleset.receivers["mail"].to == ("ops@example.com",)
    assert second.holds({"health": "critical"}) and not second.holds({"health": "ok"})
    assert first.holds({"open_breaches": 3}) and not first.holds({"open_breaches": None})


def test_shipped_defaults_load():
    ruleset = load_rules(None)
    names = {r.name for r in ruleset.rules}
    assert {"ErrorBudgetFastBurn", "ErrorBudgetSlowBurn", "UnpostedOrders", "ChannelSilent", "InventoryStale"} <= names
    fast = next(r for r in ruleset.rules if r.name == "ErrorBudgetFastBurn")
    assert (fast.field, fast.op, fast.value, fast.for_seconds, fast.severity) == ("burn_rate_short", ">", 14.4, 120, "page")
    assert load_rules(DEFAULT_FILE).rules == ruleset.rules


def test_summary_template_renders_row_fields():
    rule = load_rules(None).rules[2]
    values = template_fields({"sla": "erp_posting", "channel": "amazon", "open_breaches": 143,
                              "oldest_breach_ms": 5_400_000}, rule)
    assert render(rule.annotations["summary"], values) == "amazon: 143 orders unposted, oldest 1 h 30 min"
    # a NULL value never breaks the notification
    assert render("{burn_rate_short:.1f}x", template_fields({}, rule)) == "n/ax"


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in line]
    return lines[occurrence - 1]


@pytest.mark.parametrize(
    ("old", "new", "needle", "occurrence", "message"),
    [
        ("    severity: page\n", "    severity: page\n    colour: red\n", "colour: red", 1, "unknown field 'colour'"),
        ('    op: ">"\n', '    op: "=>"\n', 'op: "=>"', 1, "op '=>' is not one of"),
        ("    for: 10m\n", "    for: -5m\n", "for: -5m", 1, "is not a duration"),
        ("  - name: Stale\n", "  - name: UnpostedOrders\n", "name: UnpostedOrders", 2, "duplicate rule name 'UnpostedOrders'"),
        ("    receivers: [pd, mail]\n", "    receivers:\n      - pd\n      - pager\n", "- pager", 1, "unknown receiver 'pager'"),
        ("    field: open_breaches\n", "    field: open_breach\n", "field: open_breach", 1, "field 'open_breach' is not one of"),
        ("    value: warn\n", "    value: purple\n", "value: purple", 1, "health is one of"),
        ("    severity: page\n", "    severity: urgent\n", "severity: urgent", 1, "severity 'urgent'"),
        ("    routing_key_env: PD_KEY\n", "    routing_key: abc123\n", "routing_key: abc123", 1, "secrets are never written here"),
        ("      summary: \"{channel}", "      summary: \"{chanel}", "{chanel}", 1, "unknown field {chanel}"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, old, new, needle, occurrence, message):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    line = _line_of(text, needle, occurrence)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert message in str(info.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts.yaml:\d+: not valid YAML"):
        load_rules(write(tmp_path, "rules:\n  - name: [\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_rules(tmp_path / "missing.yaml")


def test_check_command(tmp_path):
    from wiring.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["alerts", "check", str(write(tmp_path, GOOD))])
    assert ok.exit_code == 0, ok.output
    assert "2 rules" in ok.output
    bad = write(tmp_path, GOOD.replace('op: ">"', 'op: "=>"'))
    failed = runner.invoke(app, ["alerts", "check", str(bad)])
    assert failed.exit_code == 1
    assert isinstance(failed.exception, ConfigError)  # cli.main prints it as one line
    line = _line_of(GOOD, 'op: ">"')
    assert str(failed.exception).startswith(f"{bad}:{line}:")


def test_check_command_exit_code_from_the_real_console_script(tmp_path):
    import subprocess
    import sys

    bad = write(tmp_path, GOOD.replace("    for: 10m\n", "    for: -5m\n"))
    done = subprocess.run([sys.executable, "-m", "wiring", "alerts", "check", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:{_line_of(GOOD, 'for: 10m')}: for:")
    ok = subprocess.run([sys.executable, "-m", "wiring", "alerts", "check", str(DEFAULT_FILE)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "12 rules" in ok.stdout


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    keep_firing_for: soon\n", "keep_firing_for: soon", "is not a duration"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    no_data: ignore\n", "no_data: ignore", "no_data 'ignore' is not one of ok, breach, keep, alert"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    impact: yes please\n", "impact: yes please", "impact: expected true, false or {milestone, amounts}"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    max_notifications_per_hour: 0\n", "max_notifications_per_hour: 0", "at least 1"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    digest_interval: 0s\n", "digest_interval: 0s", "digest_interval must be more than 0"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    and:\n      - {field: volume_ratio, op: \"<\"}\n", "field: volume_ratio", "condition is missing 'value'"),
        ("    repeat_interval: 4h\n", "    repeat_interval: 4h\n    and:\n      - field: volume\n        op: \"<\"\n        value: 1\n", "field: volume", "field 'volume' is not one of"),
        ("default_receivers: [hook]\n", "default_receivers: [hook]\nroutes:\n  - match: {channel: walmart}\n    receivers: [pager]\n", "receivers: [pager]", "unknown receiver 'pager'"),
        ("default_receivers: [hook]\n", "default_receivers: [hook]\nroutes:\n  - match: {channel: walmart}\n    to: [hook]\n", "to: [hook]", "unknown field 'to' in a route"),
        ("default_receivers: [hook]\n", "default_receivers: [hook]\nroutes:\n  - receivers: [hook]\n", "- receivers: [hook]", "a route needs match"),
    ],
)
def test_bad_new_options_name_file_and_line(tmp_path, old, new, needle, message):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(info.value).startswith(f"{path}:{_line_of(text, needle)}: "), str(info.value)
    assert message in str(info.value)


def test_new_options_load_and_rules_check_alias(tmp_path):
    from wiring.cli import app

    text = GOOD.replace("default_receivers: [hook]\n", "default_receivers: [hook]\nroutes:\n"
                        "  - match: {channel: walmart}\n    receivers: [pd]\n").replace(
        "    repeat_interval: 4h\n", "    repeat_interval: 4h\n    keep_firing_for: 10m\n    no_data: alert\n"
        "    impact: true\n    max_notifications_per_hour: 6\n    digest_interval: 15m\n"
        "    and:\n      - {field: volume_ratio, op: \"<\", value: 0.2}\n")
    ruleset = load_rules(write(tmp_path, text))
    rule = ruleset.rules[0]
    assert (rule.keep_firing_for_seconds, rule.no_data, rule.impact) == (600, "alert", True)
    assert (rule.max_notifications_per_hour, rule.digest_interval_seconds) == (6, 900)
    assert [(c.field, c.op, c.value) for c in rule.also] == [("volume_ratio", "<", 0.2)]
    assert [(r.match, r.receivers) for r in ruleset.routes] == [({"channel": "walmart"}, ("pd",))]
    assert rule.holds({"open_breaches": 1, "volume_ratio": 0.1})
    assert not rule.holds({"open_breaches": 1, "volume_ratio": 0.5})
    assert not rule.holds({"open_breaches": 1, "volume_ratio": None})
    ok = CliRunner().invoke(app, ["rules", "check", str(tmp_path / "alerts.yaml")])
    assert ok.exit_code == 0 and "2 rules" in ok.output


def test_shipped_marketplace_templates():
    rules = {r.name: r for r in load_rules(None).rules}
    walmart_ack = rules["WalmartUnacknowledged"]
    assert (walmart_ack.sla, walmart_ack.channel, walmart_ack.field, walmart_ack.op, walmart_ack.value) == (
        "order_acknowledgement", "walmart", "open_breaches", ">", 0)
    assert "4 hours" in walmart_ack.annotations["description"]
    assert rules["WalmartAtRiskOfAutoCancel"].sla == "ship_by_expected_date"
    assert "+ 4 days" in rules["WalmartAtRiskOfAutoCancel"].annotations["description"]
    assert "48 h" in rules["WalmartLateOriginScan"].annotations["description"]
    for name in ("AmazonLateShipmentRateBudget", "AmazonValidTrackingRateBudget"):
        r = rules[name]
        assert (r.sla, r.channel, r.field, r.op, r.value) == ("ship_by_expected_date", "amazon", "error_budget_remaining", "<", 0.25)
        assert "Seller Central" in r.annotations["description"]
    quiet = rules["ChannelQuiet"]
    assert quiet.sla == "channel_silence" and quiet.value == 900000 and quiet.also[0].field == "volume_ratio"
    assert rules["UnpostedOrders"].impact


@pytest.mark.parametrize(
    ("watchdog", "line", "message"),
    [
        ("watchdog: 1h\n", 1, "watchdog: expected a mapping with interval"),
        ("watchdog:\n  every: 1h\n", 2, "unknown field 'every' in watchdog"),
        ("watchdog:\n  receivers: [hook]\n", 1, "watchdog: missing interval"),
        ("watchdog:\n  interval: 0s\n", 2, "interval must be more than 0"),
        ("watchdog:\n  interval: 99999d\n", 2, "longer than the longest allowed duration"),
        ("watchdog:\n  interval: 1h\n  receivers: [pager]\n", 3, "unknown receiver 'pager'"),
    ],
)
def test_watchdog_config_errors_name_file_and_line(watchdog, line, message):
    from alerts.rules import parse
    from controltower.yamlfile import loads

    text = watchdog + "receivers:\n  hook: {type: webhook, url: http://x/h}\nrules: []\n"
    with pytest.raises(ConfigError) as err:
        parse(loads(text, "alerts.yaml"))
    assert str(err.value).startswith(f"alerts.yaml:{line}: ") and message in str(err.value)


def test_watchdog_defaults_to_default_receivers_and_is_off_when_absent():
    from alerts.rules import Watchdog, parse
    from controltower.yamlfile import loads

    base = "receivers:\n  hook: {type: webhook, url: http://x/h}\ndefault_receivers: [hook]\nrules: []\n"
    assert parse(loads(base)).watchdog is None
    assert load_rules(None).watchdog is None  # shipped defaults: off (see alerts.yaml)
    assert parse(loads(base + "watchdog: {interval: 2h}\n")).watchdog == Watchdog(7200.0, ("hook",))
    with pytest.raises(ConfigError, match="no receivers"):
        parse(loads("rules: []\nwatchdog: {interval: 2h}\n"))


@pytest.mark.parametrize(
    ("impact", "message"),
    [
        ("impact: yes-please", "impact: expected true, false or {milestone, amounts}"),
        ("impact: {milestone: received}", "impact.milestone 'received': expected flow.stage"),
        ("impact: {amounts: []}", "impact.amounts: expected a list of attribute names"),
        ("impact: {colour: red}", "unknown field 'colour' in impact"),
    ],
)
def test_impact_option_errors(impact, message):
    from alerts.rules import parse
    from controltower.yamlfile import loads

    text = f"rules:\n  - name: A\n    sla: s\n    field: value\n    op: '>'\n    value: 1\n    {impact}\n"
    with pytest.raises(ConfigError) as err:
        parse(loads(text, "alerts.yaml"))
    assert str(err.value).startswith("alerts.yaml:7: ") and message in str(err.value)
