"""The shape of a scheduled job a room hands to the scheduler (the composition root runs them).

A job is a plain function of the current time; the scheduler decides when and where it runs
(only in the leader process). Rooms return their jobs from `<room>.jobs.jobs(context)`.

Jobs with a `pipeline` position run as one chain per tick, in ascending order, each stage with
the time it starts at (so a later stage sees what an earlier one wrote in the same tick); the
chain's interval is the smallest of its stages'. A stage may also say when the chain should run
again before its next tick (`wake`: given the stage's `now`, the earliest moment something is due,
or None), e.g. the moment a pending alert has held for its `for`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    run: Callable[[datetime], object]
    interval_seconds: float
    pipeline: int | None = None  # position in the per-tick chain; None: a job of its own
    wake: Callable[[datetime], datetime | None] | None = None  # an extra run of the chain at that moment
