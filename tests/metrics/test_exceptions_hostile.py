"""The exception desk under hostile input: bursts larger than a tick's page, pathological messages."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

import metrics.definitions
from metrics import exceptionrules, exceptions, signatures
from tests.metrics.helpers import NOW, ev, ingest, minutes

RULES = exceptionrules.load()
DEFS = metrics.definitions.load()


def failed(cid: str, at: Any, message: str) -> dict[str, Any]:
    e = ev(cid, "order.erp_posted", at, status="error")
    e["error_message"] = message
    return e


def occurrences(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM exception_occurrences")).scalar_one()


def test_a_burst_larger_than_a_page_in_one_ingest_is_filed_whole(engine, settings, monkeypatch) -> None:
    # one POST of many failures shares one received_at: more of them than a page must not stall the job
    monkeypatch.setattr(exceptions, "BATCH", 5)
    t0 = NOW - minutes(30)
    ingest(engine, settings, [failed(f"o{i}", t0, "SKU not found") for i in range(12)], now=t0)
    for k in range(3):
        exceptions.refresh(engine, DEFS, NOW + minutes(k), RULES)
    assert occurrences(engine) == 12
    # and what comes later is still read
    ingest(engine, settings, [failed(f"n{i}", NOW + minutes(4), "SKU not found") for i in range(3)], now=NOW + minutes(4))
    exceptions.refresh(engine, DEFS, NOW + minutes(5), RULES)
    assert occurrences(engine) == 15


def test_more_failures_within_the_lag_than_a_page_do_not_stall(engine, settings, monkeypatch) -> None:
    monkeypatch.setattr(exceptions, "BATCH", 4)
    t0 = NOW - minutes(30)
    for i in range(10):  # ten ingests a few seconds apart: all inside the job's 2-minute lag
        ingest(engine, settings, [failed(f"o{i}", t0, "ERP timed out")], now=t0 + minutes(i / 10))
    for k in range(4):
        exceptions.refresh(engine, DEFS, t0 + minutes(2 + k), RULES)
    assert occurrences(engine) == 10


def test_normalising_a_hostile_message_takes_linear_time() -> None:
    hostile = ["a" * 16_384, "a@" * 8_192, "x" * 16_000 + "@", "f" * 16_384, "'" + "b" * 16_000, "é" * 16_384]
    for text in hostile:
        started = time.perf_counter()
        signatures.normalise(text)
        assert time.perf_counter() - started < 0.05, text[:10]


def test_normalising_still_strips_what_varies() -> None:
    assert signatures.normalise("Order 112-3345 failed: SKU 'AB-12' not found (id=9f8e1)") == \
        "order <n> failed: sku <q> not found (<n>)"
    assert signatures.normalise("mail to dana@example.com and bob.x@shop.co.uk bounced") == \
        "mail to <email> and <email> bounced"
    assert signatures.normalise("order ١٢٣٤٥ and １２ failed; v2 ok") == "order <n> and <n> failed; <n> ok"
    assert signatures.normalise("abc@def") == "abc@def"  # no domain: not an email


def test_messages_differing_only_by_a_masked_name_are_one_group() -> None:
    # the store masks names after a cue word to initials ("D*** S***"): the initials must not split groups
    assert signatures.normalise("customer D*** S*** is blocked") == signatures.normalise("customer M*** J*** is blocked")
