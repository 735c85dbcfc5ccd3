"""Maintaining the identity graph: which business transaction each correlation ID belongs to.

Called by ingest inside the batch's database transaction, right after the batch's key rows
were upserted, with the identity key rows that batch really inserted (`link`); and by
`controltower relink` chunk by chunk with every stored identity key row (`full=True`, which
also re-decides which values are hubs under the current fan-out limit).

One call, set-based, in a handful of statements:

1. lock the new rows' identity values (advisory locks, sorted: two batches linking the same
   value run one after the other and the second sees the first);
2. count each value's correlation IDs (capped at limit + 1); a value past the limit becomes a
   hub (`identity_hubs`) and links none of its correlation IDs any more;
3. new links alone can only merge: the businesses of each linking value's holders (locked,
   advisory, sorted, re-read until stable) become one, named by the biggest stored one; only
   the smaller ones' members are rewritten, and the batch's own new correlation ids are
   stored straight into it (`LinkResult.assign`, `_merge`);
4. a value that just became a hub (or relink) may split: the region (the businesses of the
   rows' correlation IDs and of every holder of their values) is locked and its connected
   components recomputed from its identity keys (non-hub, linkable), named by
   `controltower.identity.name_components` (the biggest old business keeps its id).
   Either way only members whose business changed are written, and old and new ids are
   journaled in `identity_changes` for the SLA job.

Cost: a merge is O(members of the smaller side); a split O(members of the region). The
result (the partition into business transactions) does not depend on arrival order,
duplication or batch boundaries: the components are a function of the stored key rows and
the hub set, and a hub only ever grows.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from controltower.distribute import MEMBERS, MEMBERS_REMOVE, add_members
from controltower.identity import (
    LOCK_BUSINESS,
    LOCK_VALUE,
    MAX_LINK_LEN,
    components,
    is_hub,
    name_components,
    refusal,
)

MAX_ROUNDS = 8  # region re-reads while concurrent batches keep moving it (then the batch retries)
# Lock ids per class are folded into this many slots: a batch holds at most that many advisory
# locks per class, whatever its size (each is an entry of PostgreSQL's shared lock table, about
# max_locks_per_transaction x max_connections for all sessions together: 20k values in one batch
# ran it out of shared memory). Two values sharing a slot only serialize their batches.
LOCK_SLOTS = 1024


class RegionUnstable(psycopg.errors.SerializationFailure):
    """The region kept changing under concurrent merges; the caller retries the batch."""


@dataclass
class LinkResult:
    moved: int = 0  # correlation ids whose business changed
    merged: int = 0  # business ids that disappeared into another
    new_hubs: list[tuple[str, str]] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # "hub": new rows on a hub value
    # correlation ids of this batch without a row yet, and the business each must be stored with
    pending: set[str] = field(default_factory=set)
    assign: dict[str, str] = field(default_factory=dict)
    own: set[str] = field(default_factory=set)  # correlation ids of the rows being linked


def _lock_ids(namespace: str, keys: Iterable[str]) -> list[int]:
    """Stable lock ids (sorted, distinct, fewer than LOCK_SLOTS) for advisory locks of one class."""
    out = set()
    for key in keys:
        digest = hashlib.blake2b(f"{namespace}\x1f{key}".encode(), digest_size=4).digest()
        out.add(int.from_bytes(digest, "big") % LOCK_SLOTS)
    return sorted(out)


def business_lock_ids(business_ids: Iterable[str]) -> list[int]:
    """The advisory lock ids (class LOCK_BUSINESS) linking takes for these business ids."""
    return _lock_ids("business", business_ids)


# unnest yields the (sorted) ids in array order: locks are taken in that order
LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int4[]) AS k"  # (class, ids)

# Which of the values are hubs already (identity_hubs: a reference table on Citus).
_HUBS = """
SELECT h.kind, h.value, h.fanout FROM identity_hubs h
JOIN unnest(%(kinds)s::text[], %(values)s::text[]) AS u(kind, value) ON h.kind = u.kind AND h.value = u.value
"""
# Each value's holders, capped at %(cap)s per value (a hub's would be all of them). A window
# partitioned by the value runs on the value's shard when transaction_keys is distributed by it
# (Citus refuses a LIMIT in a lateral subquery over unnest); the primary key's order feeds it.
_FANOUT = """
SELECT kind, value, correlation_id FROM (
    SELECT k.kind, k.value, k.correlation_id,
           row_number() OVER (PARTITION BY k.value, k.kind ORDER BY k.correlation_id) AS n
    FROM transaction_keys k
    JOIN unnest(%(kinds)s::text[], %(values)s::text[]) AS u(kind, value) ON k.value = u.value AND k.kind = u.kind
) x
WHERE n <= %(cap)s
"""
_HUB_COUNT = """
SELECT k.kind, k.value, count(*) FROM transaction_keys k
JOIN unnest(%(kinds)s::text[], %(values)s::text[]) AS u(kind, value) ON k.value = u.value AND k.kind = u.kind
GROUP BY k.kind, k.value
"""
_HUB_UP = """
INSERT INTO identity_hubs AS h (kind, value, fanout, first_seen_at, last_seen_at)
SELECT u.kind, u.value, u.n, %(now)s, %(now)s
FROM unnest(%(kinds)s::text[], %(values)s::text[], %(counts)s::int8[]) AS u(kind, value, n)
ORDER BY 1, 2
ON CONFLICT (kind, value) DO UPDATE SET fanout = excluded.fanout, last_seen_at = excluded.last_seen_at
"""
_HUB_GROW = """
UPDATE identity_hubs h SET fanout = h.fanout + u.n, last_seen_at = GREATEST(h.last_seen_at, %(now)s)
FROM unnest(%(kinds)s::text[], %(values)s::text[], %(counts)s::int8[]) AS u(kind, value, n)
WHERE h.kind = u.kind AND h.value = u.value
"""
_HUB_DOWN = """
DELETE FROM identity_hubs h USING unnest(%(kinds)s::text[], %(values)s::text[]) AS u(kind, value)
WHERE h.kind = u.kind AND h.value = u.value
"""
_HOLDERS = """
SELECT k.kind, k.value, k.correlation_id FROM transaction_keys k
JOIN unnest(%(kinds)s::text[], %(values)s::text[]) AS u(kind, value) ON k.value = u.value AND k.kind = u.kind
"""
_BUSINESS_OF = "SELECT correlation_id, business_id FROM transactions WHERE correlation_id = ANY(%s)"
# members per business, counted up to the cap (the window stops counting a big one there)
_COUNT = """
SELECT business_id, count(*) FROM (
    SELECT business_id, row_number() OVER (PARTITION BY business_id) AS n
    FROM {table} WHERE business_id = ANY(%s)
) x
WHERE n <= %s
GROUP BY business_id
"""
_RENAME = """
UPDATE transactions t SET business_id = u.new
FROM unnest(%s::text[], %s::text[]) AS u(old, new)
WHERE t.business_id = u.old
"""
_MEMBERS = "SELECT correlation_id, business_id FROM {table} WHERE business_id = ANY(%s)"
# Members by business id: one server reads transactions_business_idx; a cluster keeping
# business_members (controltower.distribute.MEMBERS, `members=True`) reads that, one shard per
# business instead of all of them, and every business_id write below is mirrored there.
_BY_BUSINESS = {
    False: {"count": _COUNT.format(table="transactions"), "members": _MEMBERS.format(table="transactions")},
    True: {"count": _COUNT.format(table=MEMBERS), "members": _MEMBERS.format(table=MEMBERS)},
}
_EDGES = f"""
SELECT k.kind, k.value, k.correlation_id FROM transaction_keys k
WHERE k.correlation_id = ANY(%(cids)s) AND k.kind = ANY(%(kinds)s)
  AND length(k.value) <= {MAX_LINK_LEN}
  AND NOT EXISTS (SELECT 1 FROM identity_hubs h WHERE h.kind = k.kind AND h.value = k.value)
"""  # noqa: S608 (MAX_LINK_LEN is a module constant)
_MOVE = """
UPDATE transactions t SET business_id = u.bid
FROM unnest(%s::text[], %s::text[]) AS u(cid, bid)
WHERE t.correlation_id = u.cid
"""
_JOURNAL = "INSERT INTO identity_changes (business_id, changed_at) SELECT b, %s FROM unnest(%s::text[]) AS b"


def link(
    cur: psycopg.Cursor,
    rows: Sequence[tuple[str, str, str]],
    *,
    kinds: Iterable[str],
    limit: int,
    now: datetime,
    full: bool = False,
    seeds: Iterable[str] = (),
    members: bool = False,
) -> LinkResult:
    """Re-link around `rows` ((value, kind, correlation_id) identity key rows, linkable ones,
    already stored). Ingest passes the rows its batch inserted; relink passes stored rows with
    `full=True` (hub status re-decided both ways under `limit`) and, as `seeds`, correlation ids
    whose business must be recomputed even without rows (their keys stopped linking).
    `members`: the database keeps `business_members` (a cluster), read and written with `transactions`."""
    result = LinkResult()
    extra = set(seeds)
    if not rows and not extra:
        return result
    kind_list = sorted(set(kinds))
    values = list({(kind, value) for value, kind, _ in rows})  # any order: lock ids are sorted
    result.own = {cid for _, _, cid in rows}
    cur.execute(LOCK_SQL, (LOCK_VALUE, _lock_ids("value", (f"{k}\x1f{v}" for k, v in values))))
    cur.fetchall()
    cur.execute(_HUBS, {"kinds": [k for k, _ in values], "values": [v for _, v in values]})
    hub_rows: dict[tuple[str, str], int | None] = {(k, v): n for k, v, n in cur.fetchall()}
    # a known hub stays one unless relink re-decides it: its holders are not read
    wanted = values if full else [key for key in values if key not in hub_rows]
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    if wanted:
        cur.execute(_FANOUT, {"kinds": [k for k, _ in wanted], "values": [v for _, v in wanted], "cap": limit + 1})
        for kind, value, cid in cur.fetchall():
            holders[(kind, value)].append(cid)
    seen_business: dict[str, str] = {}  # a first read, before the business locks
    cids = sorted({c for group in holders.values() for c in group})
    if cids:
        cur.execute(_BUSINESS_OF, (cids,))
        seen_business = dict(cur.fetchall())
    fanouts = {key: (len(holders.get(key, ())), hub_rows.get(key)) for key in sorted(set(holders) | set(hub_rows))}
    new_per_value = Counter((kind, value) for value, kind, _ in rows)
    grown: list[tuple[str, str]] = []
    became_hub: list[tuple[str, str]] = []
    stopped_hub: list[tuple[str, str]] = []
    hub_values: set[tuple[str, str]] = set()
    linking: list[tuple[str, str]] = []
    for key, (n, hub_fanout) in fanouts.items():
        if is_hub(n, limit):
            hub_values.add(key)
            if hub_fanout is None:
                became_hub.append(key)
                result.new_hubs.append(key)
            elif not full:
                grown.append(key)
            result.refused["hub"] += 0 if full else new_per_value[key]
        else:
            if hub_fanout is not None:
                if full:
                    stopped_hub.append(key)  # the limit was raised: it links again
                else:
                    hub_values.add(key)  # a hub stays a hub (retention may have shrunk it)
                    grown.append(key)
                    result.refused["hub"] += new_per_value[key]
                    continue
            if n > 1 or full:
                linking.append(key)
    if became_hub:
        params = {"kinds": [k for k, _ in became_hub], "values": [v for _, v in became_hub]}
        cur.execute(_HUB_COUNT, params)
        counts = {(k, v): n for k, v, n in cur.fetchall()}
        cur.execute(_HUB_UP, params | {"counts": [counts.get(key, 0) for key in became_hub], "now": now})
    if grown:
        cur.execute(_HUB_GROW, {
            "kinds": [k for k, _ in grown], "values": [v for _, v in grown],
            "counts": [new_per_value[k] for k in grown], "now": now,
        })
    if stopped_hub:
        cur.execute(_HUB_DOWN, {"kinds": [k for k, _ in stopped_hub], "values": [v for _, v in stopped_hub]})
    if not became_hub and not full and not extra:
        if linking:
            _merge(cur, {key: holders[key] for key in linking}, now, result, seen_business, members)
        return result  # nothing split: new links can only merge businesses
    # a value became a hub (or relink): its correlation ids may have been linked through it
    # only, so the region's components are recomputed from its keys
    seeds = {cid for _, _, cid in rows} | extra
    for key in linking:
        seeds.update(holders[key])
    if became_hub:  # every holder: the capped list may miss the ones it had linked
        cur.execute(_HOLDERS, {"kinds": [k for k, _ in became_hub], "values": [v for _, v in became_hub]})
        seeds.update(r[2] for r in cur.fetchall())
    region = _lock_region(cur, sorted(seeds), result, members)
    cur.execute(_EDGES, {"cids": list(region), "kinds": kind_list})
    by_value: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, value, cid in cur.fetchall():
        if refusal(value) is None:  # the rule ingest applied (the SQL only bounds the length)
            by_value[(kind, value)].append(cid)
    edges = [(cids[0], other) for cids in by_value.values() for other in cids[1:]]
    groups = components(region, edges)
    sizes = Counter(region.values())
    named = name_components(groups, region, sizes)
    moved = {cid: bid for cid, bid in named.items() if region.get(cid) != bid}
    if moved:
        cids = sorted(c for c in moved if c not in result.pending)
        cur.execute(_MOVE, (cids, [moved[c] for c in cids]))
        if members and cids:  # the stored ones' member rows move with them (pending ones get theirs on insert)
            cur.execute(MEMBERS_REMOVE, ([region[c] for c in cids], cids))
            add_members(cur, [moved[c] for c in cids], cids)
        result.assign.update({c: b for c, b in moved.items() if c in result.pending})
        changed = sorted({moved[c] for c in moved} | {region[c] for c in moved if c in region})
        cur.execute(_JOURNAL, (now, changed))
        result.moved = len(moved)
        result.merged = len(set(region.values()) - set(named.values()))
    return result


def _merge(
    cur: psycopg.Cursor, holders: dict[tuple[str, str], list[str]], now: datetime, result: LinkResult,
    seen: dict[str, str], members: bool = False,
) -> None:
    """New links without a new hub only join businesses: the businesses of each linking value's
    holders become one, named by the biggest stored one (this batch's own new correlation ids
    join it without a second write), and only the smaller ones' members are rewritten. Sizes are
    counted only when two stored businesses meet, capped (doubling), so the cost follows the
    smaller side too."""
    business = _lock_businesses(cur, sorted({c for cids in holders.values() for c in cids}), result, seen)
    live = [[c for c in cids if c in business] for cids in holders.values()]  # retention may have removed some
    edges = [(business[cids[0]], business[c]) for cids in live if cids for c in cids[1:]]
    joined = [g for g in components(set(business.values()), edges) if len(g) > 1]
    if not joined:
        return
    stored = [[b for b in g if b not in result.pending] for g in joined]
    sizes = _sizes(cur, [g for g in stored if len(g) > 1], members) if any(len(g) > 1 for g in stored) else {}
    old: list[str] = []
    new: list[str] = []
    for group, kept in zip(joined, stored, strict=True):
        survivor = min(kept or group, key=lambda b: (-sizes.get(b, 1), b))
        for b in group:
            if b != survivor:
                if b in result.pending:  # this batch's own correlation id, not stored yet
                    result.assign[b] = survivor
                    result.moved += 1
                else:
                    old.append(b)
                    new.append(survivor)
    result.merged += sum(len(g) - 1 for g in joined)
    if old and members:
        # the smaller sides' members from business_members (their shards only), then each one's
        # row by correlation id (its shard) and its member row: (old, cid) becomes (new, cid)
        cur.execute(_BY_BUSINESS[True]["members"], (old,))
        renamed = sorted(cur.fetchall())
        survivor_of = dict(zip(old, new, strict=True))
        cids = [c for c, _ in renamed]
        cur.execute(_MOVE, (cids, [survivor_of[b] for _, b in renamed]))
        result.moved += cur.rowcount
        cur.execute(MEMBERS_REMOVE, ([b for _, b in renamed], cids))
        add_members(cur, [survivor_of[b] for _, b in renamed], cids)
    elif old:
        cur.execute(_RENAME, (old, new))
        result.moved += cur.rowcount
    if old:
        # only stored businesses had samples to re-attribute; a new correlation id's own events
        # touch its business for the SLA job anyway
        cur.execute(_JOURNAL, (now, sorted(set(old) | set(new))))


def _sizes(cur: psycopg.Cursor, groups: list[list[str]], members: bool = False) -> dict[str, int]:
    """Member counts of the businesses in `groups`, exact except the biggest of each group, which
    is only known to be at least as big as every other: counting stops at a doubling cap."""
    cap = 64
    while True:
        todo = sorted({b for g in groups for b in g})
        cur.execute(_BY_BUSINESS[members]["count"], (todo, cap))
        # no row yet: this batch's own correlation id, a business of one
        sizes = {b: max(int(n), 1) for b, n in cur.fetchall()}
        if all(sum(1 for b in g if sizes[b] >= cap) <= 1 for g in groups):
            return sizes
        cap *= 4


def _lock_businesses(
    cur: psycopg.Cursor, cids: list[str], result: LinkResult, seen: dict[str, str] | None = None
) -> dict[str, str]:
    """Lock the businesses of `cids` (advisory, sorted) and answer correlation id → business id,
    re-reading until no concurrent merge moved them while we waited for the locks. A correlation
    id of this batch (`result.own`) without a row gets it after linking: a business of one, named
    by itself, and noted in `result.pending`; any other without a row was just removed by
    retention (with its keys) and is left out of the answer."""
    locked: set[str] = set()
    for round_ in range(MAX_ROUNDS):
        if round_ == 0 and seen is not None:
            business = {c: seen[c] for c in cids if c in seen}  # read with the holders
        else:
            cur.execute(_BUSINESS_OF, (cids,))
            business = dict(cur.fetchall())
        result.pending = {c for c in cids if c not in business and c in result.own}
        for c in result.pending:
            business[c] = c
        fresh = sorted(set(business.values()) - locked)
        if not fresh:
            return business
        cur.execute(LOCK_SQL, (LOCK_BUSINESS, _lock_ids("business", fresh)))
        cur.fetchall()
        locked |= set(fresh)
    raise RegionUnstable("identity region kept moving under concurrent merges")


def _lock_region(cur: psycopg.Cursor, seeds: list[str], result: LinkResult, members: bool = False) -> dict[str, str]:
    """Lock the businesses of `seeds` and answer all their members (correlation id → business id)."""
    business = _lock_businesses(cur, seeds, result)
    cur.execute(_BY_BUSINESS[members]["members"], (sorted(set(business.values())),))
    members = dict(cur.fetchall())
    for c in result.pending:
        members[c] = c
    return members


# -- relink: the whole graph again, after the identity-key configuration changed ---------------

_CHUNK_IDS = """
SELECT correlation_id FROM transactions WHERE correlation_id > %s ORDER BY correlation_id LIMIT %s
"""
_CHUNK_ROWS = f"""
SELECT k.value, k.kind, k.correlation_id FROM transaction_keys k
WHERE k.correlation_id = ANY(%(cids)s) AND k.kind = ANY(%(kinds)s)
  AND length(k.value) <= {MAX_LINK_LEN}
"""  # noqa: S608 (MAX_LINK_LEN is a module constant); placeholders are refused in Python, as on ingest
_STALE_HUBS = "DELETE FROM identity_hubs WHERE kind <> ALL(%s)"


@dataclass
class RelinkStats:
    transactions: int = 0
    moved: int = 0
    merged: int = 0
    new_hubs: int = 0
    retried: int = 0


def relink(
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
    *,
    kinds: Iterable[str],
    limit: int,
    now: datetime,
    chunk: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> RelinkStats:
    """Recompute every business transaction from the stored identity keys under `kinds` and
    `limit`, `chunk` correlation ids per short database transaction (online: ingest keeps
    running; both take the same locks). `connect()` yields a connection in a transaction."""
    kind_list = sorted(set(kinds))
    stats = RelinkStats()
    with connect() as conn:
        conn.execute(_STALE_HUBS, (kind_list,))
        members = bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MEMBERS,)).fetchone()[0])  # type: ignore[index]
    after = ""
    while True:
        with connect() as conn:
            cids = [r[0] for r in conn.execute(_CHUNK_IDS, (after, chunk)).fetchall()]
        if not cids:
            return stats
        for attempt in range(1, 4):
            try:
                with connect() as conn, conn.cursor() as cur:
                    cur.execute(_CHUNK_ROWS, {"cids": cids, "kinds": kind_list})
                    rows = [r for r in cur.fetchall() if refusal(r[0]) is None]
                    result = link(
                        cur, rows, kinds=kind_list, limit=limit, now=now, full=True, seeds=cids, members=members,
                    )
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                stats.retried += 1
                if attempt == 3:
                    raise
        stats.transactions += len(cids)
        stats.moved += result.moved
        stats.merged += result.merged
        stats.new_hubs += len(result.new_hubs)
        if progress is not None:
            progress(len(cids))
        after = cids[-1]
