"""Scheduled jobs of the alerts room (rule evaluation, notification delivery), run by the scheduler's leader."""

from __future__ import annotations

from controltower.context import AppContext
from controltower.jobs import ScheduledJob


def jobs(context: AppContext) -> list[ScheduledJob]:
    return []
