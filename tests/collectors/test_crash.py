"""A collector process killed mid-batch: senders retry, nothing acknowledged is lost, nothing is
stored twice, and the new process serves at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_collector(database_url: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")} | {"CONTROLTOWER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "wiring", "--database-url", database_url, "serve"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("collector did not start")


def test_killed_collector_loses_nothing_acknowledged_and_stores_nothing_twice(engine, database_url):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/events"
    now = datetime.now(UTC).replace(microsecond=0)
    batches = [
        [{"event_id": f"b{b}-{i}", "occurred_at": (now - timedelta(seconds=i)).isoformat(), "correlation_id": f"K-{b}-{i % 50}",
          "channel": "walmart", "flow": "order", "stage": "received", "attributes": {"sku": f"S{i}"}} for i in range(500)]
        for b in range(40)
    ]
    acknowledged: set[str] = set()
    failures = {"connection": 0}
    done = threading.Event()

    def send() -> None:
        client = httpx.Client(timeout=10)
        for batch in batches:
            while True:  # what any sender with retries does (the OTLP exporter, our simulator)
                try:
                    response = client.post(url, json=batch)
                except httpx.HTTPError:
                    failures["connection"] += 1
                    time.sleep(0.2)
                    continue
                if response.status_code in (429, 503):
                    time.sleep(0.2)
                    continue
                assert response.status_code == 200, response.text
                acknowledged.update(r["event_id"] for r in batch)
                break
        done.set()

    collector = start_collector(database_url, port)
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while len(acknowledged) < 5000:
            time.sleep(0.05)
        collector.send_signal(signal.SIGKILL)  # mid-stream, most likely mid-batch
        collector.wait()
        time.sleep(0.5)
        collector = start_collector(database_url, port)
        assert done.wait(120), "the sender never finished"
    finally:
        collector.send_signal(signal.SIGINT)
        collector.wait(timeout=30)
    assert failures["connection"] >= 1  # the kill was felt
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM events WHERE channel = 'walmart'")).scalar()
        distinct = conn.execute(sa.text("SELECT count(DISTINCT event_id) FROM events WHERE channel = 'walmart'")).scalar()
        tx_events = conn.execute(sa.text("SELECT sum(event_count) FROM transactions WHERE correlation_id LIKE 'K-%'")).scalar()
        claimed = conn.execute(sa.text("SELECT count(*) FROM event_ids WHERE correlation_id LIKE 'K-%'")).scalar()
        conflicts = conn.execute(sa.text("SELECT count(*) FROM event_conflicts")).scalar()
    assert len(acknowledged) == stored == distinct == claimed == 40 * 500
    assert conflicts == 0  # retries re-send identical content: duplicates, never conflicts
    assert tx_events == stored  # transaction counters saw each event once, retries included
