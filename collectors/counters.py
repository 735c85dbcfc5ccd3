"""The collector's own counters, in Prometheus text format (seconds, `_total` suffixes).

In-process only; each collector process reports its own. No I/O beyond formatting.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], float] = defaultdict(float)
        self._events: dict[tuple[str, str], float] = defaultdict(float)

    def inc(self, name: str, by: float = 1) -> None:
        with self._lock:
            self._values[(name, "")] += by

    def observe_batch(self, source: str, result: Any, seconds: float) -> None:
        with self._lock:
            self._events[("accepted", source)] += result.accepted
            self._events[("duplicates", source)] += result.duplicates
            self._events[("rejected", source)] += len(result.rejected)
            self._values[("batches", source)] += 1
            self._values[("batch_seconds", source)] += seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out = {f"events_{k}{'/' + s if s else ''}": v for (k, s), v in self._events.items()}
            out.update({f"{k}{'/' + s if s else ''}": v for (k, s), v in self._values.items()})
            return out

    def exposition(self) -> str:
        lines = []
        with self._lock:
            events = dict(self._events)
            values = dict(self._values)
        for outcome in ("accepted", "duplicates", "rejected"):
            name = f"controltower_collector_events_{outcome}_total"
            lines.append(f"# HELP {name} Events {outcome} by this collector process.")
            lines.append(f"# TYPE {name} counter")
            for source in ("api", "otlp", "file"):
                lines.append(f'{name}{{source="{source}"}} {events.get((outcome, source), 0):g}')
        lines.append("# HELP controltower_collector_batches_total Write batches committed.")
        lines.append("# TYPE controltower_collector_batches_total counter")
        lines.append("# HELP controltower_collector_batch_seconds_total Time spent writing batches.")
        lines.append("# TYPE controltower_collector_batch_seconds_total counter")
        for source in ("api", "otlp", "file"):
            lines.append(f'controltower_collector_batches_total{{source="{source}"}} {values.get(("batches", source), 0):g}')
            lines.append(
                f'controltower_collector_batch_seconds_total{{source="{source}"}} {values.get(("batch_seconds", source), 0):g}'
            )
        for name, help_ in (
            ("storage_unavailable", "Requests refused with 503 because the database was unreachable."),
            ("saturated", "Requests refused with 503 because the write path was saturated."),
            ("unauthorized", "Requests refused with 401."),
            ("rate_limited", "Requests refused with 429 because the sender exceeded its rate limit."),
            ("write_errors", "Batches that failed for another reason (answered 503)."),
        ):
            full = f"controltower_collector_{name}_total"
            lines.append(f"# HELP {full} {help_}")
            lines.append(f"# TYPE {full} counter")
            lines.append(f"{full} {values.get((name, ''), 0):g}")
        return "\n".join(lines) + "\n"
