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


# A page of a signal table first (newest first), then the details of its business ids, each a
# read Citus runs on the shards: the members grouped by business (canonical first by
# CANONICAL_MEMBER's order; transactions_business_idx), their keys by correlation id (the keys are
# distributed by value: no join with transactions) and, for orphans, their milestones.
_ORPHAN_PAGE = sa.text("""
SELECT business_id, channel, system, first_event_at, orphaned_at FROM signal_orphans
WHERE orphaned_at IS NOT NULL
  AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
  AND (CAST(:system AS text) IS NULL OR COALESCE(system, 'unknown') = :system)
ORDER BY orphaned_at DESC, business_id
LIMIT :limit OFFSET :offset
""")
_DUPLICATE_PAGE = sa.text("""
SELECT business_id, channel, received_at, erp_documents FROM signal_orders
WHERE cardinality(erp_documents) >= 2
  AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
ORDER BY received_at DESC, business_id
LIMIT :limit OFFSET :offset
""")
_MEMBERS = sa.text(f"""
SELECT t.business_id, {identity.CANONICAL_MEMBER} AS correlation_id,
       array_agg(t.correlation_id ORDER BY t.first_event_at, t.correlation_id) AS correlation_ids,
       (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id)
            FILTER (WHERE t.order_id IS NOT NULL))[1] AS order_id
FROM transactions t WHERE t.business_id = ANY(CAST(:bids AS text[])) GROUP BY t.business_id
""")  # noqa: S608 (a constant fragment of controltower.identity)
_KEYS = sa.text("""
SELECT bid, jsonb_object_agg(kind, vals ORDER BY kind) AS keys FROM (
    SELECT x.bid, k.kind, jsonb_agg(DISTINCT k.value ORDER BY k.value) AS vals
    FROM transaction_keys k JOIN unnest(CAST(:cids AS text[]), CAST(:cid_bids AS text[])) AS x(cid, bid)
        ON k.correlation_id = x.cid
    WHERE k.correlation_id = ANY(CAST(:cids AS text[]))
    GROUP BY x.bid, k.kind
) kv GROUP BY bid
""")
_MILESTONES = sa.text("""
SELECT bid, array_agg(milestone ORDER BY reached_at, milestone) AS milestones FROM (
    SELECT t.business_id AS bid, m.milestone, min(m.reached_at) AS reached_at
    FROM transactions t JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
    WHERE t.business_id = ANY(CAST(:bids AS text[])) GROUP BY 1, 2
) ms GROUP BY bid
""")


def _details(conn: Connection, page: list[Any], *, milestones: bool) -> dict[str, dict[str, Any]]:
    """Per business id of the page that still has members: its members, keys (and milestones)."""
    bids = sorted({r.business_id for r in page})
    if not bids:
        return {}
    out = {r.business_id: {"correlation_id": r.correlation_id, "correlation_ids": list(r.correlation_ids),
                           "order_id": r.order_id, "keys": {}, "milestones": []}
           for r in conn.execute(_MEMBERS, {"bids": bids})}
    members = [(c, bid) for bid, d in out.items() for c in d["correlation_ids"]]
    if members:
        for r in conn.execute(_KEYS, {"cids": [c for c, _ in members], "cid_bids": [b for _, b in members]}):
            out[r.bid]["keys"] = r.keys
    if milestones and out:
        for r in conn.execute(_MILESTONES, {"bids": sorted(out)}):
            out[r.bid]["milestones"] = list(r.milestones or [])
    return out


_ORPHAN_TOTALS = sa.text("""
SELECT COALESCE(system, 'unknown') AS system, COALESCE(channel, 'unknown') AS channel, count(*) AS orphans
FROM signal_orphans WHERE orphaned_at IS NOT NULL
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
""")

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
    page = conn.execute(_ORPHAN_PAGE, params).all()
    details = _details(conn, page, milestones=True)
    out = []
    for r in page:
        d = details.get(r.business_id)
        if d is None:  # gone since the signals job ran
            continue
        out.append({
            "correlation_id": d["correlation_id"], "correlation_ids": d["correlation_ids"], "order_id": d["order_id"],
            "channel": r.channel or "unknown", "system": r.system or "unknown", "keys": d["keys"],
            "milestones": d["milestones"], "first_event_at": rfc3339(r.first_event_at),
            "orphaned_at": rfc3339(r.orphaned_at),
            "age_ms": max(0, int((now - r.first_event_at).total_seconds() * 1000)),
        })
    return out


def orphan_counts(conn: Connection) -> list[dict[str, Any]]:
    """Orphans per system and channel, most first."""
    return [dict(r._mapping) for r in conn.execute(_ORPHAN_TOTALS)]


def duplicates(conn: Connection, *, channel: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Duplicate orders, newest first: the order, its members and its ERP documents."""
    page = conn.execute(_DUPLICATE_PAGE, {"channel": channel, "limit": limit, "offset": offset}).all()
    details = _details(conn, page, milestones=False)
    out = []
    for r in page:
        d = details.get(r.business_id)
        if d is None:  # gone since the signals job ran
            continue
        out.append({
            "correlation_id": d["correlation_id"], "correlation_ids": d["correlation_ids"], "order_id": d["order_id"],
            "channel": r.channel or "unknown", "received_at": rfc3339(r.received_at),
            "erp_documents": list(r.erp_documents), "keys": d["keys"],
        })
    return out


def hubs(conn: Connection, *, kind: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Identity values that link nothing because too many correlation ids carry them, widest first."""
    out = []
    for r in conn.execute(_HUBS, {"kind": kind, "limit": limit, "offset": offset}):
        out.append({"kind": r.kind, "value": r.value, "fanout": int(r.fanout),
                    "first_seen_at": rfc3339(r.first_seen_at), "last_seen_at": rfc3339(r.last_seen_at)})
    return out
