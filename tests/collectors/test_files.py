"""The file collector: CSV/JSONL import with per-line errors, idempotent re-import, drop folder."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from collectors.dropfolder import watch_once
from collectors.files import import_files
from collectors.store import EventStore
from controltower.masking import Masker
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
    assert f"{bad}:2: channel: not valid UTF-8" in text  # only that line (issue 10 #7)
    assert "unknown file type" in text and "no such file" in text


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


HEADER = "correlation_id,occurred_at,channel,flow,stage,event_id\n"


def test_one_non_utf8_byte_rejects_only_its_csv_line(tmp_path, engine, settings):
    feed = tmp_path / "mixed-bytes.csv"
    feed.write_bytes(
        HEADER.encode()
        + f"C-1,{at(3)},walmart,order,received,e1\n".encode()
        + f"C-2,{at(2)},walmart,order,received,caf\xe9\n".encode("latin-1")
        + f"C-3,{at(1)},walmart,order,received,e3\n".encode()
    )
    report = import_files([feed], sink_for(engine, settings), progress=False)
    assert report.errors == [f"{feed}:3: event_id: not valid UTF-8"]
    assert report.accepted == 2
    assert count(engine, "SELECT count(*) FROM events WHERE correlation_id IN ('C-1', 'C-3')") == 2


def test_jsonl_lines_are_decoded_like_the_events_api(tmp_path, engine, settings):
    good = {"correlation_id": "C-1", "occurred_at": at(3), "channel": "ebay", "flow": "order", "stage": "received"}
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(
        json.dumps(good).encode() + b"\n"
        + b'{"correlation_id": "C-2", "attributes": {"note": "\xff"}}\n'
        + b'{"correlation_id": "C-3", "payload": ' + b"[" * 2000 + b"]" * 2000 + b"}\n"
        + b'{"correlation_id": "C-4", "attributes": {"total": 1e400}}\n'
        + json.dumps(good | {"correlation_id": "C-5"}).encode() + b"\n"
    )
    report = import_files([feed], sink_for(engine, settings), progress=False)
    assert report.errors == [
        f"{feed}:2: attributes.note: not valid UTF-8",
        f"{feed}:3: payload: nested deeper than 32 levels",
        f"{feed}:4: attributes.total: number 1e400 is outside the range stored exactly (±2^63, finite); send it as a string",
    ]
    assert report.accepted == 2


def test_a_long_line_is_skipped_with_a_reason_and_bounded_memory(tmp_path, engine, settings):
    feed = tmp_path / "bomb.jsonl.gz"
    good = {"correlation_id": "C-1", "occurred_at": at(3), "channel": "ebay", "flow": "order", "stage": "received"}
    with gzip.open(feed, "wb") as out:
        out.write(b'{"payload": "' + b"A" * (3 << 20) + b'"}\n' + json.dumps(good).encode() + b"\n")
    report = import_files([feed], sink_for(engine, settings), progress=False)
    assert report.errors == [f"{feed}:1: line longer than 1048576 bytes: skipped (one record per line)"]
    assert report.accepted == 1


def test_csv_long_line_keeps_line_numbers(tmp_path, engine, settings):
    from collectors.files import read_records

    feed = tmp_path / "long.csv"
    feed.write_text(HEADER + "C-1," + "x" * 5000 + ",a,b,c,d\n" + f"C-2,{at(1)},walmart,order,received,e2\n")
    got = list(read_records(feed, max_line_bytes=1000))
    assert got[0] == (2, None, "line longer than 1000 bytes: skipped (one record per line)")
    assert got[1][0] == 3 and got[1][1]["correlation_id"] == "C-2"


def test_gzip_bomb_memory_stays_bounded(tmp_path):
    """200 MB of one line inflated from ~200 KB: the reader's peak RSS grows by a few MB only."""
    import subprocess
    import sys

    feed = tmp_path / "bomb.jsonl.gz"
    with gzip.open(feed, "wb", compresslevel=9) as out:
        out.write(b'{"payload": "')
        chunk = b"A" * (1 << 20)
        for _ in range(200):
            out.write(chunk)
        out.write(b'"}\n')
    script = (
        "import resource, sys; from pathlib import Path; from collectors.files import read_records\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rows = list(read_records(Path(sys.argv[1])))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(len(rows), rows[0][2], after - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(feed)], capture_output=True, text=True, check=True)
    rows, *reason, grown_kib = done.stdout.split()
    assert rows == "1" and " ".join(reason).startswith("line longer than 1048576 bytes")
    assert int(grown_kib) < 32 * 1024, f"peak RSS grew by {grown_kib} KiB"
    assert feed.stat().st_size < 400_000


def test_drop_folder_never_follows_symlinks(tmp_path, engine, settings, caplog):
    secret = tmp_path / "outside.csv"
    secret.write_text(HEADER + f"C-secret,{at(1)},walmart,order,received,s1\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite")
    drop = tmp_path / "drop"
    (drop / "quarantine").mkdir(parents=True)
    (drop / "linked.csv").symlink_to(secret)
    (drop / "mixed.csv").write_text(CSV)
    (drop / "quarantine" / "mixed.csv.errors.txt").symlink_to(victim)  # planted
    reports = watch_once(drop, sink_for(engine, settings))
    assert [r.path.name for r in reports] == ["mixed.csv"]
    assert "linked.csv skipped: a symlink" in caplog.text
    assert (drop / "linked.csv").is_symlink()  # left alone, not imported
    assert count(engine, "SELECT count(*) FROM events WHERE correlation_id = 'C-secret'") == 0
    assert victim.read_text() == "do not overwrite"
    errors_file = drop / "quarantine" / "mixed.csv.errors.txt"
    assert not errors_file.is_symlink() and errors_file.read_text().startswith("mixed.csv:4: ")
    assert [p.name for p in (drop / "quarantine").iterdir() if p.name.startswith(".")] == []


def test_drop_folder_refuses_a_symlinked_processed_folder(tmp_path, engine, settings):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "processed").symlink_to(elsewhere)
    (drop / "good.csv").write_text(CSV.splitlines()[0] + "\n" + CSV.splitlines()[1] + "\n")
    assert watch_once(drop, sink_for(engine, settings)) == []
    assert list(elsewhere.iterdir()) == [] and (drop / "good.csv").exists()


def test_watcher_goes_on_after_a_poisoned_file(tmp_path, engine, settings):
    drop = tmp_path / "drop"
    drop.mkdir()
    good = {"correlation_id": "C-after", "occurred_at": at(1), "channel": "ebay", "flow": "order", "stage": "received"}
    (drop / "a-deep.jsonl").write_bytes(b'{"payload": ' + b"[" * 1000 + b"]" * 1000 + b"}\n" + json.dumps(good).encode() + b"\n")
    (drop / "b-good.jsonl").write_text(json.dumps(good) + "\n")
    calls = []

    def sink(records, source):
        calls.append(source)
        if source == "file:a-deep.jsonl":
            raise RuntimeError("boom")
        return sink_for(engine, settings)(records, source)

    reports = watch_once(drop, sink)
    assert [r.path.name for r in reports] == ["a-deep.jsonl", "b-good.jsonl"]
    assert "RuntimeError: boom" in reports[0].failure  # an unexpected failure in one file...
    assert (drop / "quarantine" / "a-deep.jsonl").exists() and (drop / "processed" / "b-good.jsonl").exists()
    assert count(engine, "SELECT count(*) FROM events WHERE correlation_id = 'C-after'") == 1  # ...not the next


HEAD = "event_id,occurred_at,correlation_id,channel,flow,stage,status,system"


def _row(event_id: str, *extra: str) -> str:
    return ",".join([event_id, at(5), f"C-{event_id}", "amazon", "order", "received", "ok", "marketplace", *extra])


def test_csv_unterminated_quote_rejects_its_row_and_never_swallows_later_lines(tmp_path, engine, settings):
    """Row q2 opened a quote it never closed: q3 was stored inside q2's error_message."""
    path = tmp_path / "q.csv"
    path.write_text(f'{HEAD},error_message\n{_row("q1", chr(34) + "line1" + chr(10) + "line2" + chr(34))}\n'
                    f'{_row("q2", chr(34) + "unterminated")}\n{_row("q3", "x")}\n')
    report = import_files([path], sink_for(engine, settings), progress=False)
    assert report.accepted == 1
    assert len(report.errors) == 1 and "q.csv:" in report.errors[0]
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT event_id, error_message FROM events")).all())
    assert rows == {"q1": "line1\nline2"}  # q2 is not stored holding q3's line


def test_csv_header_naming_a_column_twice_is_refused(tmp_path, engine, settings):
    """`correlation_id,…,correlation_id`: the last cell won silently."""
    path = tmp_path / "d.csv"
    path.write_text(f"{HEAD},correlation_id\n{_row('d1', 'C-other')}\n")
    report = import_files([path], sink_for(engine, settings), progress=False)
    assert report.accepted == 0 and "correlation_id" in report.errors[0] and "twice" in report.errors[0]
    assert count(engine) == 0


def test_csv_latency_takes_ascii_numbers_only(tmp_path, engine, settings):
    """`١٢` was stored as 12 and `1_000` as 1000 (float() accepts both)."""
    path = tmp_path / "l.csv"
    path.write_text(f"{HEAD},latency_ms\n{_row('l1', '١٢')}\n{_row('l2', '1_000')}\n{_row('l3', '12.5')}\n"
                    f"{_row('l4', '1e3')}\n")
    report = import_files([path], sink_for(engine, settings), progress=False)
    assert report.accepted == 2 and len(report.errors) == 2
    assert all("is not a number" in e for e in report.errors)
    assert count(engine, "SELECT count(*) FROM events WHERE latency_ms IN (12.5, 1000)") == 2


def test_drop_folder_waits_until_a_feed_has_settled(tmp_path, engine, settings):
    """A writer appending every 1.5 s with 1 s polls saw its file imported half-way and moved;
    the rest of its lines went to a new, header-less file. Now a file is taken only once its
    size and mtime held for a poll AND it was last written `settle` seconds ago."""
    import os

    drop = tmp_path / "drop"
    drop.mkdir()
    path = drop / "feed.csv"
    path.write_text(f"{HEAD}\n{_row('s1')}\n")
    mtime = os.lstat(path).st_mtime
    sizes: dict = {}
    sink = sink_for(engine, settings)
    assert watch_once(drop, sink, sizes=sizes, now=mtime + 1, settle=3) == []  # first sight
    assert watch_once(drop, sink, sizes=sizes, now=mtime + 2, settle=3) == []  # unchanged, but 2 s old
    with path.open("a") as out:
        out.write(_row("s2") + "\n")
    os.utime(path, (mtime + 2.5, mtime + 2.5))
    assert watch_once(drop, sink, sizes=sizes, now=mtime + 3, settle=3) == []  # it grew: wait again
    assert watch_once(drop, sink, sizes=sizes, now=mtime + 6, settle=3)[0].accepted == 2
    assert (drop / "processed" / "feed.csv").exists()


def test_drop_folder_imports_nothing_while_it_cannot_file_away(tmp_path, engine, settings, caplog):
    """A plain file named `quarantine` made every poll re-import the folder and log an error per file."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "quarantine").write_text("")
    (drop / "a.csv").write_text(f"{HEAD}\n{_row('f1')}\n")
    calls = []
    warned: set[str] = set()
    for _ in range(3):
        assert watch_once(drop, lambda records, source: calls.append(source), warned=warned) == []
    assert calls == [] and (drop / "a.csv").exists()
    assert sum("not a real folder" in r.message for r in caplog.records) == 1  # said once, not every poll


def test_watch_prints_file_names_without_control_characters_or_markup(capsys):
    from collectors.commands import _print_report
    from collectors.files import FileReport

    _print_report(FileReport(Path("evil\nname\x1b[31m[bold]x.csv")))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\nname\\x1b[31m[bold]x.csv: 0 stored" in out
