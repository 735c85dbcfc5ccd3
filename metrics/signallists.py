"""The identity signals as lists, for `GET /v1/identity/...` and `controltower identity ...`.

Reads what `metrics.signals` keeps (`signal_orphans`, `signal_orders`) and the ingest's
`identity_hubs`, and shows each business transaction by its canonical member with all member
ids and merged keys (never its business_id). `check` says what is wrong with a list's paging
and filters in one line, the same for a query string and for command options.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import identity
from controltower.vocab import rfc3339

PAGE_LIMIT, PAGE_DEFAULT, MAX_OFFSET = 500, 100, 100_000
SLUG = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")  # as the canonical event's channel and system
KIND = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # an attribute name as events send it
_SLUG_TEXT = "lowercase letters, digits, _ - ."
# the filters each list takes: what a value must look like, and how to say so
FILTERS: dict[str, dict[str, tuple[re.Pattern[str], str]]] = {
    "orphans": {"channel": (SLUG, f"a channel name ({_SLUG_TEXT}; unknown for none)"),
                "system": (SLUG, f"a system name ({_SLUG_TEXT}; unknown for none)")},
    "duplicates": {"channel": (SLUG, f"a channel name ({_SLUG_TEXT}; unknown for none)")},
    "hubs": {"kind": (KIND, "a key name (letters, digits, _ - .)")},
}


def check(name: str, limit: int, offset: int, filters: dict[str, str | None]) -> str | None:
    """What is wrong with a list's paging or filters (one line, naming the parameter), or None."""
    if not 1 <= limit <= PAGE_LIMIT:
        return f"limit: {limit} is not an integer from 1 to {PAGE_LIMIT}"
    if not 0 <= offset <= MAX_OFFSET:
        return f"offset: {offset} is not an integer from 0 to {MAX_OFFSET}"
    for key, value in filters.items():
        pattern, what = FILTERS[name][key]
        if value is not None and not pattern.match(value):
            return f"{key}: {value[:40]!r} is not {what}"
    return None


# The members (canonical first by CANONICAL_MEMBER's order), their keys and milestones of `x`.
_BUSINESS = f"""
CROSS JOIN LATERAL (
    SELECT {identity.CANONICAL_MEMBER} AS correlation_id,
           array_agg(t.correlation_id ORDER BY t.first_event_at, t.correlation_id) AS correlation_ids,
           (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id)
                FILTER (WHERE t.order_id IS NOT NULL))[1] AS order_id
    FROM transactions t WHERE t.business_id = x.business_id
) b
CROSS JOIN LATERAL (
    SELECT COALESCE(jsonb_object_agg(kind, vals ORDER BY kind), '{{}}'::jsonb) AS keys FROM (
        SELECT k.kind, jsonb_agg(DISTINCT k.value ORDER BY k.value) AS vals
        FROM transactions t JOIN transaction_keys k ON k.correlation_id = t.correlation_id
        WHERE t.business_id = x.business_id GROUP BY k.kind
    ) kv
) k
"""  # noqa: S608 (a constant fragment of controltower.identity)

_ORPHAN_LIST = sa.text(f"""
SELECT b.correlation_id, b.correlation_ids, b.order_id, COALESCE(x.channel, 'unknown') AS channel,
       COALESCE(x.system, 'unknown') AS system, x.first_event_at, x.orphaned_at, k.keys,
       (SELECT array_agg(milestone ORDER BY reached_at, milestone) FROM (
            SELECT m.milestone, min(m.reached_at) AS reached_at
            FROM transactions t JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
            WHERE t.business_id = x.business_id GROUP BY m.milestone) ms) AS milestones
FROM (  -- the page first (newest first: orphaned_at is the earliest event + grace), then its details
    SELECT * FROM signal_orphans
    WHERE orphaned_at IS NOT NULL
      AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
      AND (CAST(:system AS text) IS NULL OR COALESCE(system, 'unknown') = :system)
    ORDER BY orphaned_at DESC, business_id
    LIMIT :limit OFFSET :offset
) x
{_BUSINESS}
WHERE b.correlation_id IS NOT NULL
ORDER BY x.orphaned_at DESC, x.business_id
""")  # noqa: S608 (constant fragments)

_ORPHAN_TOTALS = sa.text("""
SELECT COALESCE(system, 'unknown') AS system, COALESCE(channel, 'unknown') AS channel, count(*) AS orphans
FROM signal_orphans WHERE orphaned_at IS NOT NULL
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
""")

_DUPLICATE_LIST = sa.text(f"""
SELECT b.correlation_id, b.correlation_ids, b.order_id, COALESCE(x.channel, 'unknown') AS channel,
       x.received_at, x.erp_documents, k.keys
FROM (  -- the page first (signal_orders_duplicate_idx), then its details
    SELECT * FROM signal_orders
    WHERE cardinality(erp_documents) >= 2
      AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
    ORDER BY received_at DESC, business_id
    LIMIT :limit OFFSET :offset
) x
{_BUSINESS}
WHERE b.correlation_id IS NOT NULL
ORDER BY x.received_at DESC, x.business_id
""")  # noqa: S608 (constant fragments)

_HUBS = sa.text("""
SELECT kind, value, fanout, first_seen_at, last_seen_at FROM identity_hubs
WHERE CAST(:kind AS text) IS NULL OR kind = :kind
ORDER BY fanout DESC, kind, value
LIMIT :limit OFFSET :offset
""")


def orphans(
    conn: Connection, *, now: datetime, channel: str | None = None, system: str | None = None,
    limit: int = 100, offset: int = 0,
) -> list[dict[str, Any]]:
    """Orphan business transactions, newest first, with their keys, system, channel and age."""
    params = {"channel": channel, "system": system, "limit": limit, "offset": offset}
    out = []
    for r in conn.execute(_ORPHAN_LIST, params):
        out.append({
            "correlation_id": r.correlation_id, "correlation_ids": list(r.correlation_ids), "order_id": r.order_id,
            "channel": r.channel, "system": r.system, "keys": r.keys, "milestones": list(r.milestones or []),
            "first_event_at": rfc3339(r.first_event_at), "orphaned_at": rfc3339(r.orphaned_at),
            "age_ms": max(0, int((now - r.first_event_at).total_seconds() * 1000)),
        })
    return out


def orphan_counts(conn: Connection) -> list[dict[str, Any]]:
    """Orphans per system and channel, most first."""
    return [dict(r._mapping) for r in conn.execute(_ORPHAN_TOTALS)]


def duplicates(conn: Connection, *, channel: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Duplicate orders, newest first: the order, its members and its ERP documents."""
    out = []
    for r in conn.execute(_DUPLICATE_LIST, {"channel": channel, "limit": limit, "offset": offset}):
        out.append({
            "correlation_id": r.correlation_id, "correlation_ids": list(r.correlation_ids), "order_id": r.order_id,
            "channel": r.channel, "received_at": rfc3339(r.received_at), "erp_documents": list(r.erp_documents),
            "keys": r.keys,
        })
    return out


def hubs(conn: Connection, *, kind: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Identity values that link nothing because too many correlation ids carry them, widest first."""
    out = []
    for r in conn.execute(_HUBS, {"kind": kind, "limit": limit, "offset": offset}):
        out.append({"kind": r.kind, "value": r.value, "fanout": int(r.fanout),
                    "first_seen_at": rfc3339(r.first_seen_at), "last_seen_at": rfc3339(r.last_seen_at)})
    return out
