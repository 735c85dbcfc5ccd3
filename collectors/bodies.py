"""Request bodies: bounded decompression and parsing of canonical-event bodies. Pure.

Accepts a JSON array, `{"events": [...]}`, a single object, or NDJSON, plain or compressed
(every member of a multi-member gzip body). A record that cannot be decoded (bad JSON, invalid
UTF-8 inside a string, nesting deeper than `limits.MAX_DEPTH`, a number that cannot be stored
exactly) becomes a per-record error at its index naming the field, so the good records of the
same body still land. Only a body whose outer structure is unreadable is a `BodyError`.
Nothing here touches the database.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import msgspec
import orjson

from controltower import limits
from controltower.errors import ControlTowerError, EventError
from controltower.event import EventRecord


class BodyError(ControlTowerError):
    """The body as a whole cannot be used (HTTP 400)."""


class BodyTooLarge(ControlTowerError):
    """The body, or what it inflates to, is larger than the limit (HTTP 413)."""


_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
# JSON tokens that matter for structure; strings are skipped whole (escapes included).
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


def check_values(body: bytes, limit: int) -> None:
    """BodyTooLarge when `body` may hold more than `limit` JSON values, before it is parsed.

    Parsing costs memory per value, not per byte: 64 MB of `{},{},…` is 21 million dicts
    (about 1.5 GB). Every value after the first follows a `,`, `[`, `{` or a newline, so their
    count bounds the values (separators inside strings only make the bound stricter)."""
    bound = body.count(b",") + body.count(b"[") + body.count(b"{") + body.count(b"\n")
    if bound > limit:
        raise BodyTooLarge(f"body holds up to {bound} JSON values, more than the {limit} parsed per request; "
                           "send smaller batches")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Inflate gzip/deflate bodies without ever holding more than `limit` bytes of output.

    A gzip body may hold several members (concatenated `gzip` outputs, as `cat a.gz b.gz`
    makes): every member is inflated, and the limit holds for their sum.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"body is {len(body)} bytes, more than the {limit} allowed")
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BodyError(f'Content-Encoding "{encoding}" is not supported (use gzip, deflate or none)')
    gzip_wbits = 16 + zlib.MAX_WBITS
    out = bytearray()
    rest = body
    try:
        while True:
            inflater = zlib.decompressobj(gzip_wbits if encoding != "deflate" else zlib.MAX_WBITS)
            out += inflater.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or inflater.unconsumed_tail:
                raise BodyTooLarge(f"body inflates to more than the {limit} bytes allowed")
            out += inflater.flush()
            if not inflater.eof:
                raise BodyError(f"body is not valid {encoding} data: truncated stream")
            rest = inflater.unused_data
            if encoding == "deflate" or not rest.strip(b"\0"):
                break  # trailing NUL padding after the last member is tolerated, like gzip(1)
    except zlib.error as exc:
        raise BodyError(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"body inflates to more than the {limit} bytes allowed")
    return bytes(out)


class _BadNumber:
    """A number the stdlib parser met that cannot be stored exactly (kept for the message)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _parse_int(text: str) -> Any:
    if len(text.lstrip("-")) > 19:
        return _BadNumber(f"integer of {len(text.lstrip('-'))} digits is outside the 64-bit range; send it as a string")
    value = int(text)
    problem = limits.number_problem(value)
    return _BadNumber(problem) if problem else value


def _parse_float(text: str) -> Any:
    value = float(text)
    if limits.number_problem(value) is None:
        return value
    return _BadNumber(f"number {text[:40]} is outside the range stored exactly (±2^63, finite); send it as a string")


def _parse_constant(text: str) -> Any:
    return _BadNumber(f"{text} is not a JSON number")


def _first_problem(value: Any, where: str) -> str | None:
    """The first field holding an unstorable number or invalid UTF-8, with the reason."""
    if isinstance(value, _BadNumber):
        return f"{where or 'record'}: {value.problem}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where or 'record'}: not valid UTF-8"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _first_problem(key, f"{where} (a key)" if where else "key") or _first_problem(item, limits.path(where, key))
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _first_problem(item, limits.path(where, index))
            if problem:
                return problem
    return None


def _too_deep(raw: bytes) -> str | None:
    """The top-level field nested deeper than the limit, scanning tokens (no recursion)."""
    depth = 0
    key: bytes | None = None
    expect_key = False
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            expect_key = token == b"{" and depth == 1
            if depth > limits.MAX_DEPTH + 1:  # the record itself is level 1
                return str(limits.too_deep(key.decode("utf-8", "replace")[1:-1][:40] if key else "record"))
        elif token in (b"}", b"]"):
            depth -= 1
        elif token == b",":
            expect_key = depth == 1
        elif token == b":":
            expect_key = False
        elif depth == 1 and expect_key:
            key = token
    return None


def cut_deep(body: bytes, limit: int, mark: str) -> tuple[bytes, bool]:
    """`body` with every object/array opening deeper than `limit` replaced by the JSON string
    `"mark"` (`mark` is JSON text), scanning tokens without recursion; and whether any was cut.
    For documents deeper than a parser takes, so only the part holding the mark is rejected."""
    out = bytearray()
    depth, start, copied = 0, -1, 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            if depth == limit + 1:
                start = match.start()
        elif token in (b"}", b"]"):
            if depth == limit + 1 and start >= 0:
                out += body[copied:start] + b'"' + mark.encode() + b'"'
                copied, start = match.end(), -1
            depth -= 1
    return bytes(out + body[copied:]), copied > 0


def decode_record(raw: bytes) -> tuple[Any, str | None]:
    """One JSON record from its bytes: (value, None) or (None, reason naming the field)."""
    deep = _too_deep(raw) if raw.count(b"{") + raw.count(b"[") > limits.MAX_DEPTH else None
    if deep:
        return None, deep
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first = str(exc)
    else:
        try:
            for name in ("attributes", "payload"):
                if isinstance(value, dict) and isinstance(value.get(name), dict | list):
                    limits.check(value[name], name)
        except EventError as exc:
            return None, str(exc)
        return value, None
    # The stdlib parser keeps what orjson refuses (invalid UTF-8 as surrogates, huge numbers)
    # visible, so the reason can name the field instead of blaming the whole record.
    try:
        value = json.loads(
            raw.decode("utf-8", "surrogateescape"),
            parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
        )
    except (ValueError, RecursionError):
        return None, f"invalid JSON: {first}"
    return None, _first_problem(value, "") or f"invalid JSON: {first}"


def _ndjson(body: bytes) -> tuple[list[Any], dict[int, str]]:
    records: list[Any] = []
    errors: dict[int, str] = {}
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        value, error = decode_record(line)
        if error:
            errors[len(records)] = f"line {number}: {error}"
        records.append(value)
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


def _elements(body: bytes) -> list[bytes] | None:
    """The raw bytes of each element of the body's event array (a top-level array, or the
    `events` array of a top-level object), or None when the outer structure is broken."""
    text = body.strip()
    if text[:1] == b"{":
        match = re.match(rb'\{\s*"events"\s*:\s*', text)
        if not match or not text.endswith(b"}"):
            return None  # one object without "events": decode_record handles it as one record
        text = text[match.end():-1].rstrip()
    if text[:1] != b"[" or text[-1:] != b"]":
        return None
    elements: list[bytes] = []
    depth, start = 0, 1
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                if text[start : match.start()].strip():
                    elements.append(text[start : match.start()])
                return elements if match.end() == len(text) else None
        elif token == b"," and depth == 1:
            elements.append(text[start : match.start()])
            start = match.end()
    return None


def parse_events(body: bytes, content_type: str | None = None) -> tuple[list[Any], dict[int, str]]:
    """Return (records, errors by index). Raises BodyError when nothing at all can be read."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not body.strip():
        raise BodyError("body is empty: send a JSON array of events, {\"events\": [...]}, or NDJSON")
    if kind in _NDJSON_TYPES:
        return _ndjson(body)
    try:
        return _unwrap(orjson.loads(body)), {}
    except orjson.JSONDecodeError as exc:
        whole_error = str(exc)
    stripped = body.strip()
    if b"\n" in stripped and stripped[:1] == b"{" and not stripped.startswith(b'{"events"'):
        records, errors = _ndjson(body)
        if len(errors) < len(records):
            return records, errors
    elements = _elements(body)
    if elements is None:
        if stripped[:1] == b"{":
            value, error = decode_record(stripped)
            if error and not error.startswith("invalid JSON"):
                return [None], {0: error}
        raise BodyError(f"body is not valid JSON: {whole_error}")
    records, errors = [], {}
    for index, raw in enumerate(elements):
        value, error = decode_record(raw)
        if error:
            errors[index] = error
        records.append(value)
    return records, errors



_RECORDS = list[EventRecord]


def decode_events(body: bytes, content_type: str | None = None) -> tuple[list[Any], dict[int, str]]:
    """`parse_events`, with each record in the canonical shape checked in one C pass into an
    `EventRecord` (types, lengths, status, latency); any other record stays the dict
    `parse_events` gave, and validation names its problem. The JSON is read exactly as before
    (orjson: an integer past 64 bits is a float, as the stored-number rules expect)."""
    records, errors = parse_events(body, content_type)
    try:
        return msgspec.convert(records, _RECORDS), errors
    except msgspec.ValidationError:
        pass
    typed: list[Any] = []
    for record in records:
        try:
            typed.append(msgspec.convert(record, EventRecord) if type(record) is dict else record)
        except msgspec.ValidationError:
            typed.append(record)
    return typed, errors
