"""Open breaches: the offending transactions behind the SLA table, as rows. SQL only.

An open breach is an `sla_open_items` row whose due time has passed (the judge's `overdue`).
The metrics room (`controltower` CLI, `/v1/sla` drilldowns) and the dashboard's Open breaches
page list them through `open_breaches`, so both show the same orders with the same ages. A
stored time outside the judge's sane range (written by hand, or before ingest validated it)
cannot be read into Python: it comes back as None with a `reason`, never as an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import slajudge

_SELECT = """
SELECT i.sla, i.correlation_id, i.channel, t.order_id, t.last_milestone, t.status,
       CASE WHEN i.started_at >= :earliest AND i.started_at < :latest THEN i.started_at END AS started_at,
       CASE WHEN i.due_at >= :earliest AND i.due_at < :latest THEN i.due_at END AS due_at
FROM sla_open_items i LEFT JOIN transactions t ON t.correlation_id = i.correlation_id
WHERE i.due_at < :now
  AND (CAST(:sla AS text) IS NULL OR i.sla = :sla)
  AND (CAST(:channel AS text) IS NULL OR i.channel = :channel)
"""
_ORDERS = {  # oldest first (a work queue), or the longest overdue first
    "started": sa.text(_SELECT + "ORDER BY i.started_at, i.correlation_id, i.sla LIMIT :limit"),
    "due": sa.text(_SELECT + "ORDER BY i.due_at, i.correlation_id, i.sla LIMIT :limit"),
}
INVALID = "invalid date stored (outside the sane range): ignored"


def open_breaches(
    conn: Connection, *, now: datetime, sla: str | None = None, channel: str | None = None,
    limit: int = 500, order: str = "started",
) -> list[dict[str, Any]]:
    """Overdue open items (optionally of one SLA and channel): sla, correlation_id, channel,
    order_id, started_at, due_at, age_ms, overdue_ms, last_milestone, status (+ reason)."""
    params = {"now": now, "sla": sla, "channel": channel, "limit": limit,
              "earliest": slajudge.EARLIEST, "latest": slajudge.LATEST}
    out = []
    for r in conn.execute(_ORDERS[order], params):
        row = dict(r._mapping)
        row["age_ms"], row["overdue_ms"] = _ms_since(r.started_at, now), _ms_since(r.due_at, now)
        if r.started_at is None or r.due_at is None:
            row["reason"] = INVALID
        out.append(row)
    return out


def _ms_since(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else int((now - moment).total_seconds() * 1000)
