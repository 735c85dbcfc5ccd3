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
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(collector.url + "/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    walmart = (("channel", "walmart"), ("flow", "order"), ("sla", "erp_posting"))
    assert samples[("controltower_sla_open_breaches", walmart)] == 3
    assert samples[("controltower_sla_health", walmart)] == 1
    assert samples[("controltower_collector_events_accepted_total", (("source", "api"),))] == 0
    # each family's samples are together: a family's name never reappears after another family began
    names = [line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")]
    runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert len(runs) == len(set(runs)), runs
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
