"""SLA definition files: the shipped defaults load, bad files fail with the line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controltower.errors import ConfigError
from metrics import definitions
from wiring.cli import app

GOOD = """\
slas:
  - name: ack
    kind: milestone_latency
    from: order.received
    to: order.acknowledged
    target: 15m
"""


def test_shipped_defaults_load_without_warnings():
    defs = definitions.load()
    assert defs.warnings == ()
    ack = defs.get("order_acknowledgement")
    assert ack.target_for("walmart") == 4 * 3600_000 and ack.target_for("ebay") == 30 * 60_000
    assert {h.sla for h in defs.hops} <= {s.name for s in defs.slas}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GOOD.replace("target: 15m", "target: -5"), 6, "must not be negative"),
        (GOOD.replace("target: 15m", "target: soon"), 6, "not a duration"),
        (GOOD.replace("target: 15m", "target: [1]"), 6, "expected a duration"),
        (GOOD.replace("milestone_latency", "latency"), 3, "kind 'latency' is not one of"),
        (GOOD.replace("    target: 15m\n", ""), 2, "needs `target`"),
        (GOOD + "    colour: red\n", 7, "unknown key 'colour'"),
        (GOOD + GOOD.replace("slas:\n", ""), 7, "duplicate SLA name 'ack' (first defined on line 2)"),
        (GOOD.replace("order.received", "received"), 4, "is not a milestone name"),
        (GOOD + "    objective: 1.5\n", 7, "objective: 1.5 must be between"),
        (GOOD + "    warn_open_breaches: 2.5\n", 7, "expected an integer"),
        (GOOD + "hops:\n  - {hop: ERP, sla: nope}\n", 8, "unknown SLA 'nope'"),
        ("slas: [\n", 2, "not valid YAML"),
        ("slas:\n  - name: Bad Name\n    kind: rate\n", 2, "lower_snake_case"),
        ("slas:\n  - {name: r, kind: rate, metric: errors, max: 1}\n", 2, "metric 'errors' is not one of"),
    ],
)
def test_bad_files_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "slas.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        definitions.load(path)
    assert f"{path}:{line}:" in str(info.value) and message in str(info.value), str(info.value)


def test_unknown_milestones_are_allowed_but_warned(tmp_path):
    path = tmp_path / "slas.yaml"
    path.write_text(GOOD.replace("order.acknowledged", "order.acknowleged"))
    defs = definitions.load(path)
    assert len(defs.slas) == 1
    assert defs.warnings == (f"{path}:5: milestone 'order.acknowleged' is not a standard one (allowed; check the spelling)",)


def test_slas_check_command(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("15m", "-1"))
    runner = CliRunner()
    ok = runner.invoke(app, ["slas", "check", str(good)])
    assert ok.exit_code == 0 and "1 SLAs" in ok.output
    from wiring.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["slas", "check", str(bad)])
    assert exited.value.code == 1
