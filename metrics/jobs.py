"""Scheduled jobs of the metrics room (rollups, SLA table, health), run by the scheduler's leader."""

from __future__ import annotations

from controltower.context import AppContext
from controltower.jobs import ScheduledJob


def jobs(context: AppContext) -> list[ScheduledJob]:
    return []
