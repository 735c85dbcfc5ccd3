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


def test_publish_writes_the_full_definitions_the_readers_need(engine):
    import sqlalchemy as sa

    from controltower import transactions

    definitions.publish(engine, definitions.load())
    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(sa.text("SELECT name, kind, definition FROM sla_definitions"))}
        judged = {d.name: d for d in transactions.published(conn)}
    assert rows["error_rate"].definition["unit"] == "ratio" and rows["dead_letters"].definition["unit"] == "count"
    assert rows["inventory_freshness"].definition["unit"] == "ms"
    # only latency and deadline SLAs judge a transaction, with everything the SLA table uses
    assert sorted(judged) == ["erp_posting", "order_acknowledgement", "origin_scan", "return_refund", "settlement",
                              "ship_by_expected_date", "shipment_confirmation", "warehouse_release", "warehouse_shipping"]
    assert judged["erp_posting"].closed_by == ("cancellation.requested",) and judged["erp_posting"].open_label == "unposted"
    assert judged["order_acknowledgement"].exclude_channels == ("pos",)
    assert judged["order_acknowledgement"].targets_ms == {"walmart": 4 * 3600_000, "amazon": 1800_000}
    assert judged["ship_by_expected_date"].deadline_attribute == "expected_ship_date"


def test_open_label_names_the_open_breaches(tmp_path):
    text = GOOD.replace("    target: 15m", "    target: 15m\n    open_label: unshipped")
    assert definitions.loads(text).slas[0].open_label == "unshipped"
    with pytest.raises(ConfigError, match="open_label: expected text"):
        definitions.loads(GOOD.replace("    target: 15m", "    target: 15m\n    open_label: 3"))
