"""Body parsing and bounded decompression, table-driven. Pure."""

from __future__ import annotations

import gzip
import zlib

import pytest

from collectors.bodies import BodyError, BodyTooLarge, decompress, parse_events


@pytest.mark.parametrize(
    ("body", "content_type", "records", "errors"),
    [
        (b'[{"a": 1}, {"a": 2}]', "application/json", [{"a": 1}, {"a": 2}], {}),
        (b'{"events": [{"a": 1}]}', None, [{"a": 1}], {}),
        (b'{"a": 1}', None, [{"a": 1}], {}),
        (b'{"a": 1}\n\n{"a": 2}\n', None, [{"a": 1}, {"a": 2}], {}),
        (b'{"a": 1}\n{bad\n{"a": 3}', "application/x-ndjson", [{"a": 1}, None, {"a": 3}], {1: "line 2: invalid JSON"}),
        (b'{"a": "\xff"}\n{"a": 2}', None, [None, {"a": 2}], {0: "line 1: not valid UTF-8"}),
        (b'[{"a": "ok"}, {"a": "\xc3\x28"}]', None, [{"a": "ok"}], {1: "record contains invalid UTF-8"}),
    ],
)
def test_parse_events(body, content_type, records, errors):
    got, got_errors = parse_events(body, content_type)
    assert {i: e[: len(errors[i])] for i, e in got_errors.items()} == errors
    assert [r for i, r in enumerate(got) if i not in got_errors] == [r for r in records if r is not None]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b"42", "body must be a JSON array"),
        (b'{"events": 3}', '"events" must be an array'),
        (b"[1, 2", "body is not valid JSON"),
    ],
)
def test_unusable_bodies(body, message):
    with pytest.raises(BodyError, match=message):
        parse_events(body)


def test_decompress_bounds():
    data = b"x" * 1000
    assert decompress(gzip.compress(data), "gzip", 1000) == data
    assert decompress(zlib.compress(data), "deflate", 1000) == data
    with pytest.raises(BodyTooLarge):
        decompress(gzip.compress(data), "gzip", 999)
    with pytest.raises(BodyTooLarge):
        decompress(data, None, 999)
    with pytest.raises(BodyError, match="not valid gzip"):
        decompress(b"not gzip", "gzip", 1000)
    with pytest.raises(BodyError, match='"br" is not supported'):
        decompress(data, "br", 1000)
