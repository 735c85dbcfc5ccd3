"""The grouping job against real seeded events: groups, occurrences, reopen, auto-resolve, snooze wake."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

import metrics.definitions
from controltower import exceptionops
from metrics import exceptionrules, exceptions, jobs
from tests.metrics.helpers import NOW, ev, ingest, minutes

RULES = exceptionrules.load()
DEFS = metrics.definitions.load()


def failed(cid: str, milestone: str, at: Any, message: str, *, code: str | None = None, status: str = "error",
           channel: str = "amazon", n: int = 0) -> dict[str, Any]:
    e = ev(cid, milestone, at, channel=channel, status=status, n=n)
    e["error_message"] = message
    if code:
        e["error_code"] = code
    return e


def tick(engine, at) -> dict[str, int]:
    return exceptions.refresh(engine, DEFS, at, RULES)


def groups(engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM exception_groups ORDER BY id"))]


def actions(engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT group_id, actor, action, detail->>'resolution' FROM exception_actions ORDER BY id"))]


def test_one_failure_with_different_ids_is_one_group_classified(engine, settings) -> None:
    t0 = NOW - minutes(30)
    ingest(engine, settings, [
        ev("o1", "order.received", t0), ev("o2", "order.received", t0), ev("o3", "order.received", t0),
        failed("o1", "order.erp_posted", t0 + minutes(1), "Order 112-3345 failed: SKU 'AB-12' not found (id=9f8e1)"),
        failed("o2", "order.erp_posted", t0 + minutes(2), "Order 554-1 failed: SKU 'ZZ' not found (id=77aa2)"),
        failed("o3", "order.erp_posted", t0 + minutes(3), "Connection refused", code="ECONNREFUSED",
               status="dead_letter"),
        failed("o3", "order.erp_posted", t0 + minutes(3), "Connection refused", code="ECONNREFUSED", channel="ebay",
               n=1),
    ], now=NOW)
    stats = tick(engine, NOW)
    assert stats["exception_groups_new"] == 3
    got = {(g["channel"], g["message"]): g for g in groups(engine)}
    sku = got[("amazon", "order <n> failed: sku <q> not found (<n>)")]
    assert (sku["class"], sku["occurrence_count"], sku["open_count"], sku["state"]) == ("mapping", 2, 2, "open")
    assert sku["milestone"] == "order.erp_posted"
    assert sku["first_seen_at"] == t0 + minutes(1) and sku["last_seen_at"] == t0 + minutes(2)
    conn_amazon = got[("amazon", "connection refused")]
    assert (conn_amazon["class"], conn_amazon["error_code"]) == ("connection", "econnrefused")
    assert ("ebay", "connection refused") in got  # the channel is part of the signature
    with engine.connect() as conn:
        occ = conn.execute(sa.text("SELECT correlation_id, source FROM exception_occurrences WHERE group_id = :g "
                                   "ORDER BY correlation_id"), {"g": sku["id"]}).all()
    assert [tuple(o) for o in occ] == [("o1", "error"), ("o2", "error")]
    # idempotent: the same failures read again (within the lag) change nothing
    again = tick(engine, NOW + minutes(1))
    assert again["exception_groups_new"] == 0
    assert [(g["occurrence_count"], g["state"]) for g in groups(engine)] == [(g["occurrence_count"], g["state"])
                                                                            for g in got.values()]


def test_group_resolves_when_every_transaction_reaches_the_milestone_and_reopens(engine, settings) -> None:
    t0 = NOW - minutes(30)
    ingest(engine, settings, [
        ev("p1", "order.received", t0), ev("p2", "order.received", t0),
        failed("p1", "order.erp_posted", t0 + minutes(1), "ERP rejected: credit limit exceeded for 4411"),
        failed("p2", "order.erp_posted", t0 + minutes(2), "ERP rejected: credit limit exceeded for 9"),
    ], now=t0 + minutes(3))
    tick(engine, t0 + minutes(3))
    [g] = groups(engine)
    assert g["class"] == "business_rule" and g["open_count"] == 2
    ingest(engine, settings, [ev("p1", "order.erp_posted", t0 + minutes(5), n=1)], now=t0 + minutes(5))
    tick(engine, t0 + minutes(6))
    [g] = groups(engine)
    assert (g["state"], g["open_count"]) == ("open", 1)  # p2 still waits
    ingest(engine, settings, [ev("p2", "order.erp_posted", t0 + minutes(7), n=1)], now=t0 + minutes(7))
    tick(engine, t0 + minutes(8))
    [g] = groups(engine)
    assert (g["state"], g["resolution"], g["resolved_by"]) == ("resolved", "milestone reached", "controltower")
    assert actions(engine)[-1] == (g["id"], "controltower", "auto_resolve", "milestone reached")
    # a new failure of the same kind on another order reopens it (counted)
    ingest(engine, settings, [ev("p3", "order.received", t0 + minutes(9)),
                              failed("p3", "order.erp_posted", t0 + minutes(10), "ERP rejected: credit limit exceeded for 7")],
           now=t0 + minutes(10))
    stats = tick(engine, t0 + minutes(11))
    [g] = groups(engine)
    assert stats["exception_reopened"] == 1
    assert (g["state"], g["reopen_count"], g["open_count"], g["occurrence_count"]) == ("open", 1, 1, 3)
    assert g["opened_at"] == t0 + minutes(11) and g["resolution"] is None
    assert actions(engine)[-1][:3] == (g["id"], "controltower", "reopen")


def test_quiet_group_resolves_after_a_success_and_quiet_minutes(engine, settings) -> None:
    t0 = NOW - minutes(200)
    ingest(engine, settings, [
        failed("q1", "inventory.published", t0, "Request timed out after 30000 ms"),
    ], now=t0)
    tick(engine, t0 + minutes(1))
    [g] = groups(engine)
    assert g["class"] == "timeout"
    # a success on another item of the same channel and milestone at t0+10
    ingest(engine, settings, [ev("q2", "inventory.published", t0 + minutes(10))], now=t0 + minutes(10))
    tick(engine, t0 + minutes(69))  # 59 minutes after the success: not yet
    assert groups(engine)[0]["state"] == "open"
    tick(engine, t0 + minutes(70))  # 60 minutes after it
    [g] = groups(engine)
    assert (g["state"], g["resolution"]) == ("resolved", "quiet")
    with engine.connect() as conn:
        open_ms = conn.execute(sa.text("SELECT (detail->>'open_ms')::bigint FROM exception_actions "
                                       "WHERE action = 'auto_resolve'")).scalar_one()
    assert open_ms == 69 * 60_000  # opened at the first tick (t0+1), resolved at t0+70


def test_a_success_on_another_channel_does_not_quiet_a_group(engine, settings) -> None:
    t0 = NOW - minutes(200)
    ingest(engine, settings, [failed("q1", "inventory.published", t0, "Request timed out"),
                              ev("q2", "inventory.published", t0 + minutes(10), channel="ebay")], now=t0 + minutes(10))
    tick(engine, t0 + minutes(100))
    assert groups(engine)[0]["state"] == "open"


def test_snoozed_group_wakes_at_its_time(engine, settings) -> None:
    t0 = NOW - minutes(30)
    ingest(engine, settings, [failed("s1", "order.acknowledged", t0, "HTTP 429 Too Many Requests")], now=t0)
    tick(engine, t0 + minutes(1))
    [g] = groups(engine)
    assert g["class"] == "rate_limit"
    exceptionops.snooze(engine, g["id"], t0 + minutes(20), "dana", t0 + minutes(2))
    tick(engine, t0 + minutes(19))
    assert groups(engine)[0]["state"] == "snoozed"
    stats = tick(engine, t0 + minutes(20))
    assert stats["exception_woken"] == 1 and groups(engine)[0]["state"] == "open"
    assert [a[1:3] for a in actions(engine)] == [("dana", "snooze"), ("controltower", "wake")]


def test_overdue_breaches_and_their_resolution_through_the_metrics_refresh(engine, settings) -> None:
    t0 = NOW - timedelta(hours=5)
    ingest(engine, settings, [ev("b1", "order.received", t0), ev("b2", "order.received", t0)], now=t0)
    jobs.refresh(engine, DEFS, NOW, settings)
    got = {g["error_code"]: g for g in groups(engine)}
    erp = got["sla:erp_posting"]
    assert (erp["milestone"], erp["class"], erp["open_count"], erp["channel"]) == ("order.erp_posted", "timeout", 2,
                                                                                   "amazon")
    with engine.connect() as conn:
        cids = conn.execute(sa.text("SELECT correlation_id FROM exception_occurrences WHERE group_id = :g "
                                    "AND source = 'breach' ORDER BY 1"), {"g": erp["id"]}).scalars().all()
    assert cids == ["b1", "b2"]
    ingest(engine, settings, [ev("b1", "order.erp_posted", NOW + minutes(1)), ev("b2", "order.erp_posted", NOW + minutes(1))],
           now=NOW + minutes(1))
    jobs.refresh(engine, DEFS, NOW + minutes(2), settings)
    erp = {g["error_code"]: g for g in groups(engine)}["sla:erp_posting"]
    assert (erp["state"], erp["resolution"]) == ("resolved", "milestone reached")
