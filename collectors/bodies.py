"""Request bodies: bounded decompression and parsing of canonical-event bodies. Pure.

Accepts a JSON array, `{"events": [...]}`, a single object, or NDJSON. A record that cannot be
decoded (bad JSON line, invalid UTF-8 inside a string) becomes a per-record error at its
index, so the good records of the same body still land. Nothing here touches the database.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson

from controltower.errors import ControlTowerError


class BodyError(ControlTowerError):
    """The body as a whole cannot be used (HTTP 400)."""


class BodyTooLarge(ControlTowerError):
    """The body, or what it inflates to, is larger than the limit (HTTP 413)."""


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Inflate gzip/deflate bodies without ever holding more than `limit` bytes of output."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"body is {len(body)} bytes, more than the {limit} allowed")
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise BodyError(f'Content-Encoding "{encoding}" is not supported (use gzip, deflate or none)')
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"body inflates to more than the {limit} bytes allowed")
        out += inflater.flush()
    except zlib.error as exc:
        raise BodyError(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"body inflates to more than the {limit} bytes allowed")
    return out


def _is_valid_utf8(record: Any) -> bool:
    try:
        orjson.dumps(record)
    except TypeError:
        return False
    return True


def _ndjson(body: bytes) -> tuple[list[Any], dict[int, str]]:
    records: list[Any] = []
    errors: dict[int, str] = {}
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        index = len(records)
        try:
            records.append(orjson.loads(line))
            continue
        except orjson.JSONDecodeError as exc:
            records.append(None)
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                errors[index] = f"line {number}: not valid UTF-8"
            else:
                errors[index] = f"line {number}: invalid JSON: {exc}"
    return records, errors


def _unwrap(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if "events" in doc:
            events = doc["events"]
            if not isinstance(events, list):
                raise BodyError('"events" must be an array of event objects')
            return events
        return [doc]
    raise BodyError('body must be a JSON array of events, {"events": [...]}, or NDJSON')


def parse_events(body: bytes, content_type: str | None = None) -> tuple[list[Any], dict[int, str]]:
    """Return (records, errors by index). Raises BodyError when nothing at all can be read."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not body.strip():
        raise BodyError("body is empty: send a JSON array of events, {\"events\": [...]}, or NDJSON")
    if kind in ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"):
        return _ndjson(body)
    try:
        return _unwrap(orjson.loads(body)), {}
    except orjson.JSONDecodeError as exc:
        whole_error = str(exc)
    if b"\n" in body.strip():
        records, errors = _ndjson(body)
        if len(errors) < len(records):
            return records, errors
    # Invalid UTF-8 inside one string must not sink the whole array: decode leniently, then
    # reject exactly the records that carry the undecodable bytes.
    try:
        doc = json.loads(body.decode("utf-8", "surrogateescape"))
    except ValueError:
        raise BodyError(f"body is not valid JSON: {whole_error}") from None
    records = _unwrap(doc)
    errors = {i: "record contains invalid UTF-8" for i, r in enumerate(records) if not _is_valid_utf8(r)}
    return records, errors
