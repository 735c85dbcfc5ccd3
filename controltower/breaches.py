"""Open breaches: the offending business transactions behind the SLA table, as rows. SQL only.

An open breach is an `sla_open_items` row whose due time has passed (the judge's `overdue`):
one per business transaction (its `correlation_id` column holds the business id). A row
shows the business by its canonical member (`correlation_id`, see
`controltower.identity.CANONICAL_MEMBER`) and lists every member (`correlation_ids`); order
id from the earliest member that has one, status and last milestone from the member with the
latest event.
The metrics room (`controltower` CLI, `/v1/sla` drilldowns) and the dashboard's Open breaches
page list them through `open_breaches`, so both show the same orders with the same ages (and
the business calendar a due time was counted in, `calendar`, with `due` in words). A
stored time outside the judge's sane range (written by hand, or before ingest validated it)
cannot be read into Python: it comes back as None with a `reason`, never as an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import calendars, identity, slajudge

# The page of open items first (sla_open_items_due_idx / a sort of the past-due items), then
# each one's business transaction from its members (transactions_business_idx): one row per
# business, shown by its canonical member, never by its business id. Two statements: a
# business's members live on any shard of a Citus cluster, so the page travels to the second as
# arrays (Citus cannot join a distributed table laterally to a page it has not read yet).
_PAGE = """
SELECT i.sla, i.correlation_id AS business_id, i.channel,
       CASE WHEN i.started_at >= :earliest AND i.started_at < :latest THEN i.started_at END AS started_at,
       CASE WHEN i.due_at >= :earliest AND i.due_at < :latest THEN i.due_at END AS due_at,
       -- the sort keys as text: a stored time out of Python's range must not be read into Python
       CAST(i.started_at AS text) AS started_key, CAST(i.due_at AS text) AS due_key, i.calendar
FROM sla_open_items i
WHERE i.due_at < :now
  AND (CAST(:sla AS text) IS NULL OR i.sla = :sla)
  AND (CAST(:channel AS text) IS NULL OR i.channel = :channel)
"""
_PAGES = {  # oldest first (a work queue), or the longest overdue first
    "started": sa.text(_PAGE + "ORDER BY i.started_at, i.correlation_id, i.sla LIMIT :limit"),
    "due": sa.text(_PAGE + "ORDER BY i.due_at, i.correlation_id, i.sla LIMIT :limit"),
}
_MEMBERS = """
WITH p AS (
    SELECT * FROM unnest(CAST(:slas AS text[]), CAST(:bids AS text[]), CAST(:channels AS text[]),
                         CAST(:started AS timestamptz[]), CAST(:due AS timestamptz[]),
                         CAST(:started_keys AS timestamptz[]), CAST(:due_keys AS timestamptz[]),
                         CAST(:calendars AS text[]))
        AS p(sla, business_id, channel, started_at, due_at, started_key, due_key, calendar)
), b AS (
    SELECT t.business_id, """ + identity.CANONICAL_MEMBER + """ AS correlation_id,
           array_agg(t.correlation_id ORDER BY t.first_event_at, t.correlation_id) AS correlation_ids,
           (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id) FILTER (WHERE t.order_id IS NOT NULL))[1]
               AS order_id,
           (array_agg(t.last_milestone ORDER BY t.last_event_at DESC, t.correlation_id))[1] AS last_milestone,
           (array_agg(t.status ORDER BY t.last_event_at DESC, t.correlation_id))[1] AS status
    FROM transactions t WHERE t.business_id = ANY(CAST(:business_ids AS text[]))
    GROUP BY t.business_id
)
SELECT p.sla, COALESCE(b.correlation_id, p.business_id) AS correlation_id,
       COALESCE(b.correlation_ids, ARRAY[p.business_id]) AS correlation_ids, p.channel,
       b.order_id, b.last_milestone, b.status, p.started_at, p.due_at, p.calendar,
       d.definition -> 'calendar' -> 'calendars' -> p.calendar AS calendar_spec
FROM p
LEFT JOIN b ON b.business_id = p.business_id
LEFT JOIN sla_definitions d ON d.name = p.sla
"""  # noqa: S608 (constant fragments, no input)
_ORDERS = {
    "started": sa.text(_MEMBERS + "ORDER BY p.started_key, correlation_id, p.sla"),
    "due": sa.text(_MEMBERS + "ORDER BY p.due_key, correlation_id, p.sla"),
}
INVALID = "invalid date stored (outside the sane range): ignored"


def open_breaches(
    conn: Connection, *, now: datetime, sla: str | None = None, channel: str | None = None,
    limit: int = 500, order: str = "started",
) -> list[dict[str, Any]]:
    """Overdue open items (optionally of one SLA and channel), one per business transaction:
    sla, correlation_id (the canonical member), correlation_ids (all members), channel,
    order_id, started_at, due_at, age_ms, overdue_ms, last_milestone, status, calendar (the business
    calendar due_at was counted in, or None), due (due_at in words with its calendar, or None)
    (+ reason)."""
    params = {"now": now, "sla": sla, "channel": channel, "limit": limit,
              "earliest": slajudge.EARLIEST, "latest": slajudge.LATEST}
    page = conn.execute(_PAGES[order], params).all()
    if not page:
        return []
    columns = {name: [getattr(r, name) for r in page] for name in (
        "sla", "business_id", "channel", "started_at", "due_at", "started_key", "due_key", "calendar")}
    out = []
    for r in conn.execute(_ORDERS[order], {
        "slas": columns["sla"], "bids": columns["business_id"], "channels": columns["channel"],
        "started": columns["started_at"], "due": columns["due_at"], "started_keys": columns["started_key"],
        "due_keys": columns["due_key"], "calendars": columns["calendar"],
        "business_ids": sorted(set(columns["business_id"])),
    }):
        row = dict(r._mapping)
        row["due"] = _due_text(r.due_at, r.calendar, row.pop("calendar_spec"))
        row["age_ms"], row["overdue_ms"] = _ms_since(r.started_at, now), _ms_since(r.due_at, now)
        if r.started_at is None or r.due_at is None:
            row["reason"] = INVALID
        out.append(row)
    return out


def _due_text(due_at: datetime | None, name: str | None, spec: Any) -> str | None:
    """`Tue 8 Dec 17:00 America/New_York, calendar us-retail: Mon–Fri, …` (None without a calendar)."""
    if due_at is None or name is None or not isinstance(spec, dict):
        return None
    try:
        return calendars.describe_due(due_at, calendars.Calendar.from_dict(name, spec))
    except (KeyError, TypeError, ValueError):  # a calendar published by another version
        return None


def _ms_since(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else int((now - moment).total_seconds() * 1000)
