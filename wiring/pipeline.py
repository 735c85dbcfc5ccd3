"""The per-tick pipeline: the rooms' staged jobs (refresh -> evaluate -> deliver) run as one chain.

Composition root. Jobs with a `pipeline` position (`controltower.jobs.ScheduledJob`) run in
ascending order, one after the other, each with the time it starts at, so evaluation reads the
SLA table this tick's refresh wrote and delivery sends what this tick's evaluation enqueued. A
stage that raises is logged and the later stages still run (evaluating the previous table beats
not evaluating; alerting's own health reports the failure). Runs are serialized by a lock: the
regular tick and an extra run asked for by a stage's `wake` never overlap. The last run's stage
durations are kept for the log and for tests; nothing here touches the database itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controltower.jobs import ScheduledJob

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pipeline:
    stages: Sequence[ScheduledJob]
    clock: Callable[[], datetime] = _utc_now
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_durations: dict[str, float] = field(default_factory=dict)
    runs: int = 0

    @classmethod
    def split(cls, jobs: Sequence[ScheduledJob]) -> tuple[Pipeline | None, list[ScheduledJob]]:
        """The staged jobs as one pipeline (None when there are none) and the other jobs."""
        staged = sorted((j for j in jobs if j.pipeline is not None), key=lambda j: j.pipeline or 0)
        others = [j for j in jobs if j.pipeline is None]
        return (cls(staged) if staged else None), others

    @property
    def name(self) -> str:
        return "pipeline"

    @property
    def interval_seconds(self) -> float:
        return min(j.interval_seconds for j in self.stages)

    def run(self, leading: threading.Event | None = None) -> datetime | None:
        """Run every stage in order; return the earliest wake-up a stage asked for (None: none)."""
        with self.lock:
            wakes: list[datetime] = []
            durations: dict[str, float] = {}
            for stage in self.stages:
                if leading is not None and not leading.is_set():
                    log.info("pipeline stopped before %s: leadership lost", stage.name)
                    break
                now = self.clock()
                started = time.monotonic()
                try:
                    stage.run(now)
                    if stage.wake is not None:
                        wake = stage.wake(now)
                        if wake is not None:
                            wakes.append(wake)
                except Exception:  # a failing stage must not stop the later ones (or the scheduler)
                    log.exception("pipeline stage %s failed; the later stages still run", stage.name)
                durations[stage.name] = time.monotonic() - started
            self.last_durations = durations
            self.runs += 1
            log.debug("pipeline done: %s", ", ".join(f"{k} {v:.3f}s" for k, v in durations.items()))
            return min(wakes, default=None)
