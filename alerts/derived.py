"""Values the evaluator derives from tables metrics owns: volume against the usual level, impact.

Read-only, bound parameters, each query bounded (index ranges and a LIMIT) so one evaluation
cycle stays cheap however large the event history is:

- `volume_by_channel`: events in the last hour per channel from `event_rollup_minute`, against
  the average of the same hour on each of the previous 7 days (`volume_ratio`; NULL when the
  channel had no events in those hours, so there is no usual level to fall below).
- `impact`: orders at risk of one SLA on one channel, counted per business transaction (the
  row's open breaches, else the open items past due: one per business) and, when the event
  that reached the rule's impact milestone (default `order.received`; the business's earliest
  over its members) carries one of its amount attributes (default `order_total`, `amount`),
  the order value at risk over at most `IMPACT_LIMIT` of them, one amount per business. Amounts that are not sane numbers
  (`SANE_AMOUNT`) are left out of the sum and counted (`amounts_ignored`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

BASELINE_DAYS = 7
IMPACT_LIMIT = 500
# What `impact: true` reads; a rule names others with `impact: {milestone: …, amounts: […]}`.
DEFAULT_IMPACT_MILESTONE = "order.received"
DEFAULT_IMPACT_AMOUNTS = ("order_total", "amount")
# A sane amount: at most 18 integer digits and 12 decimals (finite, fits numeric and float8);
# anything else (140,000 digits, 1e400, "12,50", text) is ignored and counted.
SANE_AMOUNT = r"^-?[0-9]{1,18}(\.[0-9]{1,12})?$"

# Relies on event_rollup_minute_channel_idx (channel, minute) / the primary key's minute range.
_VOLUME = sa.text(
    """
    WITH recent AS (
        SELECT channel, sum(count) AS n
        FROM event_rollup_minute
        WHERE minute >= :now - interval '1 hour' AND minute < :now
        GROUP BY channel
    ), usual AS (
        SELECT e.channel, sum(e.count)::double precision / CAST(:days AS integer) AS n
        FROM generate_series(1, CAST(:days AS integer)) AS d(day)
        JOIN event_rollup_minute e
          ON e.minute >= :now - make_interval(days => d.day::int) - interval '1 hour'
         AND e.minute < :now - make_interval(days => d.day::int)
        GROUP BY e.channel
    )
    SELECT coalesce(u.channel, r.channel) AS channel, coalesce(r.n, 0) AS last_hour, u.n AS usual
    FROM usual u FULL JOIN recent r ON r.channel = u.channel
    """
)

# Three statements, each routed by what it knows (on Citus a business's members live on any
# shard, so no statement joins the open items laterally to them):
# 1. the oldest past-due open items of the SLA and channel (sla_open_items_due_idx; an open
#    item's correlation_id is its business id);
_IMPACT_ITEMS = sa.text(
    """
    SELECT correlation_id FROM sla_open_items
    WHERE sla = :sla AND channel = :channel AND due_at < :now
    ORDER BY due_at, correlation_id
    LIMIT :limit
    """
)
# 2. each business's impact milestone: its earliest over the members (transactions_business_idx,
#    then transaction_milestones' primary key, co-located with the member); times as text, so a
#    stored time out of Python's range cannot fail the evaluation;
_IMPACT_REACHED = sa.text(
    """
    WITH reached AS MATERIALIZED (
        SELECT t.business_id, m.correlation_id, m.reached_at
        FROM transactions t
        JOIN transaction_milestones m ON m.correlation_id = t.correlation_id AND m.milestone = :milestone
        WHERE t.business_id = ANY(CAST(:bids AS text[]))
    )
    SELECT DISTINCT ON (business_id) correlation_id, CAST(reached_at AS text) AS reached_at
    FROM reached ORDER BY reached.business_id, reached.reached_at, reached.correlation_id
    """
)
# 3. the amount on the event that reached it (events_correlation_idx by correlation id, partitions
#    pruned to the span of those times).
_IMPACT_AMOUNTS = sa.text(
    r"""
    WITH m AS (
        SELECT * FROM unnest(CAST(:cids AS text[]), CAST(:ats AS timestamptz[])) AS m(correlation_id, reached_at)
    ), ev AS MATERIALIZED (
        SELECT correlation_id, occurred_at, attributes FROM events
        WHERE correlation_id = ANY(CAST(:cids AS text[])) AND flow = :flow AND stage = :stage
          AND occurred_at >= (SELECT min(reached_at) FROM m) AND occurred_at <= (SELECT max(reached_at) FROM m)
    ), raw AS (
        -- the first of the amount attributes (in the rule's order) the milestone's event carries
        SELECT (SELECT e.attributes->>k.name FROM unnest(CAST(:amounts AS text[])) WITH ORDINALITY AS k(name, n)
                WHERE e.attributes->>k.name IS NOT NULL ORDER BY k.n LIMIT 1) AS v
        FROM m
        JOIN LATERAL (
            SELECT ev.attributes FROM ev WHERE ev.correlation_id = m.correlation_id AND ev.occurred_at = m.reached_at
            LIMIT 1
        ) e ON true
    ), amounts AS (
        -- the guard runs before the cast, row by row: no stored value can make this query fail
        SELECT v, CASE WHEN v ~ :sane THEN v::numeric END AS amount FROM raw
    )
    SELECT (SELECT sum(amount) FROM amounts) AS value,
           (SELECT count(amount) FROM amounts) AS priced,
           (SELECT count(v) - count(amount) FROM amounts) AS ignored
    """
)


def volume_by_channel(conn: Connection, now: datetime) -> dict[str, dict[str, Any]]:
    """`{channel: {volume_last_hour, volume_usual, volume_ratio}}` at `now`."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(_VOLUME, {"now": now, "days": BASELINE_DAYS}):
        usual = float(row.usual) if row.usual is not None else None
        last = float(row.last_hour)
        out[row.channel] = {
            "volume_last_hour": int(last),
            "volume_usual": round(usual, 1) if usual is not None else None,
            "volume_ratio": (last / usual) if usual else None,
        }
    return out


def impact(
    conn: Connection,
    row: Mapping[str, Any],
    now: datetime,
    *,
    limit: int = IMPACT_LIMIT,
    milestone: str = DEFAULT_IMPACT_MILESTONE,
    amounts: Sequence[str] = DEFAULT_IMPACT_AMOUNTS,
) -> dict[str, Any]:
    """Orders (and, when known, order value) at risk for the SLA row's channel.

    The value is read from the first of the `amounts` attributes on the event that reached
    `milestone` (a `flow.stage` name): the rule's `impact:` option says which, not this code.
    """
    flow, _, stage = milestone.partition(".")
    items = conn.execute(
        _IMPACT_ITEMS, {"sla": row["sla"], "channel": row["channel"], "now": now, "limit": limit}
    ).scalars().all()
    value, priced, ignored = None, 0, 0
    reached = conn.execute(_IMPACT_REACHED, {"bids": sorted(set(items)), "milestone": milestone}).all() if items else []
    if reached:
        value, priced, ignored = conn.execute(_IMPACT_AMOUNTS, {
            "cids": [r.correlation_id for r in reached], "ats": [r.reached_at for r in reached], "flow": flow,
            "stage": stage, "amounts": list(amounts), "sane": SANE_AMOUNT,
        }).one()
    open_breaches = row.get("open_breaches")
    orders = int(open_breaches) if open_breaches is not None else len(items)
    out: dict[str, Any] = {"orders_at_risk": orders}
    if priced:
        out["order_value_at_risk"] = round(float(value), 2)
        out["orders_priced"] = int(priced)
        if len(items) >= limit:
            out["order_value_capped_at"] = limit  # only the `limit` oldest past-due orders were summed
    if ignored:
        out["amounts_ignored"] = int(ignored)  # counted by the evaluator, not sent
    return out
