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
_TOUCH_ALL = sa.text("INSERT INTO ct_signal_touched (bid) SELECT DISTINCT business_id FROM transactions")
_TOUCH = sa.text("""
INSERT INTO ct_signal_touched (bid)
SELECT business_id FROM transactions WHERE updated_at > :since
UNION
SELECT t.business_id FROM transaction_milestones m JOIN transactions t ON t.correlation_id = m.correlation_id
WHERE m.recorded_at > :since
UNION
SELECT business_id FROM identity_changes WHERE changed_at > :since
ON CONFLICT DO NOTHING
""")
# by primary key (ANY(ARRAY(...))), never a scan of the table
_CLEAR = (
    sa.text("DELETE FROM signal_orphans WHERE business_id = ANY(ARRAY(SELECT bid FROM ct_signal_touched))"),
    sa.text(f"""
WITH changed AS (
    DELETE FROM signal_orders WHERE business_id = ANY(ARRAY(SELECT bid FROM ct_signal_touched)) RETURNING received_at)
{_HOURS_OF}
"""),  # noqa: S608 (constant fragments)
)

# A candidate: some member has an identity key, no member reached an origin. Its system: of the
# earliest event (over all members) that names one. Every touched id reads its members through
# transactions_business_idx (LATERAL): the cost follows the touched ids, not the table.
_ORPHANS = sa.text(f"""
WITH b AS (
    SELECT x.bid AS business_id, a.first_event_at, a.channel
    FROM ct_signal_touched x
    CROSS JOIN LATERAL (
        SELECT min(t.first_event_at) AS first_event_at, {identity.BUSINESS_CHANNEL} AS channel
        FROM transactions t WHERE t.business_id = x.bid
    ) a
    WHERE a.first_event_at IS NOT NULL  -- the id still names a business
), candidates AS (
    SELECT b.* FROM b
    WHERE EXISTS (SELECT 1 FROM transactions t JOIN transaction_keys k ON k.correlation_id = t.correlation_id
                  WHERE t.business_id = b.business_id AND k.kind = ANY(CAST(:kinds AS text[])))
      AND NOT EXISTS (SELECT 1 FROM transactions t
                      JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
                      WHERE t.business_id = b.business_id AND m.milestone = ANY(CAST(:origins AS text[])))
)
INSERT INTO signal_orphans (business_id, channel, system, first_event_at, orphaned_at)
SELECT c.business_id, c.channel, s.system, c.first_event_at,
       CASE WHEN c.first_event_at + CAST(:grace AS interval) <= :now THEN c.first_event_at + CAST(:grace AS interval) END
FROM candidates c
LEFT JOIN LATERAL (
    SELECT e.system FROM transactions t
    CROSS JOIN LATERAL (
        SELECT e.system, e.occurred_at, e.event_id FROM events e
        WHERE e.correlation_id = t.correlation_id AND e.occurred_at >= t.first_event_at AND e.system IS NOT NULL
        ORDER BY e.occurred_at, e.event_id LIMIT 1
    ) e
    WHERE t.business_id = c.business_id
    ORDER BY e.occurred_at, t.correlation_id, e.event_id LIMIT 1
) s ON true
""")  # noqa: S608 (a constant fragment of controltower.identity)

_ORDERS = sa.text(f"""
WITH changed AS (
INSERT INTO signal_orders (business_id, channel, received_at, erp_documents)
SELECT x.bid, o.channel, o.received_at, COALESCE((
           SELECT array_agg(DISTINCT k.value ORDER BY k.value)
           FROM transactions d JOIN transaction_keys k ON k.correlation_id = d.correlation_id
           WHERE d.business_id = x.bid AND k.kind = :document AND length(k.value) <= :max_len
             AND lower(regexp_replace(regexp_replace(k.value, :format_chars, '', 'g'), :edge_space, '', 'g'))
                 <> ALL(CAST(:placeholders AS text[]))
             AND NOT EXISTS (SELECT 1 FROM identity_hubs h WHERE h.kind = k.kind AND h.value = k.value)
       ), '{{}}')
FROM ct_signal_touched x
CROSS JOIN LATERAL (
    SELECT {identity.BUSINESS_CHANNEL} AS channel, min(m.reached_at) AS received_at
    FROM transactions t
    LEFT JOIN transaction_milestones m ON m.correlation_id = t.correlation_id AND m.milestone = :received
    WHERE t.business_id = x.bid
) o
WHERE o.received_at IS NOT NULL
RETURNING received_at
)
{_HOURS_OF}
""")  # noqa: S608 (constant fragments)

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
# (the first tick of each hour; ANY(ARRAY(...)): deleted by primary key).
_SWEEP = (
    sa.text("""
DELETE FROM signal_orphans WHERE business_id = ANY(ARRAY(
    SELECT o.business_id FROM signal_orphans o WHERE o.first_event_at < :cutoff
      AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.business_id = o.business_id)
    LIMIT :n))
"""),
    sa.text(f"""
WITH changed AS (
    DELETE FROM signal_orders WHERE business_id = ANY(ARRAY(
        SELECT o.business_id FROM signal_orders o WHERE o.received_at < :cutoff
          AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.business_id = o.business_id)
        LIMIT :n))
    RETURNING received_at)
{_HOURS_OF}
"""),  # noqa: S608 (constant fragments)
)


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
            touched = conn.execute(_TOUCH_ALL).rowcount
        else:
            touched = conn.execute(_TOUCH, {"since": mark - LAG}).rowcount
            for statement in _CLEAR:
                conn.execute(statement)
        if touched:
            conn.exec_driver_sql("ANALYZE ct_signal_touched")
            conn.execute(_ORPHANS, params)
            conn.execute(_ORDERS, params)
        graduated = conn.execute(_GRADUATE, params).rowcount
        swept = 0
        if mark is None or _hour_floor(now) > _hour_floor(mark):
            swept = sum(conn.execute(statement, params).rowcount for statement in _SWEEP)
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
