"""The file collector: CSV and JSONL batch feeds (3PL shipment files, ERP exports).

Files hold canonical events, one per line (JSONL) or row (CSV). CSV columns are the canonical
field names; `attributes.X` columns go into `attributes`, and `attributes` / `payload`
columns may hold JSON objects. A record without `event_id` gets one derived from its content,
so re-importing the same file stores nothing twice. `.gz` files are read transparently.

Reading is streamed and bounded: a line longer than `MAX_LINE_BYTES` (a gzip bomb inflating
to one 200 MB line) is skipped without being held and reported with a reason; a line with
bytes that are not UTF-8 rejects only that line; JSONL lines go through the same record
decoder as the events API (depth, numbers, fields named). `import_files` reports errors per
file and line; the drop folder lives in `dropfolder`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from collectors.bodies import decode_record

SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
MAX_LINE_BYTES = 1 << 20  # one record per line: 1 MiB is far above any real event
_SKIP_CHUNK = 1 << 16
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
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


def open_binary(path: Path, *, follow_symlinks: bool = True) -> IO[bytes]:
    """The file's bytes, inflated when it ends in `.gz`; never through a symlink when
    `follow_symlinks` is false (O_NOFOLLOW: no race between a check and the open)."""
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    raw = os.fdopen(os.open(path, flags), "rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw  # type: ignore[return-value]


class _Lines:
    """Lines of a byte stream, each at most `limit` bytes; longer ones are skipped in chunks
    (never held whole) and their numbers kept in `too_long`."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream, self.limit = stream, limit
        self.number = 0
        self.too_long: list[int] = []

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.stream.readline(self.limit + 1)
            if not line:
                return
            self.number += 1
            if len(line) > self.limit and not line.endswith(b"\n"):
                while (rest := self.stream.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                    pass
                self.too_long.append(self.number)
                yield b"\n"  # keeps the numbering of the lines after it
                continue
            if self.number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # UTF-8 byte order mark
            yield line

    def text(self) -> Iterator[str]:
        """Decoded lines; undecodable bytes become surrogates so the row that holds them,
        and only that row, is rejected."""
        for line in self:
            yield line.decode("utf-8", "surrogateescape")


def _too_long(number: int, limit: int) -> tuple[int, None, str]:
    return number, None, f"line longer than {limit} bytes: skipped (one record per line)"


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def file_kind(path: Path) -> str:
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
        if not value.isascii() and _not_utf8(value):
            raise ValueError(f"{column}: not valid UTF-8")
        if column.startswith(("attributes.", "attr.")):
            attributes[column.split(".", 1)[1]] = value
        elif column in ("attributes", "payload"):
            try:
                record[column] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{column}: not valid JSON ({exc})") from None
        elif column == "latency_ms":
            if not _NUMBER.fullmatch(value.strip()):  # float() would take `١٢` and `1_000`
                raise ValueError(f"latency_ms: {value[:40]!r} is not a number")
            record[column] = float(value)
        else:
            record[column] = value
    if attributes:
        merged = record.get("attributes") if isinstance(record.get("attributes"), dict) else {}
        record["attributes"] = {**merged, **attributes}
    return record


def read_records(
    path: Path, *, max_line_bytes: int = MAX_LINE_BYTES, follow_symlinks: bool = True
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, record or None, error or None) for every record of a file."""
    kind = file_kind(path)
    try:
        with open_binary(path, follow_symlinks=follow_symlinks) as stream:
            lines = _Lines(stream, max_line_bytes)
            if kind == "jsonl":
                yield from _jsonl(lines)
            else:
                yield from _csv(lines)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise FileFormatError(f"damaged gzip file ({exc})") from None


def _jsonl(lines: _Lines) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for line in lines:
        if lines.too_long and lines.too_long[-1] == lines.number:
            yield _too_long(lines.number, lines.limit)
            continue
        if not line.strip():
            continue
        value, error = decode_record(line)
        if error is not None:
            yield lines.number, None, error
        elif not isinstance(value, dict):
            yield lines.number, None, f"expected a JSON object, got {type(value).__name__}"
        else:
            yield lines.number, value, None


def _csv(lines: _Lines) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    csv.field_size_limit(max(csv.field_size_limit(), lines.limit))
    # strict: a quote left open is an error for its row, not a cell swallowing every later line
    reader = csv.DictReader(lines.text(), strict=True)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise FileFormatError(f"bad CSV header: {exc}") from None
    if lines.too_long and lines.too_long[0] == 1:
        raise FileFormatError(f"header line longer than {lines.limit} bytes")
    if not header:
        raise FileFormatError("empty CSV file (no header row)")
    if any(_not_utf8(name) for name in header):
        raise FileFormatError("header row is not valid UTF-8")
    names = [name.strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # which of two `correlation_id` cells counts would be a silent guess
        raise FileFormatError(f"header names a column twice: {', '.join(repeated)[:200]}")
    reported = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row, error = None, f"bad CSV row: {exc}"
        else:
            error = None
        while reported < len(lines.too_long):
            yield _too_long(lines.too_long[reported], lines.limit)
            reported += 1
        if row is None:
            yield reader.line_num, None, error
            continue
        try:
            yield reader.line_num, _csv_record(row, reader.line_num), None
        except ValueError as exc:
            yield reader.line_num, None, str(exc)
    for number in lines.too_long[reported:]:
        yield _too_long(number, lines.limit)


def import_file(
    path: Path,
    sink: Sink,
    *,
    batch_size: int = 5000,
    on_records: Callable[[int], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    follow_symlinks: bool = True,
) -> FileReport:
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
        for number, record, error in read_records(path, max_line_bytes=max_line_bytes, follow_symlinks=follow_symlinks):
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
