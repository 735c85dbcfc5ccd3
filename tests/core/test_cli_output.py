"""CLI output is data: piped, a line is never wrapped; every command that prints a table has `--json`.

The CLI runs with its output captured (not a terminal), the way a pipe or a script sees it.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from collectors.store import EventStore
from controltower import apikeys, clitools
from controltower.vocab import rfc3339
from metrics import definitions, jobs
from wiring.cli import app

LONG = "erp rejected the sales order: " + "x" * 170  # 200 characters
assert len(LONG) == 200


@pytest.fixture
def cli(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # what a terminal-less run used to wrap at
    runner = CliRunner()
    base = ["--database-url", database_url, "--data-dir", str(tmp_path)]

    def run(*argv: str, code: int = 0) -> str:
        result = runner.invoke(app, [*base, *argv])
        assert result.exit_code == code, (argv, result.output, result.exception)
        return result.output

    return run


def line_with(output: str, text: str) -> str:
    hits = [line for line in output.splitlines() if text in line]
    assert hits, f"{text!r} is not on one line of:\n{output}"
    return hits[0]


def ev(cid, milestone, at, *, status="ok", n=0, **extra):
    flow, stage = milestone.split(".")
    return {"event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
            "order_id": f"SO-{cid}", "channel": "amazon", "flow": flow, "stage": stage, "status": status,
            "system": "erp", **extra}


def firing(engine, now, summary):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO alert_state (fingerprint, rule, labels, severity, state, active_since, firing_since,"
            " last_evaluated_at, summary) VALUES ('0123abcd', 'UnpostedOrders', '{\"channel\": \"amazon\"}',"
            " 'page', 'firing', :t, :t, :t, :s)"), {"t": now, "s": summary})


def test_search_prints_deadline_slas_and_long_values_on_one_line(engine, settings, cli, now):
    """`ship_by_expected_date` has no target (a deadline): search crashed on `None:.0f`."""
    definitions.publish(engine, jobs.load_definitions(settings))
    received = now - timedelta(hours=2)
    due = (now + timedelta(days=1)).replace(microsecond=0)
    EventStore(engine, settings).ingest([
        ev("c1", "order.received", received, attributes={"expected_ship_date": due.isoformat()}),
        ev("c1", "order.acknowledged", received + timedelta(minutes=4)),
        ev("c1", "order.erp_posted", received + timedelta(minutes=5), status="error",
           error_code="[/]E42", error_message=LONG),
    ], source="test", now=now)
    out = cli("search", "SO-c1")
    # a deadline SLA: elapsed since order.received and the promised date, no target
    assert f"  SLA ship_by_expected_date: pending (2 h, due {rfc3339(due)})\n" in out
    # 4 minutes from received to acknowledged, of the 30-minute default target in slas.yaml
    assert "  SLA order_acknowledgement: met (4 min of 30 min)\n" in out
    assert line_with(out, LONG).rstrip().endswith(f"[/]E42 {LONG}")  # markup-looking data shown as text
    shown = json.loads(cli("search", "SO-c1", "--json"))
    verdicts = {v["sla"]: v for v in shown["transaction"]["sla"]}
    assert verdicts["ship_by_expected_date"]["target_ms"] is None
    assert verdicts["ship_by_expected_date"]["state"] == "pending"


def test_search_tolerates_missing_verdict_fields():
    assert clitools.plain(None) == ""
    from collectors.commands import _measure

    assert _measure({}) == ""
    assert _measure({"elapsed_ms": None, "due_at": "2026-01-01T00:00:00.000Z"}) == " (due 2026-01-01T00:00:00.000Z)"
    assert _measure({"elapsed_ms": 61_000, "target_ms": None}) == " (1 min 1 s)"
    assert _measure({"elapsed_ms": 61_000, "target_ms": 900_000}) == " (1 min 1 s of 15 min)"


def test_alert_tables_keep_each_row_on_one_line_and_have_json(engine, cli, now):
    firing(engine, now, LONG)
    row = line_with(cli("alerts", "list"), LONG)
    assert "0123abcd" in row and "firing" in row and "UnpostedOrders" in row
    assert json.loads(cli("alerts", "list", "--json"))["alerts"][0]["summary"] == LONG

    cli("alerts", "silence", "-m", "channel=amazon", "--for", "2h", "--by", "dave", "--comment", LONG)
    assert "dave" in line_with(cli("alerts", "silences"), LONG)
    [silence] = json.loads(cli("alerts", "silences", "--json"))["silences"]
    assert (silence["id"], silence["matchers"], silence["created_by"], silence["comment"]) == (1, {"channel": "amazon"}, "dave", LONG)
    assert silence["ends_at"].endswith("+00:00")

    cli("alerts", "ack", "0123", "--by", "erin")
    assert "erin acknowledge 0123abcd via cli" in line_with(cli("alerts", "audit"), LONG)
    audit = json.loads(cli("alerts", "audit", "--json"))["audit"]
    assert [(a["actor"], a["action"]) for a in audit] == [("erin", "acknowledge"), ("dave", "silence")]

    assert json.loads(cli("alerts", "deliveries", "--json")) == {"deliveries": []}


def test_rules_and_slas_list_print_tables_and_json(cli):
    rules = json.loads(cli("rules", "list", "--json"))["rules"]
    assert {"name", "sla", "condition", "for_seconds", "severity", "receivers"} <= set(rules[0])
    table = cli("rules", "list")
    assert line_with(table, rules[0]["name"]).count("│") >= 6  # one row, every column
    slas = {s["name"]: s for s in json.loads(cli("slas", "list", "--json"))["slas"]}
    assert slas["erp_posting"] == {"name": "erp_posting", "kind": "milestone_latency",
                                   "measures": "order.received → order.erp_posted"}
    assert "order.received → order.erp_posted" in line_with(cli("slas", "list"), "erp_posting")


def test_sla_table_is_never_wrapped_when_piped(engine, settings, cli, now):
    EventStore(engine, settings).ingest([ev("c9", "order.received", now - timedelta(hours=1))], source="t", now=now)
    out = cli("sla", "--window", "1h")
    header = line_with(out, "channel")
    assert all(name in header for name in ("channel", "p95", "target", "open", "budget", "health"))
    assert "erp_posting" in line_with(out, "erp_posting") and "amazon" in line_with(out, "erp_posting")
    shown = json.loads(cli("sla", "--window", "1h", "--json", "--no-refresh"))
    assert {"window", "as_of", "slas", "scorecards"} <= set(shown)


def test_keys_list_has_json(engine, cli, now):
    apikeys.create(engine, "shopify-webhooks", ("ingest",), now - timedelta(seconds=1))  # already expired
    [key] = json.loads(cli("keys", "list", "--json"))["keys"]
    assert (key["name"], key["scopes"], key["state"]) == ("shopify-webhooks", ["ingest"], "expired")
    assert key["prefix"].startswith("ct_") and "key_hash" not in key


HOSTILE = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["[/]", "[bold]x", "[link=https://evil.example]y[/link]", "a\nb\r\nc", "\x1b[31mred", "x" * 5000,
                     "ｆｕｌｌ\u200bwidth", "\u202eRTL", "]]][[["]),
)


@hypothesis_settings(max_examples=150, deadline=None)
@given(value=HOSTILE, other=HOSTILE)
def test_any_value_prints_as_one_line_of_text(value, other):
    import contextlib
    import io

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(clitools, "console", clitools.CliConsole(soft_wrap=True))  # stdout: the StringIO
        clitools.line(f"order {value}:", other)
        clitools.print_table(("key", "value"), [(value, other)])
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        clitools.print_json({"value": value})
    assert json.loads(shown.getvalue()) == {"value": value}
    lines = out.getvalue().splitlines()  # every Unicode line break counts
    assert lines[0] == f"order {clitools.plain(value)}: {clitools.plain(other)}"
    assert len(lines) == 6 and lines[1].startswith("┏") and lines[5].startswith("└")  # 1 header, 1 row
    assert "\x1b" not in out.getvalue()  # no terminal control sequence smuggled through


def test_a_table_fits_the_terminal_only_on_a_terminal():
    import io

    piped = clitools.CliConsole(file=io.StringIO(), soft_wrap=True)
    assert piped.width == clitools.PIPE_WIDTH

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = clitools.CliConsole(file=Tty(), soft_wrap=True, width=60, color_system=None)
    clitools_table = clitools.Table("a")
    clitools_table.add_row("y" * 200)
    terminal.print(clitools_table)
    assert max(len(line) for line in terminal.file.getvalue().splitlines()) <= 60
