"""Reading one business transaction: search by any of its keys, and its whole story.

Shared by the HTTP API (`/v1/transactions`), the CLI (`controltower search`) and the
dashboard. Read-only. A business transaction is every correlation id sharing one
`transactions.business_id` (ingest links them by identity keys); readers never show that id
but the *canonical member* (`controltower.identity.CANONICAL_MEMBER`), which does not depend
on arrival order, and the *business channel* (`identity.BUSINESS_CHANNEL`).

Every read goes through indexes: search resolves a key through `transaction_keys` (primary
key) or a correlation id through `transactions` (primary key), maps the hits to business ids,
then reads the members by `transactions_business_idx`; `get` does the same from one member.
On a Citus cluster (`controltower.distribute.on_citus`) search is three routed lookups instead
of one statement (the key by value on its one shard, then the hits' businesses, then their
members), as Citus cannot join `transaction_keys` with `transactions` laterally; one server keeps
the one round trip. Events are read per member bounded by the business's first/last event time,
so partition pruning applies. SLA verdicts come from `controltower.slajudge` over the merged milestones,
judged under the business channel, with the definitions the metrics room publishes to
`sla_definitions`, so they agree with the SLA table. A stored value the judge cannot read
(a promise in year 9999, a garbage date) is shown with a reason, never raised.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import distribute, slajudge
from controltower.identity import BUSINESS_CHANNEL, CANONICAL_MEMBER
from controltower.vocab import rfc3339

MAX_PAGE = 200
MAX_MEMBERS = 1000  # members described one by one in a view; `correlation_ids` lists them all

# One business transaction's fields, aggregated over its member rows `t` (GROUP BY business_id)
# with the same merge rules ingest applies to one correlation id's events: "first" fields follow
# the earliest member, "last" fields the latest, counts add up, the latest error wins.
_BUSINESS_FIELDS = f"""
    {CANONICAL_MEMBER} AS correlation_id,
    array_agg(t.correlation_id ORDER BY t.correlation_id) AS correlation_ids,
    {BUSINESS_CHANNEL} AS channel,
    (array_agg(t.flow ORDER BY t.first_event_at, t.correlation_id))[1] AS flow,
    (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id) FILTER (WHERE t.order_id IS NOT NULL))[1]
        AS order_id,
    (array_agg(t.status ORDER BY t.last_event_at DESC, t.last_event_id DESC, t.correlation_id DESC))[1] AS status,
    (array_agg(t.last_milestone ORDER BY t.last_event_at DESC, t.last_event_id DESC, t.correlation_id DESC))[1]
        AS last_milestone,
    (array_agg(t.last_system ORDER BY t.last_event_at DESC, t.last_event_id DESC, t.correlation_id DESC))[1]
        AS last_system,
    min(t.first_event_at) AS first_event_at,
    max(t.last_event_at) AS last_event_at,
    sum(t.event_count)::bigint AS event_count,
    sum(t.error_count)::bigint AS error_count,
    sum(t.retry_count)::bigint AS retry_count,
    sum(t.dead_letter_count)::bigint AS dead_letter_count,
    max(t.last_error_at) AS last_error_at,
    (array_agg(t.last_error_code ORDER BY t.last_error_at DESC, coalesce(t.last_error_code, '') DESC,
               coalesce(t.last_error_message, '') DESC) FILTER (WHERE t.last_error_at IS NOT NULL))[1]
        AS last_error_code,
    (array_agg(t.last_error_message ORDER BY t.last_error_at DESC, coalesce(t.last_error_code, '') DESC,
               coalesce(t.last_error_message, '') DESC) FILTER (WHERE t.last_error_at IS NOT NULL))[1]
        AS last_error_message
"""

# until this transaction ends (set_config(..., true) is SET LOCAL); on Citus, a fan-out over the
# shards uses the one cached connection per worker instead of opening more (each new connection
# costs milliseconds, the shards' index probes microseconds); plain PostgreSQL ignores it
_POINT_LOOKUP = sa.text(
    "SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true), "
    "set_config('citus.max_adaptive_executor_pool_size', '1', true)"
)

# What search answers per business transaction: its fields, and which keys of which members
# matched (over the hits `h`, grouped by business).
_MATCHED = """array_agg(DISTINCT h.kind ORDER BY h.kind) AS matched_by,
               array_agg(DISTINCT h.correlation_id ORDER BY h.correlation_id) AS matched_correlation_ids"""
_SEARCH_FIELDS = ("correlation_id", "correlation_ids", "channel", "flow", "order_id", "status", "last_milestone",
                  "first_event_at", "last_event_at", "event_count", "error_count", "last_error_code",
                  "last_error_message")
_SEARCH_COLUMNS = ", ".join(f"b.{f}" for f in _SEARCH_FIELDS) + ", m.matched_by, m.matched_correlation_ids"

# One server: one round trip. Key or member id → member hits → their business ids → every member
# of those (all by index).
_SEARCH = sa.text(
    f"""
    WITH hits AS (
        SELECT correlation_id, 'correlation_id' AS kind FROM transactions WHERE correlation_id = :q
        UNION ALL
        SELECT correlation_id, kind FROM transaction_keys WHERE value = :q
    ), matched AS (
        SELECT t.business_id, {_MATCHED}
        FROM hits h JOIN transactions t ON t.correlation_id = h.correlation_id
        GROUP BY t.business_id
    )
    -- LATERAL: each matched business's members by index, whatever the planner believes (a fresh
    -- store has no statistics yet: a merge join over the whole business index cost 50x); the
    -- matched arrays join after the aggregate, not once per member row
    SELECT {_SEARCH_COLUMNS}
    FROM matched m
    CROSS JOIN LATERAL (
        SELECT {_BUSINESS_FIELDS} FROM transactions t WHERE t.business_id = m.business_id
    ) b
    ORDER BY b.last_event_at DESC, b.correlation_id
    LIMIT :limit OFFSET :offset
    """  # noqa: S608 (fixed fragments from controltower.identity, no user input)
)

# A Citus cluster cannot join `transaction_keys` (distributed by value) with `transactions` (by
# correlation id), nor a distributed table laterally: there search is three lookups, each routed
# by its distribution column:
# 1. the members carrying the key: `transaction_keys` by value (one shard);
_KEY_HITS = sa.text("SELECT correlation_id, kind FROM transaction_keys WHERE value = :q")
# 2. their business ids (and whether `q` is itself a correlation id): `transactions` by primary
#    key (only the shards of those ids);
_BUSINESS_OF = sa.text(
    "SELECT correlation_id, business_id FROM transactions WHERE correlation_id = ANY(CAST(:cids AS text[]))"
)
# 3. every member of those businesses (transactions_business_idx on every shard: a business's
#    members live on any shard), one row per business, a page of them;
_BUSINESSES_PAGE = f"""
    SELECT t.business_id, {_BUSINESS_FIELDS}
    FROM transactions t WHERE {{members}}
    GROUP BY t.business_id
    ORDER BY last_event_at DESC, correlation_id
    LIMIT :limit OFFSET :offset
"""  # noqa: S608 (fixed fragments from controltower.identity, no user input)
_BUSINESSES = sa.text(_BUSINESSES_PAGE.format(members="t.business_id = ANY(CAST(:bids AS text[]))"))
# 3'. on a cluster keeping `business_members` (controltower.distribute.MEMBERS): the members of
#    those businesses from there (only the businesses' shards), then the same page over their rows
#    by correlation id (only the members' shards): a handful of shards instead of all of them.
_MEMBER_IDS = sa.text(
    f"SELECT correlation_id FROM {distribute.MEMBERS} WHERE business_id = ANY(CAST(:bids AS text[]))"  # noqa: S608
)
_BUSINESSES_OF_MEMBERS = sa.text(_BUSINESSES_PAGE.format(members="t.correlation_id = ANY(CAST(:cids AS text[]))"))
# 4. and which keys of which members matched, from the hits as arrays (on the coordinator: no
#    table; a join with the distributed page would ship them to every worker).
_MATCHES = sa.text(
    f"""
    SELECT h.business_id, {_MATCHED}
    FROM unnest(CAST(:cids AS text[]), CAST(:kinds AS text[]), CAST(:bids AS text[])) AS h(correlation_id, kind, business_id)
    GROUP BY h.business_id
    """  # noqa: S608 (fixed fragments, no user input)
)

# The business and its member rows in one round trip (a view answers in a few milliseconds).
_BUSINESS_ROW = f"""
    SELECT {_BUSINESS_FIELDS},
           (json_agg(json_build_object(
                'correlation_id', t.correlation_id, 'channel', t.channel, 'flow', t.flow, 'order_id', t.order_id,
                'status', t.status, 'last_system', t.last_system, 'first_event_at', t.first_event_at,
                'last_event_at', t.last_event_at, 'event_count', t.event_count, 'error_count', t.error_count)
            ORDER BY t.first_event_at, t.correlation_id)) AS members
    FROM transactions t
    WHERE {{members}}
    GROUP BY t.business_id
"""  # noqa: S608 (fixed fragments from controltower.identity, no user input)
_BUSINESS = sa.text(_BUSINESS_ROW.format(
    members="t.business_id = (SELECT business_id FROM transactions WHERE correlation_id = :cid)"))
# on a cluster keeping business_members: the member's business (its shard), that business's
# members (the business's shard), then their rows (their shards)
_BUSINESS_OF_ONE = sa.text("SELECT business_id FROM transactions WHERE correlation_id = :cid")
_BUSINESS_BY_MEMBERS = sa.text(_BUSINESS_ROW.format(members="t.correlation_id = ANY(CAST(:cids AS text[]))"))
# Every member's keys and milestones, in one round trip: ('key', member, kind, value, first_seen_at)
# and ('milestone', member, milestone, NULL, reached_at).
_FACTS = sa.text(
    """
    SELECT 'key' AS what, correlation_id, kind AS name, value, first_seen_at AS at
    FROM transaction_keys WHERE correlation_id = ANY(:cids)
    UNION ALL
    SELECT 'milestone', correlation_id, milestone, NULL, reached_at
    FROM transaction_milestones WHERE correlation_id = ANY(:cids)
    ORDER BY what, name, at, value, correlation_id
    """
)
# Bounded by the business's own time span: only the partitions it touches are read.
_EVENTS = sa.text(
    """
    SELECT correlation_id, event_id, occurred_at, received_at, order_id, channel, flow, stage, status, system,
           latency_ms, error_code, error_message, attributes, payload, trace_id, span_id,
           parent_span_id, source
    FROM events
    WHERE correlation_id = ANY(:cids) AND occurred_at >= :first AND occurred_at <= :last
    ORDER BY occurred_at, event_id, correlation_id
    LIMIT :limit
    """
)
_SLA_DEFS = sa.text(
    "SELECT name, kind, from_milestone, to_milestone, default_target_ms, targets_ms, "
    "deadline_attribute, objective, description, definition FROM sla_definitions "
    "WHERE from_milestone IS NOT NULL AND to_milestone IS NOT NULL ORDER BY name"
)


def published(conn: Connection) -> list[slajudge.Definition]:
    """The latency SLA definitions the metrics room published, as the judge reads them."""
    return [slajudge.Definition.from_row(row) for row in conn.execute(_SLA_DEFS).mappings()]


def search(conn: Connection, q: str, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Business transactions any of whose members has a key (or correlation id) equal to `q`,
    newest first, one row each: `correlation_id` is the canonical member, `correlation_ids` all
    members, `matched_by` the key kinds that matched and `matched_correlation_ids` the members
    that carry them."""
    q = q.strip()
    if not q or "\x00" in q:  # stored text never holds U+0000 (PostgreSQL refuses it): no match
        return []
    # A lookup of a few rows by index: parallel workers and JIT would only add their start-up
    # (~20 and ~12 ms), which the planner picks while fresh tables have no statistics yet.
    conn.execute(_POINT_LOOKUP)
    page = {"limit": max(1, min(limit, MAX_PAGE)), "offset": max(0, offset)}
    if distribute.on_citus(conn):
        items = _search_routed(conn, q, page)
    else:
        items = [dict(row._mapping) for row in conn.execute(_SEARCH, {"q": q, **page})]
    out = []
    for item in items:
        item["first_event_at"] = rfc3339(item["first_event_at"])
        item["last_event_at"] = rfc3339(item["last_event_at"])
        out.append(item)
    return out


def _search_routed(conn: Connection, q: str, page: dict[str, int]) -> list[dict[str, Any]]:
    keys = conn.execute(_KEY_HITS, {"q": q}).all()
    owners = dict(conn.execute(_BUSINESS_OF, {"cids": sorted({q, *(cid for cid, _ in keys)})}).tuples().all())
    # a key row whose transaction is gone (retention between the two reads) matches nothing
    hits = [(cid, kind, owners[cid]) for cid, kind in keys if cid in owners]
    if q in owners:
        hits.append((q, "correlation_id", owners[q]))
    if not hits:
        return []
    cids, kinds, bids = (list(column) for column in zip(*hits, strict=True))
    if distribute.has_members(conn):
        members = conn.execute(_MEMBER_IDS, {"bids": sorted(set(bids))}).scalars().all()
        businesses = conn.execute(_BUSINESSES_OF_MEMBERS, {"cids": sorted(members), **page}).mappings().all()
    else:
        businesses = conn.execute(_BUSINESSES, {"bids": sorted(set(bids)), **page}).mappings().all()
    if not businesses:
        return []
    matches = {r.business_id: r for r in conn.execute(_MATCHES, {"cids": cids, "kinds": kinds, "bids": bids})}
    out = []
    for b in businesses:
        m = matches[b["business_id"]]
        row = {k: b[k] for k in _SEARCH_FIELDS}
        out.append({**row, "matched_by": m.matched_by, "matched_correlation_ids": m.matched_correlation_ids})
    return out


def verdicts(
    facts: slajudge.Facts, definitions: list[slajudge.Definition], *, now: datetime
) -> list[dict[str, Any]]:
    """Every SLA verdict that applies to one transaction, in the API shape. Pure."""
    return [v.as_dict() for v in slajudge.judge_all(definitions, facts, now=now)]


def merge_milestones(rows: list[tuple[str, str, datetime]]) -> dict[str, tuple[datetime, str]]:
    """Each milestone's earliest (reached_at, member) over `(correlation_id, milestone, reached_at)`
    rows; ties go to the smallest correlation id, so the answer does not depend on row order. Pure."""
    merged: dict[str, tuple[datetime, str]] = {}
    for cid, milestone, at in rows:
        if milestone not in merged or (at, cid) < merged[milestone]:
            merged[milestone] = (at, cid)
    return dict(sorted(merged.items(), key=lambda item: (item[1][0], item[0])))


def get(
    conn: Connection, correlation_id: str, *, now: datetime | None = None, event_limit: int = 5000
) -> dict[str, Any] | None:
    """The whole business transaction `correlation_id` (any member) belongs to: its fields,
    members, keys, milestones (earliest over members, with who reached them), SLA verdicts and
    every member's events in time order (at most `event_limit`)."""
    if "\x00" in correlation_id:
        return None
    if distribute.on_citus(conn):  # its fan-outs over the cached connections (one server: a round trip less)
        conn.execute(_POINT_LOOKUP)
    if distribute.has_members(conn):
        bid = conn.execute(_BUSINESS_OF_ONE, {"cid": correlation_id}).scalar()
        cids = [] if bid is None else conn.execute(_MEMBER_IDS, {"bids": [bid]}).scalars().all()
        tx = conn.execute(_BUSINESS_BY_MEMBERS, {"cids": sorted(cids)}).mappings().first() if cids else None
    else:
        tx = conn.execute(_BUSINESS, {"cid": correlation_id}).mappings().first()
    if tx is None:
        return None
    now = now or datetime.now(UTC)
    cids = list(tx["correlation_ids"])
    member_rows = tx["members"][:MAX_MEMBERS]

    keys: dict[str, list[str]] = defaultdict(list)
    member_keys: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    reached: list[tuple[str, str, datetime]] = []
    for what, cid, name, value, at in conn.execute(_FACTS, {"cids": cids}):
        if what == "milestone":
            reached.append((cid, name, at))
            continue
        if value not in keys[name]:
            keys[name].append(value)
        member_keys[cid][name].append(value)

    events = []
    attributes: dict[str, list[Any]] = defaultdict(list)  # per milestone: its events' attributes, all members
    systems: dict[str, list[str]] = defaultdict(list)  # per member: the systems of its events, in time order
    first_ok: dict[tuple[str, str], str | None] = {}  # (member, milestone) → system of its first ok event
    for row in conn.execute(
        _EVENTS,
        {"cids": cids, "first": tx["first_event_at"], "last": tx["last_event_at"], "limit": event_limit},
    ).mappings():
        item = {k: v for k, v in row.items() if v is not None}
        item["occurred_at"] = rfc3339(row["occurred_at"])
        item["received_at"] = rfc3339(row["received_at"])
        milestone = f"{row['flow']}.{row['stage']}"
        attributes[milestone].append(row["attributes"] or {})
        member, system = row["correlation_id"], row["system"]
        if system and system not in systems[member]:
            systems[member].append(system)
        if row["status"] == "ok":
            first_ok.setdefault((member, milestone), system)
        events.append(item)

    merged = merge_milestones(reached)
    last_system = {r["correlation_id"]: r["last_system"] for r in member_rows}
    facts = slajudge.Facts(
        # judged as the SLA table counts it: every milestone under the business channel
        milestones={m: at for m, (at, _) in merged.items()}, channel=tx["channel"], attributes=attributes,
    )
    return {
        "correlation_id": tx["correlation_id"],
        "correlation_ids": cids,
        "order_id": tx["order_id"],
        "channel": tx["channel"],
        "flow": tx["flow"],
        "status": tx["status"],
        "last_milestone": tx["last_milestone"],
        "last_system": tx["last_system"],
        "first_event_at": rfc3339(tx["first_event_at"]),
        "last_event_at": rfc3339(tx["last_event_at"]),
        "event_count": tx["event_count"],
        "error_count": tx["error_count"],
        "retry_count": tx["retry_count"],
        "dead_letter_count": tx["dead_letter_count"],
        "last_error": None
        if tx["last_error_at"] is None
        else {"at": rfc3339(tx["last_error_at"]), "code": tx["last_error_code"], "message": tx["last_error_message"]},
        "keys": dict(keys),
        "milestones": {m: rfc3339(at) for m, (at, _) in merged.items()},
        "reached_by": {
            m: {"correlation_id": cid, "system": first_ok.get((cid, m), last_system.get(cid))}
            for m, (_, cid) in merged.items()
        },
        "members": [
            {
                "correlation_id": r["correlation_id"],
                "channel": r["channel"],
                "flow": r["flow"],
                "order_id": r["order_id"],
                "status": r["status"],
                "systems": systems.get(r["correlation_id"]) or ([r["last_system"]] if r["last_system"] else []),
                "keys": {kind: list(values) for kind, values in member_keys.get(r["correlation_id"], {}).items()},
                "first_event_at": _json_time(r["first_event_at"]),
                "last_event_at": _json_time(r["last_event_at"]),
                "event_count": r["event_count"],
                "error_count": r["error_count"],
            }
            for r in member_rows
        ],
        "sla": verdicts(facts, published(conn), now=now),
        "events": events,
    }


def _json_time(text: str | None) -> str | None:
    """A timestamptz as json_build_object writes it (ISO 8601, the session's offset), in RFC 3339 UTC."""
    return None if text is None else rfc3339(datetime.fromisoformat(text))
