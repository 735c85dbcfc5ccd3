"""The file collector: CSV and JSONL batch feeds (3PL shipment files, ERP exports).

Files hold canonical events, one per line (JSONL) or row (CSV). CSV columns are the canonical
field names; `attributes.X` columns go into `attributes`, and `attributes` / `payload`
columns may hold JSON objects. A record without `event_id` gets one derived from its content,
so re-importing the same file stores nothing twice. `.gz` files are read transparently.

`import_files` reports errors per file and line; `watch_folder` polls a drop folder, moves
processed files to `processed/` and files with bad records to `quarantine/` with a
`NAME.errors.txt` next to them. Good records of a file with bad ones are still stored.
When the database is unavailable a file stays where it is and is retried on the next poll.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from controltower.errors import StorageUnavailable

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
Sink = Callable[[list[dict[str, Any]], str], Any]
_DERIVED_ID_FIELDS = ("correlation_id", "channel", "flow", "stage", "status", "occurred_at", "order_id", "system")


class FileFormatError(ValueError):
    """The file as a whole cannot be read (unknown type, not UTF-8, no header)."""


@dataclass
class FileReport:
    path: Path
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.failure is None

    def error_text(self) -> str:
        out = [f"{self.path.name}: {self.failure}"] if self.failure else []
        out += [f"{self.path.name}:{line}: {message}" for line, message in self.errors]
        return "\n".join(out) + "\n"


@dataclass
class ImportReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def errors(self) -> list[str]:
        out = []
        for f in self.files:
            if f.failure:
                out.append(f"{f.path}: {f.failure}")
            out += [f"{f.path}:{line}: {message}" for line, message in f.errors]
        return out

    def summary(self, max_errors: int = 20) -> str:
        lines = sum(f.lines for f in self.files)
        text = f"{len(self.files)} file(s), {lines} record(s): {self.accepted} stored, {self.duplicates} already present, {len(self.errors)} rejected"
        errors = self.errors
        if errors:
            text += "\n" + "\n".join(errors[:max_errors])
            if len(errors) > max_errors:
                text += f"\n… and {len(errors) - max_errors} more"
        return text


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _kind(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return "csv" if suffix == ".csv" else "jsonl"
    raise FileFormatError(f"unknown file type (expected {', '.join(SUFFIXES)}, optionally .gz)")


def derive_event_id(record: dict[str, Any]) -> str:
    basis = orjson.dumps([record.get(k) for k in _DERIVED_ID_FIELDS] + [record.get("attributes"), record.get("payload")], option=orjson.OPT_SORT_KEYS)
    return "file-" + hashlib.sha256(basis).hexdigest()[:32]


def _csv_record(row: dict[str, str | None], line: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, value in row.items():
        if column is None:
            raise ValueError(f"more cells than header columns ({len(value or [])} extra)")
        if value is None:
            raise ValueError(f"missing cell for column {column!r}")
        column = column.strip()
        if value == "":
            continue
        if column.startswith(("attributes.", "attr.")):
            attributes[column.split(".", 1)[1]] = value
        elif column in ("attributes", "payload"):
            try:
                record[column] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{column}: not valid JSON ({exc})") from None
        elif column == "latency_ms":
            try:
                record[column] = float(value)
            except ValueError:
                raise ValueError(f"latency_ms: {value!r} is not a number") from None
        else:
            record[column] = value
    if attributes:
        merged = record.get("attributes") if isinstance(record.get("attributes"), dict) else {}
        record["attributes"] = {**merged, **attributes}
    return record


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, record or None, error or None) for every record of a file."""
    kind = _kind(path)
    try:
        with _open_text(path) as text:
            if kind == "jsonl":
                for number, line in enumerate(text, start=1):
                    if not line.strip():
                        continue
                    try:
                        value = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield number, None, f"not valid JSON ({exc})"
                        continue
                    if not isinstance(value, dict):
                        yield number, None, f"expected a JSON object, got {type(value).__name__}"
                        continue
                    yield number, value, None
            else:
                reader = csv.DictReader(text)
                if not reader.fieldnames:
                    raise FileFormatError("empty CSV file (no header row)")
                for row in reader:
                    try:
                        yield reader.line_num, _csv_record(row, reader.line_num), None
                    except ValueError as exc:
                        yield reader.line_num, None, str(exc)
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise FileFormatError(f"damaged gzip file ({exc})") from None
    except csv.Error as exc:
        raise FileFormatError(f"bad CSV: {exc}") from None


def import_file(path: Path, sink: Sink, *, batch_size: int = 5000, on_records: Callable[[int], None] | None = None) -> FileReport:
    """Import one file. Raises StorageUnavailable (nothing from the failing batch is stored)."""
    report = FileReport(path)
    source = f"file:{path.name}"
    batch: list[dict[str, Any]] = []
    lines: list[int] = []

    def flush() -> None:
        if not batch:
            return
        result = sink(batch, source)
        report.accepted += result.accepted
        report.duplicates += result.duplicates
        report.errors += [(lines[i], message) for i, message in result.rejected]
        if on_records:
            on_records(len(batch))
        batch.clear()
        lines.clear()

    try:
        for number, record, error in read_records(path):
            report.lines += 1
            if error is not None or record is None:
                report.errors.append((number, error or "unreadable"))
                continue
            if not record.get("event_id"):
                record["event_id"] = derive_event_id(record)
            batch.append(record)
            lines.append(number)
            if len(batch) >= batch_size:
                flush()
        flush()
    except FileFormatError as exc:
        report.failure = str(exc)
    except OSError as exc:
        report.failure = f"cannot read ({exc.strerror or exc})"
    report.errors.sort()
    return report


def import_files(paths: Sequence[Path], sink: Sink, *, batch_size: int = 5000, progress: bool = True) -> ImportReport:
    from tqdm import tqdm

    report = ImportReport()
    total = sum(p.stat().st_size for p in paths if p.is_file())
    with tqdm(total=len(paths), unit="file", disable=not progress or total == 0, desc="importing") as bar:
        for path in paths:
            if not path.is_file():
                report.files.append(FileReport(path, failure="no such file"))
            else:
                counted = 0

                def tick(n: int) -> None:
                    nonlocal counted
                    counted += n
                    bar.set_postfix(records=counted, refresh=False)

                report.files.append(import_file(path, sink, batch_size=batch_size, on_records=tick))
            bar.update(1)
    return report


def _unique(target: Path) -> Path:
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{stamp}-{target.name}")


def watch_once(folder: Path, sink: Sink, *, sizes: dict[Path, int] | None = None) -> list[FileReport]:
    """Process every complete file in the drop folder once.

    With `sizes` (carried between polls), a file is taken only once its size has stayed the
    same for one poll, so a feed still being written is not imported half-way.
    """
    processed, quarantine = folder / "processed", folder / "quarantine"
    reports = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            _kind(path)
        except FileFormatError:
            continue
        if sizes is not None:
            size = path.stat().st_size
            if sizes.get(path) != size:
                sizes[path] = size
                continue
            sizes.pop(path, None)
        try:
            report = import_file(path, sink)
        except StorageUnavailable as exc:
            log.warning("%s left in place, will retry: %s", path.name, exc)
            break
        if report.ok:
            processed.mkdir(exist_ok=True)
            path.rename(_unique(processed / path.name))
        else:
            quarantine.mkdir(exist_ok=True)
            target = _unique(quarantine / path.name)
            path.rename(target)
            target.with_name(target.name + ".errors.txt").write_text(report.error_text(), encoding="utf-8")
            log.warning("%s quarantined: %d bad record(s)", path.name, len(report.errors))
        reports.append(report)
    return reports


def watch_folder(folder: Path, sink: Sink, *, stop: threading.Event, interval: float = 2.0, on_report: Callable[[FileReport], None] | None = None) -> None:
    sizes: dict[Path, int] = {}
    while not stop.is_set():
        for report in watch_once(folder, sink, sizes=sizes):
            if on_report:
                on_report(report)
        stop.wait(interval)
