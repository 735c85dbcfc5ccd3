"""Collector CLI helpers: SLA verdict lines never crash on a verdict without a target."""

from __future__ import annotations

import pytest

from collectors.commands import verdict_line


@pytest.mark.parametrize(
    ("verdict", "line"),
    [
        ({"sla": "order_acknowledgement", "state": "met", "elapsed_ms": 61000, "target_ms": 900000},
         "  SLA order_acknowledgement: met (61s of 900s)"),
        # the shipped ship_by_expected_date deadline SLA has no target: `None:.0f` used to raise TypeError
        ({"sla": "ship_by_expected_date", "state": "open", "elapsed_ms": 5000, "target_ms": None},
         "  SLA ship_by_expected_date: open (5s)"),
        ({"sla": "ship_by_expected_date", "state": "pending", "elapsed_ms": None, "target_ms": None},
         "  SLA ship_by_expected_date: pending (-)"),
    ],
)
def test_verdict_line(verdict, line):
    assert verdict_line(verdict) == line


def test_search_finds_an_order_by_the_email_its_id_was_masked_from(engine, settings, monkeypatch):
    import json
    from datetime import UTC, datetime

    from typer.testing import CliRunner

    from collectors.masking import Masker
    from collectors.store import EventStore
    from controltower.cli import app

    now = datetime.now(UTC)
    record = {"event_id": "s1", "occurred_at": now.isoformat(), "correlation_id": "jane@example.com",
              "order_id": "jane@example.com", "channel": "shopify", "flow": "order", "stage": "received"}
    assert EventStore(engine, settings, Masker()).ingest([record], source="test", now=now).accepted == 1
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    result = CliRunner().invoke(app, ["search", "--json", "jane@example.com"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["results"][0]["correlation_id"] == Masker().mask_identifier("jane@example.com")
    assert "jane@example.com" not in result.output
