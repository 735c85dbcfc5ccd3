"""The `orphans` and `duplicate_rate` SLA kinds in slas.yaml: defaults, and bad files named by line."""

from __future__ import annotations

import pytest

from controltower.errors import ConfigError
from metrics import definitions
from wiring.cli import main

GOOD = """\
slas:
  - name: orphans
    kind: orphans
    max: 0
    critical: 20
  - name: duplicate_orders
    kind: duplicate_rate
    max: 0.01
"""


def test_shipped_defaults_have_both_signal_slas():
    defs = definitions.load()
    orphans, duplicates = defs.get("orphans"), defs.get("duplicate_orders")
    assert (orphans.kind, orphans.origins, orphans.max, orphans.critical, orphans.unit) == (
        "orphans", ("order.received", "return.requested"), 0, 20, "count")
    assert (duplicates.kind, duplicates.max, duplicates.critical, duplicates.min_orders, duplicates.unit) == (
        "duplicate_rate", 0.002, 0.01, 20, "ratio")
    assert defs.orphan_origins == ("order.received", "return.requested")


def test_origins_default_and_are_configurable():
    defs = definitions.loads(GOOD)
    assert defs.get("orphans").origins == defs.orphan_origins == ("order.received", "return.requested")
    assert defs.get("duplicate_orders").min_orders == 20 and defs.get("duplicate_orders").critical is None
    custom = definitions.loads(GOOD.replace("    max: 0\n", "    max: 0\n    origins: [order.received, settlement.available]\n"))
    assert custom.orphan_origins == ("order.received", "settlement.available")
    none = definitions.loads("slas:\n  - {name: ack, kind: milestone_latency, from: order.received, to: order.acknowledged, target: 1h}\n")
    assert none.orphan_origins == ("order.received", "return.requested")  # the list still has its origins


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GOOD.replace("    max: 0\n", ""), 2, "orphans: orphans needs `max`"),
        (GOOD.replace("max: 0\n", "max: 1.5\n"), 4, "max: expected an integer, got 1.5"),
        (GOOD.replace("max: 0\n", "max: -1\n"), 4, "max: -1 must be >= 0.0"),
        (GOOD.replace("critical: 20", "critical: 0\n    max: 3").replace("    max: 0\n", ""), 4,
         "orphans: critical (0) is below max (3)"),
        (GOOD.replace("    max: 0\n", "    max: 0\n    origins: []\n"), 5, "origins: expected a non-empty list"),
        (GOOD.replace("    max: 0\n", "    max: 0\n    origins: received\n"), 5, "origins: expected a non-empty list"),
        (GOOD.replace("    max: 0\n", "    max: 0\n    origins: [order.received, shipped]\n"), 5,
         "origins: 'shipped' is not a milestone name"),
        (GOOD.replace("    max: 0\n", "    max: 0\n    target: 1h\n"), 5, "unknown key 'target' for kind orphans"),
        (GOOD.replace("max: 0.01", "max: 2"), 8, "max: 2 must be between 0.0 and 1.0"),
        (GOOD.replace("max: 0.01", "max: 0.01\n    critical: 0.001"), 9, "critical (0.001) is below max (0.01)"),
        (GOOD.replace("max: 0.01", "max: 0.01\n    min_orders: many"), 9, "min_orders: expected an integer"),
        (GOOD.replace("max: 0.01", "max: 0.01\n    origins: [order.received]"), 9,
         "unknown key 'origins' for kind duplicate_rate"),
        (GOOD + "  - {name: orphans_strict, kind: orphans, max: 5, origins: [order.received]}\n", 9,
         "orphans_strict: origins differ from those of orphans (line 2)"),
    ],
)
def test_bad_signal_definitions_name_the_line(tmp_path, capsys, text, line, message):
    path = tmp_path / "slas.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        definitions.load(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert message in str(info.value)
    with pytest.raises(SystemExit) as exited:
        main(["slas", "check", str(path)])
    assert exited.value.code == 1 and f"error: {path}:{line}: " in capsys.readouterr().err


def test_an_unknown_origin_milestone_is_a_warning():
    defs = definitions.loads(GOOD.replace("    max: 0\n", "    max: 0\n    origins: [order.placed]\n"), "slas.yaml")
    assert defs.orphan_origins == ("order.placed",)
    assert defs.warnings == ("slas.yaml:5: milestone 'order.placed' is not a standard one (allowed; check the spelling)",)
