"""The one storage-outage mapping: every route answers 503 + Retry-After when the database is
unreachable (from the web layer's handler, not per room), and /metrics still shows the counters."""

from __future__ import annotations

import httpx
import pytest

from controltower.context import AppContext
from controltower.db import make_engine
from tests.conftest import LoopbackServer
from wiring.server import build_app

ROUTES = (("GET", "/v1/sla"), ("GET", "/v1/alerts"), ("GET", "/v1/transactions?q=SO-1"),
          ("GET", "/v1/transactions/C-1"), ("POST", "/v1/events"), ("POST", "/v1/alerts/00ff/ack"))


@pytest.fixture
def down(settings):
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/nowhere", pool_size=1)  # nothing listens on 9
    s = settings.with_(retry_after_seconds=7, metrics_auth="open")
    with LoopbackServer(build_app(AppContext(s, engine))) as server:
        yield server
    engine.dispose()


def test_every_route_is_503_with_retry_after_when_the_database_is_down(down):
    for method, path in ROUTES:
        r = httpx.request(method, down.url + path, json=[] if method == "POST" else None, timeout=30)
        assert (r.status_code, r.headers.get("retry-after")) == (503, "7"), (path, r.status_code, r.text)
        assert r.json() == {"error": "storage unavailable, retry later"}
    metrics = httpx.get(down.url + "/metrics", timeout=30)
    assert metrics.status_code == 200
    assert f"controltower_collector_storage_unavailable_total {float(len(ROUTES))}" in metrics.text
    assert "controltower_sla_" not in metrics.text  # the SLA gauges are left out, not a 500
