"""The collector's own counters, as a prometheus_client collector (seconds, `_total` suffixes).

In-process only; each collector process reports its own. The web layer's registry collects
it for `/metrics`; the refusals the web layer itself decides (401, storage 503) it counts there.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from controltower.identity import REFUSALS as REFUSED

SOURCES = ("api", "otlp", "file")
REFUSALS = (
    ("saturated", "Requests refused with 503 because the write path was saturated."),
    ("rate_limited", "Requests refused with 429 because the sender exceeded its rate limit."),
    ("write_errors", "Batches that failed for another reason (answered 503)."),
)


class Counters(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], float] = defaultdict(float)
        self._events: dict[tuple[str, str], float] = defaultdict(float)
        self._links: dict[str, float] = defaultdict(float)

    def inc(self, name: str, by: float = 1) -> None:
        with self._lock:
            self._values[(name, "")] += by

    def observe_batch(self, source: str, result: Any, seconds: float) -> None:
        with self._lock:
            self._events[("accepted", source)] += result.accepted
            self._events[("duplicates", source)] += result.duplicates
            self._events[("conflicts", source)] += getattr(result, "conflicts", 0)
            self._events[("rejected", source)] += len(result.rejected)
            link = getattr(result, "link", None)
            if link is not None:
                for reason, n in link.refused.items():
                    self._links["refused/" + reason] += n
                self._links["moved"] += link.moved
                self._links["merged"] += link.merged
                self._links["new_hubs"] += len(link.new_hubs)
            self._values[("batches", source)] += 1
            self._values[("batch_seconds", source)] += seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out = {f"events_{k}{'/' + s if s else ''}": v for (k, s), v in self._events.items()}
            out.update({f"{k}{'/' + s if s else ''}": v for (k, s), v in self._values.items()})
            return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            events = dict(self._events)
            values = dict(self._values)
            links = dict(self._links)
        family = CounterMetricFamily(
            "controltower_identity_links_refused",
            "Identity key values stored but not linked, by reason (placeholder, too_long over 128 "
            "characters, malformed type, hub: the value is on more correlation IDs than the fan-out limit).",
            labels=["reason"],
        )
        for reason in REFUSED:
            family.add_metric([reason], links.get("refused/" + reason, 0))
        yield family
        for name, help_ in (
            ("moved", "Correlation IDs moved into another business transaction by ingest (merges and splits)."),
            ("merged", "Business transactions absorbed into another by a late link."),
            ("new_hubs", "Identity values that became hubs (on more correlation IDs than the fan-out limit)."),
        ):
            yield CounterMetricFamily(f"controltower_identity_{name}", help_, value=links.get(name, 0))
        for outcome in ("accepted", "duplicates", "conflicts", "rejected"):
            help_ = (f"Events {outcome} by this collector process." if outcome != "conflicts" else
                     "Re-sent event ids whose content differed from the stored event (stored unchanged; see event_conflicts).")
            family = CounterMetricFamily(f"controltower_collector_events_{outcome}", help_, labels=["source"])
            for source in SOURCES:
                family.add_metric([source], events.get((outcome, source), 0))
            yield family
        for name, help_ in (("batches", "Write batches committed."), ("batch_seconds", "Time spent writing batches.")):
            family = CounterMetricFamily(f"controltower_collector_{name}", help_, labels=["source"])
            for source in SOURCES:
                family.add_metric([source], values.get((name, source), 0))
            yield family
        for name, help_ in REFUSALS:
            family = CounterMetricFamily(f"controltower_collector_{name}", help_)
            family.add_metric([], values.get((name, ""), 0))
            yield family
