"""The order funnel: of one channel's orders received on a day, how many reached each milestone,
and which ones stopped between two milestones. SQL only, returning plain rows.

An order is a business transaction (correlation IDs joined by identity keys): it belongs to
the business channel (`controltower.identity.BUSINESS_CHANNEL`) and to the day of its
earliest `order.received` over all members, and it reached a milestone when any member did;
so an order received by the marketplace's trace and posted under the ERP's counts once, as
posted. Rows show the canonical member as `correlation_id` and every member in
`correlation_ids`. (An order whose receipt was recorded only under another channel than its
business channel is not found: the candidates come from the channel's index range.)

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

from controltower import identity

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

# The business transactions of `channel` whose earliest `first` milestone (over all members)
# falls in [start, end), and the earliest time each reached :milestones. Candidates come from
# transaction_milestones_lookup_idx (milestone, channel, reached_at): rows on the channel, or
# on none (a member that did not name it); members through transactions_business_idx.
_ORDERS = """
WITH candidates AS (
    SELECT DISTINCT t.business_id
    FROM transaction_milestones m JOIN transactions t ON t.correlation_id = m.correlation_id
    WHERE m.milestone = :first AND (m.channel = :channel OR m.channel IS NULL)
      AND m.reached_at >= :start AND m.reached_at < :end
), orders AS (
    SELECT t.business_id, """ + identity.CANONICAL_MEMBER + """ AS correlation_id,
           array_agg(t.correlation_id ORDER BY t.first_event_at, t.correlation_id) AS correlation_ids,
           (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id) FILTER (WHERE t.order_id IS NOT NULL))[1]
               AS order_id,
           (array_agg(t.status ORDER BY t.last_event_at DESC, t.correlation_id))[1] AS status,
           (array_agg(t.last_milestone ORDER BY t.last_event_at DESC, t.correlation_id))[1] AS last_milestone
    FROM candidates c JOIN transactions t ON t.business_id = c.business_id
    GROUP BY t.business_id
    HAVING """ + identity.BUSINESS_CHANNEL + """ = :channel
), reached AS (
    SELECT o.business_id, m.milestone, min(m.reached_at) AS reached_at
    FROM orders o JOIN transactions t ON t.business_id = o.business_id
    JOIN transaction_milestones m ON m.correlation_id = t.correlation_id AND m.milestone = ANY(:milestones)
    GROUP BY 1, 2
), received AS (
    SELECT business_id FROM reached WHERE milestone = :first AND reached_at >= :start AND reached_at < :end
)
"""  # noqa: S608 (constant fragments, no input)

_FUNNEL = sa.text(_ORDERS + """
SELECT r.milestone, count(*) AS orders
FROM reached r JOIN received USING (business_id)
GROUP BY r.milestone
""")

_GAP = sa.text(_ORDERS + """
SELECT o.business_id, o.correlation_id, o.correlation_ids, o.order_id, a.reached_at, o.status, o.last_milestone
FROM orders o JOIN received USING (business_id)
JOIN reached a ON a.business_id = o.business_id AND a.milestone = :reached
WHERE NOT EXISTS (SELECT 1 FROM reached b WHERE b.business_id = o.business_id AND b.milestone = :missing)
ORDER BY a.reached_at, o.correlation_id
LIMIT :limit
""")  # noqa: S608 (constant fragments, no input)

_RECEIVED = sa.text(_ORDERS + """
SELECT o.business_id, o.correlation_id, o.correlation_ids, o.order_id, r.reached_at
FROM orders o JOIN received USING (business_id)
JOIN reached r ON r.business_id = o.business_id AND r.milestone = :first
ORDER BY r.reached_at, o.correlation_id
""")  # noqa: S608 (constant fragments, no input)
ORDER_KINDS = ("external_order_id", "order_id")  # the keys a channel's own report names an order by

# The order keys of the listed businesses' members, in a second statement: transaction_keys is
# distributed by value on Citus, so it cannot be joined with `transactions` on the correlation
# id; the members travel as arrays and the rows are aggregated after the (index) reads.
_KEYS = sa.text("""
SELECT bid, min(value) FILTER (WHERE kind = 'external_order_id') AS external_order_id,
       ARRAY(SELECT DISTINCT v FROM unnest(array_agg(value) FILTER (WHERE kind = ANY(:order_kinds))) AS v ORDER BY v)
           AS order_numbers
FROM (
    SELECT u.bid, k.kind, k.value FROM transaction_keys k
    JOIN unnest(CAST(:cids AS text[]), CAST(:bids AS text[])) AS u(cid, bid) ON k.correlation_id = u.cid
    WHERE k.kind = ANY(:kinds)
    OFFSET 0
) x
GROUP BY bid
""")


def _with_keys(conn: Connection, rows: list[dict[str, Any]], *, numbers: bool) -> list[dict[str, Any]]:
    """Add external_order_id (and order_numbers) of each business to `rows` (dropping business_id)."""
    pairs = [(cid, r["business_id"]) for r in rows for cid in r["correlation_ids"]]
    found: dict[str, Any] = {}
    if pairs:
        found = {k.bid: k for k in conn.execute(_KEYS, {
            "cids": [c for c, _ in pairs], "bids": [b for _, b in pairs],
            "kinds": list(ORDER_KINDS), "order_kinds": list(ORDER_KINDS),
        })}
    out = []
    for r in rows:
        keys = found.get(r.pop("business_id"))
        r["external_order_id"] = keys.external_order_id if keys else None
        if numbers:
            r["order_numbers"] = list(keys.order_numbers) if keys else []
        out.append(r)
    return out


# the answers' fields, in the order they always had
_GAP_FIELDS = ("correlation_id", "correlation_ids", "order_id", "external_order_id", "reached_at", "status", "last_milestone")
_RECEIVED_FIELDS = ("correlation_id", "correlation_ids", "order_id", "reached_at", "external_order_id", "order_numbers")


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
    first: correlation_id (canonical member), correlation_ids, order_id, external_order_id,
    reached_at, status, last_milestone."""
    start, end = day_bounds(day)
    params = {"first": first, "channel": channel, "start": start, "end": end, "reached": reached,
              "missing": missing, "limit": limit, "milestones": [first, reached, missing]}
    rows = [dict(r._mapping) for r in conn.execute(_GAP, params)]
    return [{k: r[k] for k in _GAP_FIELDS} for r in _with_keys(conn, rows, numbers=False)]


def received(
    conn: Connection, *, channel: str, start: datetime, end: datetime, first: str = MILESTONES[0]
) -> list[dict[str, Any]]:
    """Orders (business transactions) of `channel` received in `[start, end)`, oldest first:
    correlation_id (canonical member), correlation_ids, order_id, reached_at, external_order_id
    and order_numbers (every member's `ORDER_KINDS` key values)."""
    params = {"first": first, "channel": channel, "start": start, "end": end, "milestones": [first]}
    rows = [dict(r._mapping) for r in conn.execute(_RECEIVED, params)]
    return [{k: r[k] for k in _RECEIVED_FIELDS} for r in _with_keys(conn, rows, numbers=True)]
