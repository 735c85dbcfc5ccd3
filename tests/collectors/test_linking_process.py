"""The identity graph through the real collector: refused links counted on /metrics over HTTP,
and a collector killed mid-batch while linking leaves nothing half-linked (one transaction)."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from tests.collectors.test_crash import free_port, start_collector

NOW = datetime.now(UTC).replace(microsecond=0)


def rec(eid: str, cid: str, **extra: object) -> dict:
    record = {"event_id": eid, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(), "correlation_id": cid,
              "channel": "amazon", "flow": "order", "stage": "received"}
    record.update(extra)
    return record


def refused(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("controltower_identity_links_refused_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


def test_refused_links_are_counted_on_metrics_over_http(collector, engine, settings):
    with httpx.Client(base_url=collector.url, timeout=10) as client:
        before = refused(client.get("/metrics").text)
        body = [
            rec("p1", "P-1", order_id="N/A"),
            rec("p2", "P-2", attributes={"tracking_number": "\tunknown "}),
            rec("l1", "L-1", attributes={"erp_document": "x" * 129}),
            rec("l0", "L-0", attributes={"erp_document": "y" * 128}),  # 128: links
            rec("m1", "M-1", attributes={"erp_document": [["nested"]], "shipment_id": 1.5}),
            # a number past 64 bits is rejected with its reason (it would lose digits)
            {**rec("b1", "B-1"), "attributes": {"tracking_number": 9400111899223397791234}},
        ]
        answer = client.post("/v1/events", json=body)
        assert answer.status_code in (200, 202), answer.text
        assert answer.json()["accepted"] == 5, answer.json()
        assert [r["index"] for r in answer.json()["rejected"]] == [5]
        for i in range(22):  # a hub: 22 ids on one value (limit 20); the 21st and 22nd are refused
            assert client.post("/v1/events", json=[rec(f"h{i}", f"H-{i}", attributes={"rma": "RMA-HUB"})]).status_code in (200, 202)
        after = refused(client.get("/metrics").text)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("placeholder", "too_long", "malformed", "hub")}
    assert delta == {"placeholder": 2, "too_long": 1, "malformed": 2, "hub": 2}
    with engine.connect() as conn:
        hub = conn.execute(sa.text("SELECT kind, value, fanout FROM identity_hubs")).all()
    assert [tuple(h) for h in hub] == [("rma", "RMA-HUB", 22)]


@pytest.mark.slow
def test_a_collector_killed_while_linking_leaves_nothing_half_linked(engine, database_url):
    """The batch is held inside its transaction after it linked (its milestone insert waits on
    our lock); the collector is killed there: no event, key, business change or journal entry of
    that batch remains, and the existing business is as before."""
    port = free_port()
    proc = start_collector(database_url, port)
    try:
        base = f"http://127.0.0.1:{port}"
        old = [rec("o1", "BIG-1", order_id="SO-9"), rec("o2", "BIG-2", order_id="SO-9"),
               rec("s1", "SMALL-1", attributes={"erp_document": "D-9"})]
        assert httpx.post(f"{base}/v1/events", json=old, timeout=10).status_code in (200, 202)
        with engine.connect() as conn:
            before = conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions ORDER BY 1")).all()
            journal = conn.execute(sa.text("SELECT count(*) FROM identity_changes")).scalar()
        blocker = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=False)
        blocker.execute("INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)"
                        " VALUES ('BRIDGE', 'order.received', now(), 'amazon', now())")
        # the bridge merges SMALL-1 into BIG's business, and is the one held
        bridge = [rec("b1", "BRIDGE", order_id="SO-9", attributes={"erp_document": "D-9"})]
        def send() -> None:
            try:
                httpx.post(f"{base}/v1/events", json=bridge, timeout=30)
            except httpx.HTTPError:
                pass  # the collector is killed under it

        threading.Thread(target=send, daemon=True).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                waiting = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> :p"
                    " AND datname = current_database()"), {"p": blocker.info.backend_pid}).scalar()
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the bridge batch never reached its milestone insert"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        blocker.rollback()
        blocker.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the orphaned backend notices its client is gone
            with engine.connect() as conn:
                busy = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle'"
                    " AND pid <> pg_backend_pid()")).scalar()
            if not busy:
                break
            time.sleep(0.1)
        with engine.connect() as conn:
            after = conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions ORDER BY 1")).all()
            leftovers = conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM events WHERE correlation_id = 'BRIDGE'),"
                " (SELECT count(*) FROM event_ids WHERE correlation_id = 'BRIDGE'),"
                " (SELECT count(*) FROM transaction_keys WHERE correlation_id = 'BRIDGE'),"
                " (SELECT count(*) FROM identity_changes)")).one()
        assert after == before
        assert tuple(leftovers) == (0, 0, 0, journal)
    finally:
        proc.kill()
        proc.wait(10)
