"""The file collector: CSV/JSONL import with per-line errors, idempotent re-import, drop folder."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from typer.testing import CliRunner

from collectors.files import import_files, watch_once
from collectors.masking import Masker
from collectors.store import EventStore
from wiring.cli import app

NOW = datetime.now(UTC).replace(microsecond=0)


def at(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat()


def sink_for(engine, settings):
    store = EventStore(engine, settings, Masker())

    def sink(records, source):
        return store.ingest(records, source=source, now=datetime.now(UTC))

    return sink


def count(engine, sql="SELECT count(*) FROM events") -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


CSV = (
    "correlation_id,occurred_at,channel,flow,stage,status,attributes.tracking_number,attributes.sku,latency_ms\n"
    f"C-1,{at(30)},walmart,fulfilment,shipped,ok,1Z001,SKU-1,1200\n"
    f"C-2,{at(20)},walmart,fulfilment,shipped,ok,1Z002,SKU-2,\n"
    f"C-3,not-a-time,walmart,fulfilment,shipped,ok,1Z003,SKU-3,\n"
    f"C-4,{at(10)},walmart,fulfilment,shipped,ok,1Z004,SKU-4,fast\n"
)


def test_csv_import_reports_bad_lines_and_reimport_stores_nothing_twice(tmp_path, engine, settings):
    feed = tmp_path / "3pl-west-shipments.csv"
    feed.write_text(CSV)
    report = import_files([feed], sink_for(engine, settings), progress=False)
    assert (report.accepted, report.duplicates) == (2, 0)
    assert [e.split(":", 2)[1] for e in report.errors] == ["4", "5"]  # file lines, header is line 1
    assert "occurred_at" in report.errors[0] and "latency_ms" in report.errors[1]
    assert count(engine, "SELECT count(*) FROM transaction_keys WHERE kind = 'tracking_number'") == 2
    again = import_files([feed], sink_for(engine, settings), progress=False)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert count(engine) == 2


def test_jsonl_gz_import(tmp_path, engine, settings):
    lines = [
        {"event_id": "j1", "correlation_id": "C-9", "occurred_at": at(5), "channel": "ebay", "flow": "order", "stage": "received"},
        "not json",
        [1, 2],
        {"event_id": "j2", "correlation_id": "C-9", "occurred_at": at(4), "channel": "ebay", "flow": "order", "stage": "acknowledged"},
    ]
    feed = tmp_path / "orders.jsonl.gz"
    with gzip.open(feed, "wt") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    report = import_files([feed], sink_for(engine, settings), progress=False)
    assert report.accepted == 2
    assert [e.split(":", 2)[1] for e in report.errors] == ["2", "3"]
    assert count(engine, "SELECT count(*) FROM transaction_milestones WHERE correlation_id = 'C-9'") == 2


def test_unreadable_files_are_reported(tmp_path, engine, settings):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("correlation_id,channel\nC-1,caf\xe9\n".encode("latin-1"))
    unknown = tmp_path / "feed.xml"
    unknown.write_text("<x/>")
    report = import_files([bad, unknown, tmp_path / "missing.csv"], sink_for(engine, settings), progress=False)
    text = "\n".join(report.errors)
    assert "not UTF-8" in text and "unknown file type" in text and "no such file" in text


def test_drop_folder_moves_good_files_and_quarantines_bad_ones(tmp_path, engine, settings):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "good.csv").write_text(CSV.splitlines()[0] + "\n" + CSV.splitlines()[1] + "\n")
    (drop / "mixed.csv").write_text(CSV)
    (drop / "notes.txt").write_text("ignored")
    sizes: dict = {}
    assert watch_once(drop, sink_for(engine, settings), sizes=sizes) == []  # first sight: wait for a stable size
    reports = watch_once(drop, sink_for(engine, settings), sizes=sizes)
    assert sorted(r.path.name for r in reports) == ["good.csv", "mixed.csv"]
    assert (drop / "processed" / "good.csv").exists()
    assert (drop / "quarantine" / "mixed.csv").exists()
    errors = (drop / "quarantine" / "mixed.csv.errors.txt").read_text()
    assert errors.startswith("mixed.csv:4: ") and "mixed.csv:5: " in errors
    assert (drop / "notes.txt").exists()
    assert count(engine) == 2  # good.csv's row is mixed.csv's first row: stored once


def test_import_command_exit_code_and_summary(tmp_path, engine, settings, monkeypatch):
    feed = tmp_path / "feed.csv"
    feed.write_text(CSV)
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    result = CliRunner().invoke(app, ["import", "--quiet", str(feed)])
    assert result.exit_code == 2, result.output
    assert "2 stored" in result.output and "2 rejected" in result.output and "feed.csv:4:" in result.output
