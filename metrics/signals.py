"""Orphans and duplicate orders: what the identity graph signals, per business transaction.

The metrics job's last part (`refresh`, after the rollups) keeps derived tables whose rows are
named by a business_id (readers show the canonical member and every member instead):

- `signal_orphans`: business transactions that have an identity key but whose members reached
  none of the *origin* milestones (`Definitions.orphan_origins`). They are candidates until
  their earliest event is older than `Settings.orphan_grace_seconds`; the tick then marks them
  orphans (`orphaned_at` = earliest event + grace), reading only the candidates' index. The
  system is that of the business's earliest event naming one; no channel reads as "unknown".
- `signal_orders`: business transactions that reached `order.received`, with the distinct ERP
  documents their members carry (placeholders, over-long values and hubs are no document);
  two or more make a *duplicate order*. `signal_order_hours` counts them per UTC hour and
  channel (the hours whose orders changed are recounted), so a window reads its whole hours
  there and only its ragged edges from `signal_orders`.

Incremental like the rollups: a tick re-examines only the business ids touched since its
watermark (minus a lag for late commits): transactions updated, milestones recorded and ids
journaled in `identity_changes` (a merge names both the old and the new id). It clears their
rows and recomputes those ids that still name a business. The watermark's name carries a
fingerprint of what the rows depend on (origins, identity keys, grace): change one and the next
tick rebuilds everything. `sla_rows` turns the tables into SLA table rows (the API and the
CLI list them through `metrics.signallists`). Nothing here writes ingest tables.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower import identity
from controltower.settings import Settings
from controltower.vocab import human_duration
from metrics.definitions import SIGNAL_UNITS, SLA, Definitions

KINDS = frozenset(SIGNAL_UNITS)
WATERMARK_PREFIX = "signals:"
LAG = timedelta(minutes=2)  # transactions that committed after a later one (as the rollups)
ORDER_RECEIVED = "order.received"
ERP_DOCUMENT = "erp_document"
SWEEP = 5_000  # rows of business transactions gone by retention removed per table and hour
SIGNAL_TABLES = ("signal_orphans", "signal_orders", "signal_order_hours")

_TOUCHED = """
CREATE TEMP TABLE IF NOT EXISTS ct_signal_touched (bid text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS ct_signal_hours (hour timestamptz PRIMARY KEY) ON COMMIT DROP;
TRUNCATE ct_signal_touched, ct_signal_hours;
"""
# the UTC hours of the orders a statement changed (date_bin: whatever the session's time zone)
_HOURS_OF = """INSERT INTO ct_signal_hours
SELECT DISTINCT date_bin('1 hour', received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') FROM changed
ON CONFLICT DO NOTHING"""
_TOUCH_ALL = sa.text("SELECT DISTINCT business_id FROM transactions")
# the ids come back to the job, which passes them on as arrays (on Citus a temp table cannot join
# a distributed table); `ct_signal_touched` holds them for the statements on the signal tables
_TOUCH = sa.text("""
SELECT business_id FROM transactions WHERE updated_at > :since
UNION
SELECT t.business_id FROM transaction_milestones m JOIN transactions t ON t.correlation_id = m.correlation_id
WHERE m.recorded_at > :since
UNION
SELECT business_id FROM identity_changes WHERE changed_at > :since
""")
_HOLD = sa.text("INSERT INTO ct_signal_touched (bid) SELECT unnest(CAST(:bids AS text[])) ON CONFLICT DO NOTHING")
# by primary key (ANY(ARRAY(...))), never a scan of the table
_CLEAR = (
    sa.text("DELETE FROM signal_orphans WHERE business_id = ANY(ARRAY(SELECT bid FROM ct_signal_touched))"),
    sa.text(f"""
WITH changed AS (
    DELETE FROM signal_orders WHERE business_id = ANY(ARRAY(SELECT bid FROM ct_signal_touched)) RETURNING received_at)
{_HOURS_OF}
"""),  # noqa: S608 (constant fragments)
)

# The touched businesses' facts, each read where Citus runs it on the shards: members grouped by
# business (transactions_business_idx), their origin and `order.received` milestones (a join on
# the correlation id), which members hold an identity key and their ERP documents
# (transaction_keys_correlation_idx; the keys are distributed by value, so by correlation id this
# reads every shard), and each candidate's earliest event naming a system (per member by the
# events' primary key, then the earliest over the members).
# A candidate: some member has an identity key, no member reached an origin; its system: of the
# earliest event (over all members) that names one.
_BUSINESSES = sa.text(f"""
SELECT t.business_id, min(t.first_event_at) AS first_event_at, {identity.BUSINESS_CHANNEL} AS channel,
       array_agg(t.correlation_id) AS cids
FROM transactions t WHERE t.business_id = ANY(CAST(:bids AS text[])) GROUP BY t.business_id
""")  # noqa: S608 (a constant fragment of controltower.identity)
_MILESTONES = sa.text("""
SELECT t.business_id, bool_or(m.milestone = ANY(CAST(:origins AS text[]))) AS origin,
       min(m.reached_at) FILTER (WHERE m.milestone = :received) AS received_at
FROM transactions t JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
WHERE t.business_id = ANY(CAST(:bids AS text[]))
  AND (m.milestone = ANY(CAST(:origins AS text[])) OR m.milestone = :received)
GROUP BY t.business_id
""")
_KEYED = sa.text("""
SELECT DISTINCT k.correlation_id FROM transaction_keys k
WHERE k.correlation_id = ANY(CAST(:cids AS text[])) AND k.kind = ANY(CAST(:kinds AS text[]))
""")
_SYSTEMS = sa.text("""
SELECT DISTINCT ON (business_id) business_id, system FROM (
    SELECT DISTINCT ON (e.correlation_id) t.business_id, e.correlation_id, e.occurred_at, e.event_id, e.system
    FROM transactions t JOIN events e ON e.correlation_id = t.correlation_id
    WHERE t.correlation_id = ANY(CAST(:cids AS text[])) AND e.occurred_at >= t.first_event_at AND e.system IS NOT NULL
    ORDER BY e.correlation_id, e.occurred_at, e.event_id
) first
ORDER BY business_id, occurred_at, correlation_id, event_id
""")
_WRITE_ORPHANS = sa.text("""
INSERT INTO signal_orphans (business_id, channel, system, first_event_at, orphaned_at)
SELECT b, c, s, f, CASE WHEN f + CAST(:grace AS interval) <= :now THEN f + CAST(:grace AS interval) END
FROM unnest(CAST(:o_bids AS text[]), CAST(:o_channels AS text[]), CAST(:o_systems AS text[]),
            CAST(:o_first AS timestamptz[])) AS x(b, c, s, f)
""")
_DOCUMENTS = sa.text("""
SELECT x.bid, array_agg(DISTINCT k.value ORDER BY k.value) AS documents
FROM transaction_keys k JOIN unnest(CAST(:cids AS text[]), CAST(:cid_bids AS text[])) AS x(cid, bid)
    ON k.correlation_id = x.cid
WHERE k.correlation_id = ANY(CAST(:cids AS text[])) AND k.kind = :document AND length(k.value) <= :max_len
  AND lower(regexp_replace(regexp_replace(k.value, :format_chars, '', 'g'), :edge_space, '', 'g'))
      <> ALL(CAST(:placeholders AS text[]))
  AND NOT EXISTS (SELECT 1 FROM identity_hubs h WHERE h.kind = k.kind AND h.value = k.value)
GROUP BY x.bid
""")
_ORDERS = sa.text(f"""
WITH changed AS (
INSERT INTO signal_orders (business_id, channel, received_at, erp_documents)
SELECT b, c, r, ARRAY(SELECT jsonb_array_elements_text(CAST(d AS jsonb)))
FROM unnest(CAST(:r_bids AS text[]), CAST(:r_channels AS text[]), CAST(:r_received AS timestamptz[]),
            CAST(:r_documents AS text[])) AS x(b, c, r, d)
RETURNING received_at
)
{_HOURS_OF}
""")  # noqa: S608 (constant fragments)
CHUNK = 5_000  # business ids per read

# the changed hours' counts, each read through signal_orders_received_idx
_RECOUNT = (
    sa.text("DELETE FROM signal_order_hours WHERE hour IN (SELECT hour FROM ct_signal_hours)"),
    sa.text("""
INSERT INTO signal_order_hours (hour, channel, orders, duplicates)
SELECT h.hour, COALESCE(o.channel, 'unknown'), count(*), count(*) FILTER (WHERE cardinality(o.erp_documents) >= 2)
FROM ct_signal_hours h
JOIN signal_orders o ON o.received_at >= h.hour AND o.received_at < h.hour + interval '1 hour'
GROUP BY 1, 2
"""),
)

_GRADUATE = sa.text("""
UPDATE signal_orphans SET orphaned_at = first_event_at + CAST(:grace AS interval)
WHERE orphaned_at IS NULL AND first_event_at <= CAST(:now AS timestamptz) - CAST(:grace AS interval)
""")

# Retention removes old transactions without journaling them: their rows go here, a batch an hour
# (the first tick of each hour): old rows a page at a time by primary key, kept when their
# business still has a member (transactions_business_idx), deleted by primary key.
_SWEEP_PAGE = {
    "signal_orphans": sa.text("""
SELECT business_id FROM signal_orphans WHERE first_event_at < :cutoff AND business_id > :after
ORDER BY business_id LIMIT :n
"""),
    "signal_orders": sa.text("""
SELECT business_id FROM signal_orders WHERE received_at < :cutoff AND business_id > :after
ORDER BY business_id LIMIT :n
"""),
}
_LIVE = sa.text("SELECT DISTINCT business_id FROM transactions WHERE business_id = ANY(CAST(:bids AS text[]))")
_SWEEP_DELETE = {
    "signal_orphans": sa.text("DELETE FROM signal_orphans WHERE business_id = ANY(CAST(:bids AS text[]))"),
    "signal_orders": sa.text(f"""
WITH changed AS (DELETE FROM signal_orders WHERE business_id = ANY(CAST(:bids AS text[])) RETURNING received_at)
{_HOURS_OF}
"""),  # noqa: S608 (constant fragments)
}


@functools.cache
def _placeholder_patterns() -> dict[str, str]:
    """Regular expressions that read a value as `identity.refusal` does before comparing it with the
    placeholders: format characters (zero-width space, BOM, word joiner, ...) removed, then
    whitespace (tab, no-break space, ...) trimmed from both ends, as Python's `str.strip()`."""
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    fmt = "".join(c for c in chars if unicodedata.category(c) == "Cf")
    space = "".join(c for c in chars if c.isspace())
    return {"format_chars": f"[{fmt}]", "edge_space": f"^[{space}]+|[{space}]+$"}


def watermark_name(defs: Definitions, settings: Settings) -> str:
    """The watermark of rows computed under these origins, identity keys and grace period."""
    basis = orjson.dumps([sorted(defs.orphan_origins), sorted(settings.identity_keys), settings.orphan_grace_seconds])
    return WATERMARK_PREFIX + hashlib.sha256(basis).hexdigest()[:16]


def refresh(engine: Engine, defs: Definitions, now: datetime, settings: Settings | None = None) -> dict[str, int]:
    """Bring `signal_orphans`, `signal_orders` and `signal_order_hours` up to `now`; returns
    how many business ids it re-examined, orphans it graduated and rows of gone ones it swept."""
    settings = settings or Settings()
    name = watermark_name(defs, settings)
    grace = timedelta(seconds=settings.orphan_grace_seconds)
    params = {
        "kinds": list(settings.identity_keys), "origins": list(defs.orphan_origins), "grace": grace, "now": now,
        "document": ERP_DOCUMENT, "received": ORDER_RECEIVED, "max_len": identity.MAX_LINK_LEN,
        "placeholders": sorted(identity.PLACEHOLDERS), **_placeholder_patterns(),
        "cutoff": now - timedelta(seconds=settings.retention_transactions), "n": SWEEP,
    }
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('controltower.metrics.signals'))"))
        mark = conn.execute(sa.text("SELECT value FROM metrics_watermarks WHERE name = :n"), {"n": name}).scalar()
        conn.exec_driver_sql(_TOUCHED)
        if mark is None:  # first run, a rebuild, or what the rows depend on changed: all of them
            for table in SIGNAL_TABLES:  # DELETE: the scheduler's role may not TRUNCATE
                conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 (constant names)
            bids = sorted(conn.execute(_TOUCH_ALL).scalars())
        else:
            bids = sorted(conn.execute(_TOUCH, {"since": mark - LAG}).scalars())
            if bids:
                conn.execute(_HOLD, {"bids": bids})
                conn.exec_driver_sql("ANALYZE ct_signal_touched")
                for statement in _CLEAR:
                    conn.execute(statement)
        for i in range(0, len(bids), CHUNK):
            _recompute(conn, bids[i:i + CHUNK], params)
        touched = len(bids)
        graduated = conn.execute(_GRADUATE, params).rowcount
        swept = 0
        if mark is None or _hour_floor(now) > _hour_floor(mark):
            swept = sum(_sweep(conn, table, params) for table in _SWEEP_PAGE)
        conn.exec_driver_sql("ANALYZE ct_signal_hours")
        for statement in _RECOUNT:
            conn.execute(statement)
        conn.execute(sa.text("DELETE FROM metrics_watermarks WHERE name LIKE :p AND name <> :n"),
                     {"p": WATERMARK_PREFIX + "%", "n": name})
        conn.execute(
            sa.text(
                "INSERT INTO metrics_watermarks (name, value) VALUES (:n, :v)"
                " ON CONFLICT (name) DO UPDATE SET value = GREATEST(metrics_watermarks.value, excluded.value)"
            ),
            {"n": name, "v": now},
        )
    return {"signal_businesses": touched, "orphans_graduated": graduated, "signal_rows_swept": swept}


def _recompute(conn: Connection, bids: list[str], params: dict[str, Any]) -> None:
    """The signal rows of these business ids (their old rows are gone)."""
    businesses = {r.business_id: r for r in conn.execute(_BUSINESSES, {"bids": bids})}
    if not businesses:
        return
    reached = {r.business_id: r for r in conn.execute(_MILESTONES, params | {"bids": sorted(businesses)})}
    cids = sorted({c for b in businesses.values() for c in b.cids})
    keyed = set(conn.execute(_KEYED, params | {"cids": cids}).scalars())
    candidates = [b for bid, b in businesses.items()
                  if not (reached.get(bid) is not None and reached[bid].origin) and keyed.intersection(b.cids)]
    if candidates:
        systems = dict(conn.execute(_SYSTEMS, {"cids": sorted(c for b in candidates for c in b.cids)}).tuples().all())
        conn.execute(_WRITE_ORPHANS, params | {
            "o_bids": [b.business_id for b in candidates], "o_channels": [b.channel for b in candidates],
            "o_systems": [systems.get(b.business_id) for b in candidates],
            "o_first": [b.first_event_at for b in candidates],
        })
    orders = [(businesses[bid], r.received_at) for bid, r in reached.items() if r.received_at is not None]
    if orders:
        members = [(c, b.business_id) for b, _ in orders for c in b.cids]
        documents = dict(conn.execute(_DOCUMENTS, params | {
            "cids": [c for c, _ in members], "cid_bids": [b for _, b in members]}).tuples().all())
        conn.execute(_ORDERS, {
            "r_bids": [b.business_id for b, _ in orders], "r_channels": [b.channel for b, _ in orders],
            "r_received": [at for _, at in orders],
            "r_documents": [orjson.dumps(documents.get(b.business_id) or []).decode() for b, _ in orders],
        })


def _sweep(conn: Connection, table: str, params: dict[str, Any]) -> int:
    """Delete up to `SWEEP` rows of `table` whose business no longer has a member; how many."""
    left, after = SWEEP, ""
    while left > 0:
        page = list(conn.execute(_SWEEP_PAGE[table], params | {"after": after}).scalars())
        if not page:
            break
        live = set(conn.execute(_LIVE, {"bids": page}).scalars())
        gone = [b for b in page if b not in live][:left]
        if gone:
            conn.execute(_SWEEP_DELETE[table], {"bids": gone})
            left -= len(gone)
        if len(page) < SWEEP:
            break
        after = page[-1]
    return SWEEP - left


# -- the SLA table ----------------------------------------------------------------------------
_ORPHAN_COUNTS = sa.text("""
SELECT COALESCE(channel, 'unknown') AS channel, COALESCE(system, 'unknown') AS system,
       count(*) AS n, min(first_event_at) AS oldest
FROM signal_orphans
WHERE orphaned_at > :start AND orphaned_at <= :end  -- an orphan since `end` counts at `end`
  AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
GROUP BY 1, 2
""")
# whole hours from signal_order_hours, the ragged edges [start, h0) and [h1, end) from signal_orders
_ORDER_COUNTS = sa.text("""
SELECT channel, sum(orders) AS orders, sum(duplicates) AS duplicates FROM (
    SELECT channel, orders, duplicates FROM signal_order_hours
    WHERE hour >= :h0 AND hour < :h1 AND (CAST(:channel AS text) IS NULL OR channel = :channel)
    UNION ALL
    SELECT COALESCE(channel, 'unknown'), 1, (cardinality(erp_documents) >= 2)::int FROM signal_orders
    WHERE ((received_at >= :start AND received_at < LEAST(:h0, :end)) OR (received_at >= GREATEST(:h1, :start) AND received_at < :end))
      AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
) c GROUP BY 1
""")


def sla_rows(
    conn: Connection, defs: Definitions, *, window: timedelta, now: datetime, channel: str | None,
    base: Callable[[SLA, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The SLA table's rows of the signal kinds over the window: orphans that became orphans in
    `(now - window, now]`, per channel (by system in `details`); the duplicate order rate of the
    orders received in `[now - window, now)`. `base` gives a row's shape (the SLA engine's)."""
    slas = [s for s in defs.slas if s.kind in KINDS]
    if not slas:
        return []
    start = now - window
    h0 = _hour_floor(start)
    h0 = h0 if h0 == start else h0 + timedelta(hours=1)
    params = {"start": start, "end": now, "h0": h0, "h1": max(h0, _hour_floor(now)), "channel": channel}
    orphans: dict[str, dict[str, int]] = defaultdict(dict)
    oldest: dict[str, datetime] = {}
    if any(s.kind == "orphans" for s in slas):
        for r in conn.execute(_ORPHAN_COUNTS, params):
            orphans[r.channel][r.system] = int(r.n)
            oldest[r.channel] = min(oldest.get(r.channel, r.oldest), r.oldest)
    orders = {}
    if any(s.kind == "duplicate_rate" for s in slas):
        orders = {r.channel: (int(r.orders), int(r.duplicates)) for r in conn.execute(_ORDER_COUNTS, params)}
    out = []
    for sla in slas:
        if sla.kind == "orphans":
            out += [orphan_row(base(sla, ch), sla, systems, now - oldest[ch]) for ch, systems in sorted(orphans.items())]
        else:
            out += [duplicate_row(base(sla, ch), sla, *counts) for ch, counts in sorted(orders.items())]
    return out


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _judge(row: dict[str, Any], sla: SLA, value: float, enough: bool = True) -> None:
    if enough and sla.critical is not None and value > sla.critical:
        row["health"] = "critical"
    elif enough and sla.max is not None and value > sla.max:
        row["health"] = "warn"


def orphan_row(row: dict[str, Any], sla: SLA, systems: dict[str, int], age: timedelta) -> dict[str, Any]:
    n = sum(systems.values())
    age_ms = max(0, int(age.total_seconds() * 1000))
    row.update(count=n, value=n, threshold=sla.max, open_breaches=n, oldest_breach_ms=age_ms,
               details={"systems": dict(sorted(systems.items()))})
    _judge(row, sla, n)
    if row["health"] != "ok":
        by_system = ", ".join(f"{system} {count}" for system, count in sorted(systems.items(), key=lambda i: (-i[1], i[0])))
        row["reason"] = (f"{sla.name}: {n} orphan{'s' if n != 1 else ''} ({by_system}) without "
                         f"{' or '.join(sla.origins)}, oldest {human_duration(age_ms)} (max {sla.max:g})")
    return row


def duplicate_row(row: dict[str, Any], sla: SLA, orders: int, duplicates: int) -> dict[str, Any]:
    ratio = duplicates / orders if orders else 0.0
    row.update(count=orders, value=ratio, threshold=sla.max, details={"orders": orders, "duplicates": duplicates})
    _judge(row, sla, ratio, enough=orders >= sla.min_orders)
    if row["health"] != "ok":
        row["reason"] = (f"{sla.name}: {duplicates} of {orders} orders posted to the ERP more than once "
                         f"({ratio:.1%}, max {sla.max or 0:.1%})")
    return row
