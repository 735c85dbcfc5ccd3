"""The exception grouping job: a stage of the metrics refresh (after the signals).

Each tick files failures under groups by signature (`metrics.signatures`), classifies new
groups (`metrics.exceptionrules`) and keeps the groups' states:

- sources: events with status error or dead_letter received since the watermark (minus a lag
  for late commits; incremental), overdue open breaches (`sla_open_items` due before now) and
  orphans (`signal_orphans` with `orphaned_at`). Breaches and orphans are named by their
  business's canonical member, so the occurrence links to the transaction page.
- one occurrence per (group, correlation id, source); a later failure of the same kind updates
  it (`at`, `count`) and clears its resolution. Re-reading the same failures changes nothing
  (only a strictly later failure counts), so the job is idempotent.
- a new occurrence on a resolved group reopens it (`reopen_count`, audited as `reopen`).
- auto-resolve ("milestone reached"): an occurrence resolves when its business transaction
  has reached one of the milestones it awaits (the failed event's milestone, the SLA's `to`,
  an orphan's origins); a group whose every occurrence resolved resolves.
- auto-resolve ("quiet"): a group of failed events (no open breach or orphan in it) resolves
  when a success on its channel and milestone (a transaction reaching it) came after its last
  occurrence and `quiet_minutes` have passed since without a new one.
- a snoozed group wakes at `snoozed_until`.
Automatic changes are audited in `exception_actions` with the actor `controltower`.
It writes only the exception tables and its watermark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower import identity
from controltower.exceptionops import AUTO_ACTOR, record
from metrics import signatures
from metrics.definitions import Definitions
from metrics.exceptionrules import ExceptionRules, classify

WATERMARK = "exceptions:events"
LAG = timedelta(minutes=2)
BATCH = 20_000  # failed events read per page; a tick reads page after page until a short one
VIA = "job"
MILESTONE_REACHED = "milestone reached"
QUIET = "quiet"


@dataclass(frozen=True)
class Failure:
    channel: str
    milestone: str
    error_code: str | None
    message: str | None
    source: str
    correlation_id: str
    event_id: str | None
    at: datetime
    awaits: tuple[str, ...]


_EVENTS = """
SELECT e.received_at, e.correlation_id, e.event_id, e.occurred_at, e.status,
       COALESCE(e.channel, t.channel, 'unknown') AS channel, e.flow || '.' || e.stage AS milestone,
       e.error_code, e.error_message
FROM events e LEFT JOIN transactions t ON t.correlation_id = e.correlation_id
WHERE e.received_at > :since AND e.status IN ('error', 'dead_letter') {after}
ORDER BY e.received_at, e.correlation_id, e.event_id, e.occurred_at
LIMIT :limit
"""
_FIRST_PAGE = sa.text(_EVENTS.format(after=""))
# the next page of the same tick starts after the last row read (keyset): however many failures
# share one received_at (one POST of 50,000), the job moves on
_NEXT_PAGE = sa.text(_EVENTS.format(after="""AND e.received_at >= :at
  AND (e.received_at, e.correlation_id, e.event_id, e.occurred_at) > (:at, :cid, :eid, :occurred)"""))
# Breaches and orphans are named by a business id; the occurrence names its canonical member (the
# id the transaction page opens), read for all of them in one grouped read of their members
# (transactions_business_idx): a subquery per row on another column than the distribution
# column would not run on Citus.
_BREACHES = sa.text("""
SELECT i.sla, i.channel, i.due_at, i.correlation_id AS business_id
FROM sla_open_items i WHERE i.due_at < :now AND i.sla = ANY(CAST(:slas AS text[]))
""")
_ORPHANS = sa.text("""
SELECT COALESCE(o.channel, 'unknown') AS channel, o.orphaned_at, o.business_id
FROM signal_orphans o WHERE o.orphaned_at IS NOT NULL AND o.orphaned_at <= :now
""")
_MEMBER = sa.text("""
SELECT t.business_id, """ + identity.CANONICAL_MEMBER + """ AS member FROM transactions t
WHERE t.business_id = ANY(CAST(:bids AS text[])) GROUP BY t.business_id
""")  # noqa: S608 (a constant fragment of controltower.identity)

_NEW_GROUPS = sa.text("""
INSERT INTO exception_groups (signature, channel, milestone, error_code, message, sample_message, class, state,
                              first_seen_at, last_seen_at, opened_at, updated_at)
SELECT * FROM unnest(CAST(:signature AS text[]), CAST(:channel AS text[]), CAST(:milestone AS text[]),
                     CAST(:error_code AS text[]), CAST(:message AS text[]), CAST(:sample AS text[]),
                     CAST(:class AS text[]), CAST(:state AS text[]), CAST(:first AS timestamptz[]),
                     CAST(:last AS timestamptz[]), CAST(:now AS timestamptz[]), CAST(:now AS timestamptz[]))
ON CONFLICT (signature) DO NOTHING
""")
_IDS = sa.text("SELECT signature, id FROM exception_groups WHERE signature = ANY(CAST(:s AS text[]))")
# only a strictly later failure changes an occurrence: re-reading the same ones does nothing
_OCCURRENCES = sa.text("""
INSERT INTO exception_occurrences AS o (group_id, correlation_id, source, event_id, at, first_at, count, awaits,
                                        error_code, message, seen_at)
SELECT g, c, s, e, a, f, n, string_to_array(w, ' '), ec, m, :now
FROM unnest(CAST(:group_id AS bigint[]), CAST(:cid AS text[]), CAST(:source AS text[]), CAST(:event_id AS text[]),
            CAST(:at AS timestamptz[]), CAST(:first AS timestamptz[]), CAST(:n AS int[]), CAST(:awaits AS text[]),
            CAST(:code AS text[]), CAST(:message AS text[])) AS x(g, c, s, e, a, f, n, w, ec, m)
ON CONFLICT (group_id, correlation_id, source) DO UPDATE
SET at = excluded.at, event_id = excluded.event_id, count = o.count + excluded.count, error_code = excluded.error_code,
    message = excluded.message, seen_at = excluded.seen_at, resolved_at = NULL
WHERE excluded.at > o.at
RETURNING group_id
""")
_COUNTERS = sa.text("""
UPDATE exception_groups g SET
    occurrence_count = c.total, open_count = c.open, first_seen_at = LEAST(g.first_seen_at, c.first),
    last_seen_at = GREATEST(g.last_seen_at, c.last), updated_at = :now
FROM (SELECT group_id, sum(count) AS total, count(*) FILTER (WHERE resolved_at IS NULL) AS open,
             min(first_at) AS first, max(at) AS last
      FROM exception_occurrences WHERE group_id = ANY(CAST(:ids AS bigint[])) GROUP BY group_id) c
WHERE g.id = c.group_id
""")
_REOPEN = sa.text("""
UPDATE exception_groups SET state = 'open', opened_at = :now, reopen_count = reopen_count + 1, resolved_at = NULL,
       resolved_by = NULL, resolution = NULL, resolution_note = NULL, updated_at = :now
WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'resolved'
RETURNING id, open_count
""")
# An occurrence resolves when any member of its business transaction reached a milestone it
# awaits: the open occurrences (exception tables), their businesses (transactions by primary
# key), the awaited milestones those businesses reached (members by transactions_business_idx,
# then their milestones by primary key: a join on the correlation id), then the update by key.
_OPEN_OCCURRENCES = sa.text("""
SELECT o.group_id, o.correlation_id, o.source, o.awaits FROM exception_occurrences o
JOIN exception_groups g ON g.id = o.group_id
WHERE g.state IN ('open', 'snoozed') AND o.resolved_at IS NULL
""")
_BUSINESS_OF = sa.text("""
SELECT correlation_id, business_id FROM transactions WHERE correlation_id = ANY(CAST(:cids AS text[]))
""")
_BUSINESS_REACHED = sa.text("""
SELECT DISTINCT t.business_id, tm.milestone FROM transactions t
JOIN transaction_milestones tm ON tm.correlation_id = t.correlation_id
WHERE t.business_id = ANY(CAST(:bids AS text[])) AND tm.milestone = ANY(CAST(:milestones AS text[]))
""")
_REACHED = sa.text("""
UPDATE exception_occurrences o SET resolved_at = :now
FROM unnest(CAST(:group_id AS bigint[]), CAST(:cid AS text[]), CAST(:source AS text[])) AS x(g, c, s)
WHERE o.group_id = x.g AND o.correlation_id = x.c AND o.source = x.s AND o.resolved_at IS NULL
RETURNING o.group_id
""")
_RESOLVE = sa.text("""
UPDATE exception_groups SET state = 'resolved', resolved_at = :now, resolved_by = :actor, resolution = :resolution,
       snoozed_until = NULL, updated_at = :now
WHERE id = ANY(CAST(:ids AS bigint[])) AND state IN ('open', 'snoozed')
RETURNING id, opened_at, occurrence_count
""")
_ALL_REACHED = sa.text("""
SELECT id FROM exception_groups g
WHERE id = ANY(CAST(:ids AS bigint[])) AND state IN ('open', 'snoozed') AND open_count = 0
""")
# quiet: failed-event groups only (a breach or orphan stays while its transaction waits) whose
# last occurrence is older than the quiet period, then per group whether a transaction reached
# its milestone on its channel since (transaction_milestones_lookup_idx, one row at most)
_QUIET_CANDIDATES = sa.text("""
SELECT g.id, g.milestone, g.channel, g.last_seen_at FROM exception_groups g
WHERE g.state IN ('open', 'snoozed') AND g.last_seen_at < :quiet_before
  AND NOT EXISTS (SELECT 1 FROM exception_occurrences o WHERE o.group_id = g.id AND o.resolved_at IS NULL
                  AND o.source IN ('breach', 'orphan'))
""")
_QUIET = sa.text("""
SELECT 1 FROM transaction_milestones m
WHERE m.milestone = :milestone AND m.reached_at > :last AND m.reached_at <= :quiet_before
  AND (m.channel = :channel OR (:channel = 'unknown' AND m.channel IS NULL))
LIMIT 1
""")
_WAKE = sa.text("""
UPDATE exception_groups SET state = 'open', snoozed_until = NULL, updated_at = :now
WHERE state = 'snoozed' AND snoozed_until <= :now
RETURNING id
""")


def refresh(engine: Engine, defs: Definitions, now: datetime, rules: ExceptionRules) -> dict[str, int]:
    """One tick: file new failures, reopen, auto-resolve, wake. Returns counts of what it did.

    Failed events are read in pages of `BATCH`, each filed and committed with the watermark at
    its last row, so a backlog never makes one long transaction holding the groups' row locks;
    the last (short) page also files breaches and orphans and runs auto-resolve and wake."""
    stats = {"exception_failures": 0, "exception_groups_new": 0, "exception_reopened": 0,
             "exception_auto_resolved": 0, "exception_woken": 0}
    since: datetime | None = None
    after: Any = None
    while True:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('controltower:exceptions'))"))
            if since is None:
                since = _since(conn, now)
            rows = _page(conn, since, after)
            failures = _event_failures(rows)
            full = len(rows) == BATCH
            if not full:
                failures += _open_failures(conn, defs, now)
            stats["exception_failures"] += len(failures)
            new, reopened = _file(conn, failures, rules, now)
            stats["exception_groups_new"] += new
            stats["exception_reopened"] += reopened
            if not full:
                stats["exception_auto_resolved"] = _auto_resolve(conn, now, rules)
                woke = [r.id for r in conn.execute(_WAKE, {"now": now})]
                for gid in woke:
                    record(conn, gid, now, AUTO_ACTOR, "wake", VIA, {"reason": "snooze ended"})
                stats["exception_woken"] = len(woke)
            after = rows[-1] if full else None
            conn.execute(
                sa.text("INSERT INTO metrics_watermarks (name, value) VALUES (:n, :v) ON CONFLICT (name) DO UPDATE "
                        "SET value = GREATEST(metrics_watermarks.value, excluded.value)"),
                {"n": WATERMARK, "v": after.received_at if full else now},
            )
        if not full:
            return stats


def _since(conn: Connection, now: datetime) -> datetime:
    since = conn.execute(sa.text("SELECT value FROM metrics_watermarks WHERE name = :n"), {"n": WATERMARK}).scalar()
    return (since - LAG) if since is not None else datetime(1970, 1, 1, tzinfo=now.tzinfo)


def _page(conn: Connection, since: datetime, after: Any) -> list[Any]:
    if after is None:
        return list(conn.execute(_FIRST_PAGE, {"since": since, "limit": BATCH}))
    return list(conn.execute(_NEXT_PAGE, {"since": since, "limit": BATCH, "at": after.received_at,
                                          "cid": after.correlation_id, "eid": after.event_id,
                                          "occurred": after.occurred_at}))


def _event_failures(rows: Iterable[Any]) -> list[Failure]:
    return [Failure(r.channel, r.milestone, r.error_code, r.error_message, r.status, r.correlation_id, r.event_id,
                    r.occurred_at, (r.milestone,)) for r in rows]


def _open_failures(conn: Connection, defs: Definitions, now: datetime) -> list[Failure]:
    """Overdue open breaches and orphans: read whole every tick (they are states, not a stream)."""
    out: list[Failure] = []
    targets = {s.name: s.to_milestone for s in defs.slas if s.to_milestone}
    breached = conn.execute(_BREACHES, {"now": now, "slas": sorted(targets)}).all() if targets else []
    origins = tuple(defs.orphan_origins)
    orphans = conn.execute(_ORPHANS, {"now": now}).all() if origins else []
    bids = sorted({r.business_id for r in breached} | {r.business_id for r in orphans})
    member = {r.business_id: r.member for r in conn.execute(_MEMBER, {"bids": bids})} if bids else {}
    for r in breached:
        to = targets[r.sla]
        out.append(Failure(r.channel, to, f"sla:{r.sla}", f"{to} not reached within the {r.sla} target", "breach",
                           member.get(r.business_id, r.business_id), None, r.due_at, (to,)))
    for r in orphans:
        out.append(Failure(r.channel, origins[0], "orphan", "identity keys link to no " + " or ".join(origins),
                           "orphan", member.get(r.business_id, r.business_id), None, r.orphaned_at, origins))
    return out


def _file(conn: Connection, failures: Iterable[Failure], rules: ExceptionRules, now: datetime) -> tuple[int, int]:
    """Upsert groups and occurrences; reopen resolved groups that got a new occurrence."""
    groups: dict[str, dict[str, Any]] = {}
    occurrences: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in failures:
        sig = signatures.signature(f.channel, f.milestone, f.error_code, f.message)
        g = groups.get(sig)
        if g is None:
            groups[sig] = {
                "signature": sig, "channel": f.channel, "milestone": f.milestone,
                "error_code": signatures.normalise_code(f.error_code), "message": signatures.normalise(f.message),
                "sample": (f.message or "")[:1000] or None,
                "class": classify(rules, error_code=f.error_code, message=f.message, source=f.source,
                                  channel=f.channel, milestone=f.milestone),
                "state": "open", "first": f.at, "last": f.at,
            }
        else:
            g["first"], g["last"] = min(g["first"], f.at), max(g["last"], f.at)
        key = (sig, f.correlation_id, f.source)
        o = occurrences.get(key)
        if o is None:
            occurrences[key] = {"failure": f, "first": f.at, "n": 1}
        else:
            o["n"] += 1
            o["first"] = min(o["first"], f.at)
            if f.at > o["failure"].at:
                o["failure"] = f
    if not groups:
        return 0, 0
    cols = ("signature", "channel", "milestone", "error_code", "message", "sample", "class", "state", "first", "last")
    params: dict[str, Any] = {c: [g[c] for g in groups.values()] for c in cols}
    params["now"] = [now] * len(groups)
    new = conn.execute(_NEW_GROUPS, params).rowcount
    ids = {r.signature: r.id for r in conn.execute(_IDS, {"s": list(groups)})}
    items = list(occurrences.items())
    touched = {r.group_id for r in conn.execute(_OCCURRENCES, {
        "group_id": [ids[k[0]] for k, _ in items], "cid": [k[1] for k, _ in items], "source": [k[2] for k, _ in items],
        "event_id": [o["failure"].event_id for _, o in items], "at": [o["failure"].at for _, o in items],
        "first": [o["first"] for _, o in items], "n": [o["n"] for _, o in items],
        "awaits": [" ".join(o["failure"].awaits) for _, o in items],
        "code": [o["failure"].error_code for _, o in items], "message": [o["failure"].message for _, o in items],
        "now": now,
    })}
    if not touched:
        return new, 0
    conn.execute(_COUNTERS, {"ids": sorted(touched), "now": now})
    reopened = conn.execute(_REOPEN, {"ids": sorted(touched), "now": now}).all()
    for r in reopened:
        record(conn, r.id, now, AUTO_ACTOR, "reopen", VIA, {"reason": "new occurrence", "open_occurrences": r.open_count})
    return new, len(reopened)


def _reached(conn: Connection, now: datetime) -> list[int]:
    """Resolve the open occurrences whose business reached a milestone they await; their groups."""
    waiting = conn.execute(_OPEN_OCCURRENCES).all()
    if not waiting:
        return []
    business = dict(conn.execute(_BUSINESS_OF, {"cids": sorted({o.correlation_id for o in waiting})}).tuples().all())
    milestones = sorted({m for o in waiting for m in o.awaits or ()})
    reached: dict[str, set[str]] = {}
    if business and milestones:
        rows = conn.execute(_BUSINESS_REACHED, {"bids": sorted(set(business.values())), "milestones": milestones})
        for bid, milestone in rows:
            reached.setdefault(bid, set()).add(milestone)
    done = [o for o in waiting if reached.get(business.get(o.correlation_id, ""), set()) & set(o.awaits or ())]
    if not done:
        return []
    rows = conn.execute(_REACHED, {"now": now, "group_id": [o.group_id for o in done],
                                   "cid": [o.correlation_id for o in done], "source": [o.source for o in done]})
    return sorted({r.group_id for r in rows})


def _auto_resolve(conn: Connection, now: datetime, rules: ExceptionRules) -> int:
    reached = _reached(conn, now)
    done = 0
    if reached:
        conn.execute(_COUNTERS, {"ids": reached, "now": now})
        ids = [r.id for r in conn.execute(_ALL_REACHED, {"ids": reached})]
        done += _resolve(conn, ids, now, MILESTONE_REACHED)
    quiet_before = now - timedelta(minutes=rules.quiet_minutes)
    ids = [g.id for g in conn.execute(_QUIET_CANDIDATES, {"quiet_before": quiet_before}).all()
           if conn.execute(_QUIET, {"milestone": g.milestone, "channel": g.channel, "last": g.last_seen_at,
                                    "quiet_before": quiet_before}).first() is not None]
    done += _resolve(conn, ids, now, QUIET)
    return done


def _resolve(conn: Connection, ids: list[int], now: datetime, resolution: str) -> int:
    if not ids:
        return 0
    rows = conn.execute(_RESOLVE, {"ids": ids, "now": now, "actor": AUTO_ACTOR, "resolution": resolution}).all()
    for r in rows:
        record(conn, r.id, now, AUTO_ACTOR, "auto_resolve", VIA,
               {"resolution": resolution, "open_ms": int((now - r.opened_at).total_seconds() * 1000),
                "occurrences": int(r.occurrence_count)})
    return len(rows)
