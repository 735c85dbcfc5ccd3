"""The drop folder: poll a folder, import each complete feed file, file it away.

Processed files move to `processed/`, files with bad records to `quarantine/` with a
`NAME.errors.txt` beside them; good records of a file with bad ones are still stored. When the
database is unavailable a file stays where it is and is retried on the next poll.

Anyone who can write to the folder is untrusted: symlinks are never followed (a symlinked
feed is skipped with a logged reason, files are opened with O_NOFOLLOW, `processed/` and
`quarantine/` must be real folders), and the errors file is written atomically through a
fresh temp file (O_CREAT|O_EXCL|O_NOFOLLOW) renamed into place, so a link planted at its path
is replaced, never written through. One file that fails unexpectedly is quarantined with the
reason and the watcher goes on with the next.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from collectors.files import FileFormatError, FileReport, Sink, file_kind, import_file
from controltower.db import is_unavailable
from controltower.errors import StorageUnavailable

log = logging.getLogger(__name__)
SETTLE_SECONDS = 3.0  # a feed untouched this long (and for one poll) is taken as complete


def _unique(target: Path) -> Path:
    if not os.path.lexists(target):
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{stamp}-{target.name}")


def write_atomically(target: Path, text: str) -> None:
    """Write `text` to `target` via a new temp file in the same folder and `os.replace`.

    The temp file is created exclusively and without following links; `os.replace` swaps the
    directory entry, so whatever sat at `target` (a symlink included) is replaced, not followed.
    """
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _folder(parent: Path, name: str) -> Path:
    """`parent/name` as a real folder (created when missing); a symlink there is refused."""
    path = parent / name
    try:
        path.mkdir()
    except FileExistsError:
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode):
            raise NotADirectoryError(f"{path} is not a real folder (a symlink or a file); refusing to move files there") from None
    return path


def _skip(path: Path, reason: str, warned: set[str] | None) -> None:
    if warned is None or path.name not in warned:
        log.warning("%s skipped: %s", path.name, reason)
        if warned is not None:
            warned.add(path.name)


def watch_once(
    folder: Path, sink: Sink, *, sizes: dict[Path, tuple[int, int]] | None = None,
    warned: set[str] | None = None, now: float | None = None, settle: float = SETTLE_SECONDS,
) -> list[FileReport]:
    """Process every complete file in the drop folder once.

    With `sizes` (carried between polls), a file is taken only once its size and modification
    time have stayed the same for one poll and, given `now` (wall clock, like mtimes), it was
    last written at least `settle` seconds ago: a feed still being written, even by a writer
    pausing longer than one poll, is not imported half-way (and the rest filed into nowhere).
    Writers that pause longer should write under a dot-name and rename. `warned` (carried too)
    logs each skipped file once instead of every poll.
    """
    try:  # before importing anything: a file that cannot be filed away would be re-imported every poll
        _folder(folder, "processed"), _folder(folder, "quarantine")
    except OSError as exc:
        _skip(folder, str(exc), warned)
        return []
    reports = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        try:
            file_kind(path)
        except FileFormatError:
            continue
        if stat.S_ISLNK(mode):
            _skip(path, "a symlink (the drop folder never follows links)", warned)
            continue
        if not stat.S_ISREG(mode):
            continue
        if sizes is not None:
            info = os.lstat(path)
            seen = (info.st_size, info.st_mtime_ns)
            if sizes.get(path) != seen or (now is not None and now - info.st_mtime < settle):
                sizes[path] = seen
                continue
            sizes.pop(path, None)
        try:
            report = import_file(path, sink, follow_symlinks=False)
        except StorageUnavailable as exc:
            log.warning("%s left in place, will retry: %s", path.name, exc)
            break
        except Exception as exc:  # one poisoned file must not stop the watcher
            if is_unavailable(exc):
                log.warning("%s left in place, will retry: %s", path.name, exc)
                break
            log.exception("%s could not be imported", path.name)
            report = FileReport(path, failure=f"could not be imported ({type(exc).__name__}: {str(exc)[:200]})")
        try:
            _file_away(folder, path, report)
        except OSError as exc:
            log.error("%s could not be moved: %s", path.name, exc)
            continue
        reports.append(report)
    return reports


def _file_away(folder: Path, path: Path, report: FileReport) -> None:
    if report.ok:
        path.rename(_unique(_folder(folder, "processed") / path.name))
        return
    target = _unique(_folder(folder, "quarantine") / path.name)
    path.rename(target)
    write_atomically(target.with_name(target.name + ".errors.txt"), report.error_text())
    log.warning("%s quarantined: %d bad record(s)%s", path.name, len(report.errors),
                f", {report.failure}" if report.failure else "")


def watch_folder(
    folder: Path,
    sink: Sink,
    *,
    stop: threading.Event,
    interval: float = 2.0,
    on_report: Callable[[FileReport], None] | None = None,
) -> None:
    sizes: dict[Path, int] = {}
    warned: set[str] = set()
    while not stop.is_set():
        for report in watch_once(folder, sink, sizes=sizes, warned=warned, now=time.time(), settle=max(interval, SETTLE_SECONDS)):
            if on_report:
                on_report(report)
        stop.wait(interval)
