"""The shape of a scheduled job a room hands to the scheduler (the composition root runs them).

A job is a plain function of the current time; the scheduler decides when and where it runs
(only in the leader process). Rooms return their jobs from `<room>.jobs.jobs(context)`.
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
