"""The watchdog: an always-firing notification that proves alerting works (Alertmanager's Watchdog).

Configured in the rules file (`watchdog: {interval: 1h, receivers: [...]}`, receivers default to
`default_receivers`; no `watchdog:` key, no watchdog). Every successful evaluation cycle queues
it through the normal outbox once `interval` has passed since the last one, so it travels the
same path as every alert: evaluation, outbox, delivery, receiver. A receiver (a dead man's
switch) that stops getting it knows that alerting, delivery or the scheduler has stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts.content import fingerprint
from alerts.outbox import Outbox
from alerts.rules import Watchdog
from controltower.schema.alerts import alert_notifications
from controltower.vocab import ZERO_TIME, human_duration, rfc3339


def due(conn: Connection, watchdog: Watchdog, now: datetime) -> bool:
    last = conn.execute(
        sa.select(sa.func.max(alert_notifications.c.created_at)).where(alert_notifications.c.rule == watchdog.name)
    ).scalar()
    return last is None or now - last >= timedelta(seconds=watchdog.interval_seconds)


def alert(watchdog: Watchdog, now: datetime, dashboard_url: str, failing: Sequence[str] = ()) -> dict[str, Any]:
    """The watchdog's receiver-neutral notification (the shape `alerts.content.payload` gives alerts)."""
    labels = {"alertname": watchdog.name, "severity": "none"}
    every = human_duration(watchdog.interval_seconds * 1000)
    summary = f"Alerting is working: evaluated at {rfc3339(now)}; this repeats every {every}. If it stops, alerting has stopped."
    if failing:
        summary += f" {len(failing)} rule(s) failing: {', '.join(failing)}."
    return {
        "kind": "firing", "status": "firing", "rule": watchdog.name, "severity": "none",
        "fingerprint": fingerprint(labels), "labels": labels,
        "annotations": {"summary": summary,
                        "description": "Always firing while alert evaluation runs (a dead man's switch)."},
        "summary": summary, "value": None, "startsAt": rfc3339(now), "endsAt": ZERO_TIME,
        "generatorURL": dashboard_url, "dashboard_url": dashboard_url, "externalURL": dashboard_url,
        "acknowledged_by": None,
    }


def send_if_due(
    conn: Connection, watchdog: Watchdog, now: datetime, dashboard_url: str, *, failing: Sequence[str] = ()
) -> bool:
    """Queue the watchdog notification when its interval has passed; whether it was queued."""
    if not due(conn, watchdog, now):
        return False
    box = Outbox(conn, now)
    box.add_named(watchdog.name, "firing", alert(watchdog, now, dashboard_url, failing), watchdog.receivers)
    box.flush(dashboard_url)
    return True
