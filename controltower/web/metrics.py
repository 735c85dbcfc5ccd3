"""`GET /metrics`: one prometheus_client registry the web layer and the rooms add collectors to.

Each room contributes `prometheus_client` collectors (custom `collect()`ors reading its own
state); this module owns the registry, the web layer's own refusal counters, and serving the
classic text format (what `promtool check metrics` accepts) behind `metrics_auth`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from controltower.web.security import authorize_metrics

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"  # the classic format promtool checks
REFUSALS = (
    ("unauthorized", "Requests refused with 401."),
    ("storage_unavailable", "Requests refused with 503 because the database was unreachable."),
)


class RefusalCounters(Collector):
    """Requests the web layer refused (names as the collector always exposed them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {name: 0.0 for name, _ in REFUSALS}

    def inc(self, name: str, by: float = 1) -> None:
        with self._lock:
            self._values[name] += by

    def value(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
        for name, help_ in REFUSALS:
            family = CounterMetricFamily(f"controltower_collector_{name}", help_)
            family.add_metric([], values[name])
            yield family


def new_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


async def metrics_endpoint(request: Request) -> Response:
    await authorize_metrics(request)
    registry: CollectorRegistry = request.app.state.web.registry
    body = await run_in_threadpool(generate_latest, registry)  # collectors may read the database
    return Response(body, media_type=TEXT_FORMAT)
