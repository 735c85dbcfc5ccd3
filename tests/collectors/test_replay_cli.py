"""`controltower replay …`: a dry run records nothing, a request is recorded, approval needs someone else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from typer.testing import CliRunner

from collectors.store import EventStore
from controltower.errors import ControlTowerError
from wiring.cli import app

TAPS = """taps: []
replay:
  flows:
    refund: {produces: return.refund_posted}
"""


def test_replay_cli_request_dry_run_approve_and_list(engine, settings, monkeypatch, tmp_path):
    now = datetime.now(UTC)
    EventStore(engine, settings).ingest([
        {"event_id": "e-1", "occurred_at": (now - timedelta(minutes=3)).isoformat(), "correlation_id": "c-ret",
         "channel": "amazon", "flow": "refund", "stage": "refund_posted", "status": "dead_letter",
         "system": "middleware"}], source="tap:erp", now=now)
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    taps = tmp_path / "taps.yaml"
    taps.write_text(TAPS)
    cli = CliRunner()
    base = ["replay", "request", "-c", "c-ret", "--by", "dana", "--config", str(taps), "--json"]
    dry = cli.invoke(app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["items"][0]["status"] == "requested"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM replay_requests")).scalar() == 0
    done = cli.invoke(app, base)
    assert done.exit_code == 0, done.output
    request_id = json.loads(done.output)["items"][0]["id"]
    same = cli.invoke(app, ["replay", "approve", str(request_id), "--by", "dana"])
    assert isinstance(same.exception, ControlTowerError) and "second, different person" in str(same.exception)
    other = cli.invoke(app, ["replay", "approve", str(request_id), "--by", "lee"])
    assert other.exit_code == 0 and f"replay {request_id} approved by lee" in other.output
    listed = cli.invoke(app, ["replay", "list", "--json", "--config", str(taps)])
    assert [(r["status"], r["approved_by"]) for r in json.loads(listed.output)] == [("approved", "lee")]
