"""#10 finding 10: parsing runs off the event loop; the in-flight slot is taken before the body is read."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx

from controltower.context import AppContext
from tests.conftest import LoopbackServer
from tests.web.helpers import otlp_doc, otlp_span
from wiring.server import build_app


def test_a_30_mb_otlp_json_body_does_not_hold_healthz(collector):
    now = time.time_ns()
    spans = [otlp_span(f"{i:016x}", now - 60_000_000_000, pad="x" * 2000) for i in range(1, 14_001)]
    body = json.dumps(otlp_doc(spans)).encode()
    assert len(body) > 30_000_000
    done = threading.Event()
    outcome: dict = {}

    def post() -> None:
        outcome["r"] = httpx.post(collector.url + "/v1/traces", content=body,
                                  headers={"content-type": "application/json"}, timeout=120)
        done.set()

    worker = threading.Thread(target=post)
    worker.start()
    worst = 0.0
    probes = 0
    while not done.is_set():
        started = time.perf_counter()
        assert httpx.get(collector.url + "/healthz", timeout=10).status_code == 200
        worst = max(worst, time.perf_counter() - started)
        probes += 1
        time.sleep(0.05)
    worker.join()
    assert outcome["r"].status_code == 200, outcome["r"].text[:300]
    assert probes >= 3, "the export finished before /healthz could be probed during it"
    print(f"healthz worst {worst:.3f} s over {probes} probes during a {len(body) / 1e6:.1f} MB export")
    assert worst < 1.0, f"/healthz took {worst:.2f} s while a 30 MB export was parsed"


def test_the_in_flight_slot_is_held_while_a_body_is_still_arriving(engine, settings):
    one = settings.with_(max_inflight_batches=1, body_timeout=5.0)
    with LoopbackServer(build_app(AppContext(one, engine))) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[")
            time.sleep(0.3)  # the slow body holds the only slot
            r = httpx.post(server.url + "/v1/events", json=[], timeout=10)
            assert r.status_code == 503 and "saturated" in r.json()["error"]
            assert r.headers["retry-after"]


def test_rejected_spans_counts_spans_not_records(collector):
    """A span with a retail.milestone event yields two records; both rejected is ONE rejected span."""
    old = time.time_ns() - 40 * 86400 * 10**9  # older than max_event_age: the store rejects both records
    current = time.time_ns() - 60 * 10**9
    doc = otlp_doc([otlp_span("00000000000000a1", old, milestone_ns=old + 1000),
                    otlp_span("00000000000000a2", old),
                    otlp_span("00000000000000a3", current, milestone_ns=current + 1000)])
    r = httpx.post(collector.url + "/v1/traces", json=doc)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 2
    assert partial["errorMessage"].count("span 00000000000000a1") == 1
    assert "span 00000000000000a2" in partial["errorMessage"] and "00000000000000a3" not in partial["errorMessage"]
