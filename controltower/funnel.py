"""The order funnel: of one channel's orders received on a day, how many reached each milestone,
and which ones stopped between two milestones. SQL only, returning plain rows.

Shared by the metrics room (`controltower funnel`, reconciliation) and the dashboard's
reconciliation page, so both count the same orders. Read-only; reads `transaction_milestones`
through its (milestone, channel, reached_at) index, `transactions` and `transaction_keys`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# The retail order flow in order: (stage as people name it, milestone). The first one opens
# the funnel: an order belongs to the day it was received.
STEPS = (
    ("received", "order.received"),
    ("acknowledged", "order.acknowledged"),
    ("erp_posted", "order.erp_posted"),
    ("released", "fulfilment.released"),
    ("shipped", "fulfilment.shipped"),
    ("shipment_confirmed", "shipment.shipment_confirmed"),
    ("delivered", "shipment.delivered"),
)
MILESTONES = tuple(milestone for _, milestone in STEPS)

_FUNNEL = sa.text("""
WITH orders AS (
    SELECT correlation_id FROM transaction_milestones
    WHERE milestone = :first AND channel = :channel AND reached_at >= :start AND reached_at < :end
)
SELECT m.milestone, count(*) AS orders
FROM transaction_milestones m JOIN orders o USING (correlation_id)
WHERE m.milestone = ANY(:milestones)
GROUP BY m.milestone
""")

_GAP = sa.text("""
WITH orders AS (
    SELECT correlation_id FROM transaction_milestones
    WHERE milestone = :first AND channel = :channel AND reached_at >= :start AND reached_at < :end
)
SELECT o.correlation_id, t.order_id,
       (SELECT min(k.value) FROM transaction_keys k
        WHERE k.correlation_id = o.correlation_id AND k.kind = 'external_order_id') AS external_order_id,
       a.reached_at, t.status, t.last_milestone
FROM orders o
JOIN transaction_milestones a ON a.correlation_id = o.correlation_id AND a.milestone = :reached
LEFT JOIN transactions t ON t.correlation_id = o.correlation_id
WHERE NOT EXISTS (SELECT 1 FROM transaction_milestones b WHERE b.correlation_id = o.correlation_id AND b.milestone = :missing)
ORDER BY a.reached_at, o.correlation_id
LIMIT :limit
""")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day `[start, end)` an order's receipt falls in."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def funnel(conn: Connection, *, channel: str, day: date, milestones: Sequence[str] = MILESTONES) -> list[dict[str, Any]]:
    """`{"milestone", "orders"}` per milestone in flow order: distinct orders of `channel` received
    on `day` (the first milestone) that reached it; zero where none did."""
    start, end = day_bounds(day)
    rows = conn.execute(
        _FUNNEL, {"first": milestones[0], "channel": channel, "start": start, "end": end, "milestones": list(milestones)}
    )
    counts = {r.milestone: int(r.orders) for r in rows}
    return [{"milestone": m, "orders": counts.get(m, 0)} for m in milestones]


def funnel_gap(
    conn: Connection, *, channel: str, day: date, reached: str, missing: str,
    first: str = MILESTONES[0], limit: int = 1000,
) -> list[dict[str, Any]]:
    """Orders of `channel` received on `day` that reached `reached` but not `missing`, oldest
    first: correlation_id, order_id, external_order_id, reached_at, status, last_milestone."""
    start, end = day_bounds(day)
    params = {"first": first, "channel": channel, "start": start, "end": end, "reached": reached,
              "missing": missing, "limit": limit}
    return [dict(r._mapping) for r in conn.execute(_GAP, params)]
