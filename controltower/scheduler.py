"""The scheduler process: runs the rooms' jobs in exactly one leader process.

Composition root (may import rooms). Stub until the alerts work lands.
"""

from __future__ import annotations

from controltower.context import AppContext


def run(context: AppContext) -> None:
    raise NotImplementedError("the scheduler is not built yet")
