"""Hostile records for the soak: every kind of poison issue #10 found, made from a normal record.

`poison(record, kind, rng)` returns `(record, must_reject)`: a copy of a good simulator record
turned hostile, and whether the collector must reject it (a record it may store, masked or as
text, says False). The soak mixes them into normal traffic and checks that no good neighbour is
lost, nothing is stored twice, no hostile record earns a 5xx, and alerting keeps running.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

ZERO_WIDTH = "\u200b"
FULL_WIDTH_EMAIL = "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ"


DEEP = "__ct_deep_{}__"  # stands for a payload nested that deep; `encode` writes the text itself


def _deep(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    # JSON encoders refuse to write 1,000 levels (recursion), so the body text is spliced in by `encode`
    record["payload"] = DEEP.format(rng.choice([200, 1000]))
    return record, True


def encode(batch: list[dict[str, Any]]) -> bytes:
    """The batch as a JSON body, with each deep-payload marker replaced by that many nested objects."""
    text = json.dumps(batch, ensure_ascii=False)
    for depth in (200, 1000):
        marker = json.dumps(DEEP.format(depth))
        if marker in text:
            text = text.replace(marker, '{"n":' * depth + '"leaf"' + "}" * depth)
    return text.encode("utf-8", "surrogatepass")


def _huge_amount(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    # 140,000 digits broke the alerts' impact query for every rule; it may be stored, never summed
    record.setdefault("attributes", {})["order_total"] = "9" * 140_000
    return record, False


def _bad_deadline(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    record.setdefault("attributes", {})["expected_ship_date"] = rng.choice(
        ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"]
    )
    return record, True


def _fan_out(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    record.setdefault("attributes", {})["sku"] = [f"SKU-{i}" for i in range(5_000)]
    return record, True


def _pii(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    attrs = record.setdefault("attributes", {})
    attrs[f"buyer{ZERO_WIDTH}__name"] = "Jane Doe"
    attrs["contact"] = [{"name": "phone", "value": "+1 206 555 0143"}]
    attrs["card"] = "4111 1111 1111 1111"
    record["error_message"] = f"customer {FULL_WIDTH_EMAIL} rejected, call +1 206 555 0143"
    return record, False


def _markup(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    record["error_message"] = "[Re-authenticate here](https://evil.example/login) ![t](https://evil.example/pixel.png)"
    record["order_id"] = "=HYPERLINK(\"https://evil.example\")"
    record.setdefault("attributes", {})["note"] = "`x` <script>alert(1)</script>"
    return record, False


def _extreme_numbers(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    record.setdefault("attributes", {})["quantity"] = rng.choice([10**30, -(10**30), 1.7976931348623157e308, -0.0])
    return record, False


def _confusable_ids(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    # Cyrillic 'о' and a right-to-left override in ids: stored verbatim, never merged with the Latin one
    record["correlation_id"] = record["correlation_id"].replace("o", "\u043e") + "\u202e"
    record["event_id"] = record["event_id"] + "-\u043e"
    return record, False


def _nul(record: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], bool]:
    record["error_message"] = "bad\u0000byte"
    return record, True


KINDS = {
    "deep": _deep,
    "huge_amount": _huge_amount,
    "bad_deadline": _bad_deadline,
    "fan_out": _fan_out,
    "pii": _pii,
    "markup": _markup,
    "extreme_numbers": _extreme_numbers,
    "confusable_ids": _confusable_ids,
    "nul": _nul,
}


def poison(record: dict[str, Any], kind: str, rng: random.Random) -> tuple[dict[str, Any], bool]:
    """A hostile copy of `record` (its ids suffixed so it never collides with the good one)."""
    hostile = copy.deepcopy(record)
    hostile["event_id"] = f"{hostile['event_id']}~{kind}"
    return KINDS[kind](hostile, rng)


def changed_duplicate(record: dict[str, Any]) -> dict[str, Any]:
    """The same (correlation_id, event_id) with other content: must change nothing stored."""
    other = copy.deepcopy(record)
    other["stage"] = "erp_posted" if record.get("stage") != "erp_posted" else "received"
    other["order_id"] = f"{record.get('order_id') or 'X'}-REWRITTEN"
    return other
