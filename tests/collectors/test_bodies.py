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
        (b'{"a": "\xff"}\n{"a": 2}', None, [None, {"a": 2}], {0: "line 1: a: not valid UTF-8"}),
        (b'[{"a": "ok"}, {"a": "\xc3\x28"}]', None, [{"a": "ok"}], {1: "a: not valid UTF-8"}),
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


def test_every_gzip_member_is_decoded():
    # `cat a.gz b.gz`: two members; the second used to be dropped silently (issue 10 #5)
    body = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"a": 2}\n')
    assert decompress(body, "gzip", 1000) == b'{"a": 1}\n{"a": 2}\n'
    records, errors = parse_events(decompress(body, "gzip", 1000), "application/x-ndjson")
    assert records == [{"a": 1}, {"a": 2}] and errors == {}


def test_the_inflate_limit_holds_across_gzip_members():
    member = gzip.compress(b"x" * 600)
    assert len(decompress(member + member, "gzip", 1200)) == 1200
    with pytest.raises(BodyTooLarge):
        decompress(member + member, "gzip", 1199)
    with pytest.raises(BodyTooLarge):
        decompress(member * 50, "gzip", 10_000)
    with pytest.raises(BodyError, match="not valid gzip"):
        decompress(member + b"garbage", "gzip", 10_000)
    with pytest.raises(BodyError, match="truncated"):
        decompress(member[:-8], "gzip", 10_000)


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("levels", [33, 1000, 1023, 1100, 5000])
def test_deep_records_are_rejected_alone(levels):
    body = b'[{"a": 1}, {"payload": ' + _nested(levels) + b'}, {"a": 3}]'
    records, errors = parse_events(body)
    if levels < 1023:  # orjson reads it; the depth limit is applied where the record is masked
        assert len(records) == 3 and errors == {}
        return
    assert errors == {1: "payload: nested deeper than 32 levels"}
    assert [records[0], records[2]] == [{"a": 1}, {"a": 3}]


def test_deep_ndjson_line_is_rejected_alone():
    body = b'{"a": 1}\n{"attributes": {"x": ' + _nested(2000) + b'}}\n{"a": 3}\n'
    records, errors = parse_events(body, "application/x-ndjson")
    assert errors == {1: "line 2: attributes: nested deeper than 32 levels"}
    assert records[0] == {"a": 1} and records[2] == {"a": 3}


@pytest.mark.parametrize(
    ("element", "error"),
    [
        (b'{"attributes": {"total": 123456789012345678901234567890}, "x": 1e400}',
         "attributes.total: integer of 30 digits is outside the 64-bit range; send it as a string"),
        (b'{"payload": {"v": [1, 1e400]}}',
         "payload.v[1]: number 1e400 is outside the range stored exactly (±2^63, finite); send it as a string"),
        (b'{"payload": {"v": -1e400}}',
         "payload.v: number -1e400 is outside the range stored exactly (±2^63, finite); send it as a string"),
        (b'{"payload": {"v": NaN}}', "payload.v: NaN is not a JSON number"),
        (b'{"attributes": {"note": "caf\xe9"}}', "attributes.note: not valid UTF-8"),
        (b'{"attributes": {"t": "' + b"9" * 140_000 + b'", "n": ' + b"9" * 140_000 + b"}}",
         "attributes.n: integer of 140000 digits is outside the 64-bit range; send it as a string"),
    ],
)
def test_unstorable_values_reject_their_record_naming_the_field(element, error):
    # the whole body fails orjson, so each record is decoded on its own (issue 10 #7)
    records, errors = parse_events(b'[{"a": 1}, ' + element + b"]")
    assert errors == {1: error}
    assert records[0] == {"a": 1}


def test_events_wrapper_falls_back_per_record():
    records, errors = parse_events(b'{"events": [{"a": 1}, {"attributes": {"x": "\xff"}}]}')
    assert records[0] == {"a": 1} and errors == {1: "attributes.x: not valid UTF-8"}


def test_cut_deep_replaces_only_what_is_deeper_than_the_limit():
    from collectors.bodies import cut_deep

    body = b'{"a": [[1, "[{"], {"b": [2]}], "c": 3}'
    assert cut_deep(body, 2, "X") == (b'{"a": ["X", "X"], "c": 3}', True)
    assert cut_deep(body, 4, "X") == (body, False)
