"""`GET /v1/sla` and `GET /metrics` over real HTTP; the exposition passes promtool."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from metrics import definitions, jobs
from tests.metrics.helpers import ev, ingest


def seed(engine, settings):
    now = datetime.now(UTC)
    records = []
    for i in range(30):
        records.append(ev(f"S{i}", "order.received", now - timedelta(minutes=50), channel="walmart"))
        if i >= 3:
            records.append(ev(f"S{i}", "order.erp_posted", now - timedelta(minutes=50 - i), channel="walmart"))
    ingest(engine, settings, records, now=now)
    jobs.refresh(engine, definitions.load(), now)


def test_sla_endpoint(collector, engine, settings):
    seed(engine, settings)
    body = httpx.get(collector.url + "/v1/sla", params={"window": "2h", "channel": "walmart"}).json()
    assert body["window"] == "2h" and body["as_of"].endswith("Z")
    row = next(r for r in body["slas"] if r["sla"] == "erp_posting")
    assert (row["count"], row["open_breaches"], row["health"], row["kind"]) == (27, 3, "warn", "milestone_latency")
    assert row["oldest_breach_ms"] >= 50 * 60_000 and set(row) >= {"p50_ms", "p95_ms", "p99_ms", "within_target_ratio"}
    assert {r["channel"] for r in body["slas"]} == {"walmart"}
    for bad in ("-1h", "soon", "200d", "090018410720971857.24199", "0", "nan"):
        response = httpx.get(collector.url + "/v1/sla", params={"window": bad})
        assert response.status_code == 400 and "window" in response.json()["error"]


def test_metrics_exposition_is_valid_prometheus(collector, engine, settings, tmp_path):
    seed(engine, settings)
    text = httpx.get(collector.url + "/metrics").text
    assert 'controltower_sla_open_breaches{sla="erp_posting",channel="walmart",flow="order"} 3' in text
    assert 'controltower_sla_health{sla="erp_posting",channel="walmart",flow="order"} 1' in text
    assert "controltower_collector_events_total" in text or "controltower_collector" in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
