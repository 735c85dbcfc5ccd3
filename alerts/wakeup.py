"""When the alert pipeline must run again, between ticks, for `for` and `keep_firing_for` to be exact.

A pending series fires at the first evaluation at or after `active_since + for`; a firing one
whose condition cleared resolves at the first evaluation at or after `cleared_since +
keep_firing_for`. With ticks every interval that evaluation can come up to one interval late
(a `for: 10s` rule at a 30 s interval would fire 30 s after going pending, not 10 s). `next_wake`
reads those moments from `alert_state` and the loaded rules and gives the earliest one after
`now`, which the scheduler turns into an extra run of the pipeline. Read-only: it changes no
state and sends nothing (the evaluation at that moment does, through `alerts.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alerts.rules import Rule
from alerts.state import FIRING, PENDING
from controltower.schema.alerts import alert_state


def due_moments(rows: Sequence[tuple[str, str, datetime | None, datetime | None]], rules: Sequence[Rule]) -> list[datetime]:
    """Pure: for (rule, state, active_since, cleared_since) rows, the moments a transition falls due."""
    by_name = {r.name: r for r in rules}
    moments: list[datetime] = []
    for name, state, active_since, cleared_since in rows:
        rule = by_name.get(name)
        if rule is None:
            continue
        if state == PENDING and active_since is not None and rule.for_seconds > 0:
            moments.append(active_since + timedelta(seconds=rule.for_seconds))
        elif state == FIRING and cleared_since is not None and rule.keep_firing_for_seconds > 0:
            moments.append(cleared_since + timedelta(seconds=rule.keep_firing_for_seconds))
    return moments


def next_wake(engine: Engine, rules: Sequence[Rule], now: datetime) -> datetime | None:
    """The earliest moment after `now` a pending series reaches its `for` (or a cleared firing one
    its `keep_firing_for`); None when nothing is due before the regular ticks."""
    timed = [r.name for r in rules if r.for_seconds > 0 or r.keep_firing_for_seconds > 0]
    if not timed:
        return None
    t = alert_state
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.rule, t.c.state, t.c.active_since, t.c.cleared_since)
            .where(t.c.rule.in_(timed), t.c.state.in_((PENDING, FIRING)))
        ).all()
    later = [m for m in due_moments([tuple(r) for r in rows], rules) if m > now]
    return min(later, default=None)
