"""What the dashboard reads: one function per question, SQL with bound parameters, DataFrames out.

Reads tables only (the schema is the contract; no room is imported). Time is passed in as
`now`; nothing here caches (app/cache.py does) or imports Streamlit, so each query runs under
plain pytest against a real Postgres. Writes (acknowledge, silence) are not here: they go
through `controltower.alertops`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower import alertops, breaches, exceptionops, identity, transactions
from controltower import funnel as funnel_core
from controltower.histogram import merge as merge_histograms
from controltower.histogram import percentile as hist_percentile


def _frame(engine: Engine, query: sa.TextClause, params: dict[str, Any] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query, params or {})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def complete_bins(df: pd.DataFrame, now: datetime, bin_minutes: int) -> pd.DataFrame:
    """Drop the bin still filling up (it would draw a misleading drop at the right edge)."""
    if df.empty:
        return df
    end = pd.to_datetime(df["bucket"], utc=True) + pd.Timedelta(minutes=bin_minutes)
    return df[end <= pd.Timestamp(now)].reset_index(drop=True)


# -- is there anything to show ------------------------------------------------------------------
_TABLES = ("sla_status", "hop_health", "event_rollup_minute", "transactions", "sla_open_items", "freshness_state")
_MISSING = sa.text("SELECT t FROM unnest(CAST(:names AS text[])) AS t WHERE to_regclass(t) IS NULL")
_HAS_DATA = sa.text(
    "SELECT EXISTS (SELECT 1 FROM sla_status) OR EXISTS (SELECT 1 FROM hop_health) "
    "OR EXISTS (SELECT 1 FROM event_rollup_minute) OR EXISTS (SELECT 1 FROM transactions)"
)


def database_state(engine: Engine) -> str:
    """`ready`, `empty` (migrated, nothing written yet) or `unmigrated`."""
    with engine.connect() as conn:
        missing = conn.execute(_MISSING, {"names": list(_TABLES)}).scalars().all()
        if missing:
            return "unmigrated"
        return "ready" if conn.execute(_HAS_DATA).scalar() else "empty"


# -- the SLA table, hops, headline ----------------------------------------------------------------
_SLA_STATUS = sa.text(
    """
    SELECT s.sla, s.channel, s."window", s.kind, s.computed_at, s.count, s.p50_ms, s.p95_ms, s.p99_ms, s.target_ms,
           s.within_target_ratio, s.open_breaches, s.oldest_breach_ms, s.value, s.threshold, s.health, s.reason,
           s.objective, s.error_budget_remaining, s.burn_rate_short, s.burn_rate_long,
           d.definition ->> 'unit' AS unit
    FROM sla_status s LEFT JOIN sla_definitions d ON d.name = s.sla
    WHERE s."window" = :window
    ORDER BY s.channel, s.sla
    """
)


def sla_status(engine: Engine, window: str = "1h") -> pd.DataFrame:
    """The current SLA table for one window, one row per SLA and channel, with the unit of `value`
    (`ms`, `ratio`, `count`) the metrics room published with the definition (None before it did)."""
    return _frame(engine, _SLA_STATUS, {"window": window})


# `queues`: what the queue SLAs (metrics.queues) say of the queues sitting at the hop, from the
# per-queue verdicts in their 1 h rows' details (a queue without a channel: row `*`, every channel)
_HOPS = sa.text("""
SELECT h.channel, h.hop, h.position, h.computed_at, h.volume, h.backlog, h.p95_ms, h.health, h.reason,
       (SELECT string_agg(DISTINCT q.verdict->>'text', '; ')
        FROM sla_status s CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(s.details->'queues') = 'array' THEN s.details->'queues' END) AS q(verdict)
        WHERE s."window" = '1h' AND s.channel IN (h.channel, '*')
          AND q.verdict->>'hop' = h.hop AND q.verdict->>'text' IS NOT NULL) AS queues
FROM hop_health h ORDER BY h.channel, h.position
""")


def hop_health(engine: Engine) -> pd.DataFrame:
    """Per channel its hops in order: volume, backlog, p95, health (where the delay sits) and the
    state of the queues sitting there (`queues`: e.g. "DLQ erp.orders.dlq: 3 messages for 12 min")."""
    return _frame(engine, _HOPS)


_HEADLINE = sa.text(
    """
    SELECT
      (SELECT COALESCE(SUM(count), 0) FROM event_rollup_minute
        WHERE minute >= :since AND flow = 'order' AND stage = 'received')::bigint AS orders_last_hour,
      (SELECT COUNT(*) FROM sla_open_items WHERE due_at < :now)::bigint AS open_breaches,
      (SELECT COUNT(*) FROM alert_state WHERE state = 'firing')::bigint AS firing_alerts,
      (SELECT COALESCE(SUM(count), 0) FROM event_rollup_minute
        WHERE minute >= :since AND status = 'dead_letter')::bigint AS dead_letters_last_hour
    """
)


def headline_counts(engine: Engine, *, now: datetime) -> dict[str, int]:
    """Orders received and dead letters in the last hour, overdue open items and firing alerts now."""
    with engine.connect() as conn:
        row = conn.execute(_HEADLINE, {"since": now - timedelta(hours=1), "now": now}).mappings().one()
    return {k: int(v or 0) for k, v in row.items()}


# -- rollups over time --------------------------------------------------------------------------
_THROUGHPUT = sa.text(
    """
    SELECT date_bin(CAST(:bin AS interval), minute, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           channel,
           SUM(count)::bigint AS events,
           (SUM(count) FILTER (WHERE status IN ('error', 'dead_letter')))::bigint AS errors
    FROM event_rollup_minute
    WHERE minute >= :since
    GROUP BY 1, 2
    ORDER BY 1, 2
    """
)


def throughput(engine: Engine, hours: float, *, now: datetime, bin_minutes: int = 5) -> pd.DataFrame:
    """Events and errors (`error` + `dead_letter`) per channel in `bin_minutes` bins over the last `hours`."""
    params = {"bin": f"{int(bin_minutes)} minutes", "since": now - timedelta(hours=hours)}
    df = complete_bins(_frame(engine, _THROUGHPUT, params), now, bin_minutes)
    if df.empty:
        return pd.DataFrame(columns=["bucket", "channel", "events", "errors", "error_rate"])
    df["errors"] = df["errors"].fillna(0).astype("int64")
    df["events"] = df["events"].astype("int64")
    df["error_rate"] = (df["errors"] / df["events"].where(df["events"] > 0)).fillna(0.0)
    return df


_WITHIN = sa.text(
    """
    SELECT date_bin(CAST(:bin AS interval), minute, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           channel, SUM(count)::bigint AS count, SUM(met)::bigint AS met
    FROM sla_rollup_minute
    WHERE minute >= :since AND (CAST(:sla AS text) IS NULL OR sla = :sla)
    GROUP BY 1, 2
    ORDER BY 1, 2
    """
)


def within_target(engine: Engine, hours: float, sla: str | None, *, now: datetime, bin_minutes: int = 5) -> pd.DataFrame:
    """Share of completed items within target per channel and bin (one SLA, or all of them)."""
    params = {"bin": f"{int(bin_minutes)} minutes", "since": now - timedelta(hours=hours), "sla": sla}
    df = complete_bins(_frame(engine, _WITHIN, params), now, bin_minutes)
    if df.empty:
        return pd.DataFrame(columns=["bucket", "channel", "count", "met", "within_pct"])
    df["within_pct"] = (df["met"] / df["count"].where(df["count"] > 0) * 100).round(2)
    return df


_ROLLUP_SLAS = sa.text("SELECT DISTINCT sla FROM sla_rollup_minute WHERE minute >= :since ORDER BY sla")


def rollup_slas(engine: Engine, hours: float, *, now: datetime) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(_ROLLUP_SLAS, {"since": now - timedelta(hours=hours)}).scalars())


_CHANNEL_ROLLUP = sa.text(
    "SELECT sla, minute, count, met, hist FROM sla_rollup_minute "
    "WHERE channel = :channel AND minute >= :since ORDER BY sla, minute"
)


def latency_bins(rows: pd.DataFrame, *, bin_minutes: int = 5) -> pd.DataFrame:
    """Per SLA and `bin_minutes` bin: completed count, met, p50 and p95 (ms) from the merged
    minute histograms (columns in: sla, minute, count, met, hist). Pure."""
    columns = ["sla", "bucket", "count", "met", "p50_ms", "p95_ms"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    frame = rows.assign(bucket=pd.to_datetime(rows["minute"], utc=True).dt.floor(f"{int(bin_minutes)}min"))
    out = []
    for (sla, bucket), group in frame.groupby(["sla", "bucket"], sort=True):
        merged = merge_histograms(group["hist"])
        out.append({"sla": sla, "bucket": bucket, "count": int(group["count"].sum()), "met": int(group["met"].sum()),
                    "p50_ms": hist_percentile(merged, 0.5), "p95_ms": hist_percentile(merged, 0.95)})
    return pd.DataFrame(out, columns=columns)


def channel_latency(engine: Engine, channel: str, hours: float, *, now: datetime, bin_minutes: int = 5) -> pd.DataFrame:
    """p50/p95 latency, count and met per SLA and bin for one channel (complete bins only)."""
    rows = _frame(engine, _CHANNEL_ROLLUP, {"channel": channel, "since": now - timedelta(hours=hours)})
    return complete_bins(latency_bins(rows, bin_minutes=bin_minutes), now, bin_minutes)


_FRESHNESS = sa.text(
    """
    SELECT sla, channel, key AS location, last_at,
           EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - last_at)) AS age_s
    FROM freshness_state
    ORDER BY channel, key
    """
)


def freshness(engine: Engine, *, now: datetime) -> pd.DataFrame:
    """Age of the last successful sync per channel and location (key)."""
    df = _frame(engine, _FRESHNESS, {"now": now})
    if not df.empty:
        df["age_s"] = df["age_s"].astype(float)
    return df


_KNOWN_CHANNELS = sa.text(
    "SELECT channel FROM sla_status WHERE channel <> '*' UNION SELECT channel FROM sla_open_items "
    "UNION SELECT DISTINCT channel FROM freshness_state ORDER BY 1"
)


def known_channels(engine: Engine) -> list[str]:
    """Every channel the SLA, open-item and freshness tables know (for channel pickers)."""
    with engine.connect() as conn:
        return list(conn.execute(_KNOWN_CHANNELS).scalars())


# -- open breaches (the core's list, so the CLI, the API and this page show the same orders) --------
BREACH_COLUMNS = ["correlation_id", "correlation_ids", "order_id", "channel", "sla", "started_at", "due_at", "age_ms", "overdue_ms",
                  "status", "last_milestone", "reason", "calendar", "due"]


def open_breaches(engine: Engine, sla: str | None, channel: str | None, *, now: datetime,
                  limit: int = 5000) -> pd.DataFrame:
    """Overdue open items (due_at < now), most overdue first: the offending transactions. A stored
    time outside the sane range comes back as NaT/NaN with a `reason` (`controltower.breaches`)."""
    with engine.connect() as conn:
        rows = breaches.open_breaches(conn, now=now, sla=sla or None, channel=channel or None, limit=limit, order="due")
    df = pd.DataFrame(rows, columns=BREACH_COLUMNS)
    for column in ("age_ms", "overdue_ms"):
        df[column] = df[column].astype(float)
    return df


_OPEN_TOTALS = sa.text(
    "SELECT count(*) AS items, count(DISTINCT channel) AS channels FROM sla_open_items WHERE due_at < :now "
    "AND (CAST(:sla AS text) IS NULL OR sla = :sla) AND (CAST(:channel AS text) IS NULL OR channel = :channel)"
)


def open_breach_totals(engine: Engine, sla: str | None, channel: str | None, *, now: datetime) -> tuple[int, int]:
    """How many overdue open items and channels there are in all (`open_breaches` stops at its limit)."""
    with engine.connect() as conn:
        row = conn.execute(_OPEN_TOTALS, {"now": now, "sla": sla or None, "channel": channel or None}).one()
    return int(row.items), int(row.channels)


_OPEN_OPTIONS = sa.text(
    "SELECT DISTINCT sla, channel FROM sla_open_items UNION SELECT DISTINCT sla, channel FROM sla_status "
    "ORDER BY sla, channel"
)


def breach_filters(engine: Engine) -> tuple[list[str], list[str]]:
    """SLA names and channels known to the open-items and SLA tables (for filter choices)."""
    df = _frame(engine, _OPEN_OPTIONS)
    slas = sorted(set(df["sla"])) if not df.empty else []
    channels = sorted(c for c in set(df["channel"]) if c != "*") if not df.empty else []
    return slas, channels


# -- one transaction ------------------------------------------------------------------------------
def search_transactions(engine: Engine, q: str, limit: int = 50) -> list[dict[str, Any]]:
    """Transactions with any key (order id, marketplace order number, SKU, tracking…) equal to `q`."""
    with engine.connect() as conn:
        return transactions.search(conn, q, limit=limit)


def get_transaction(engine: Engine, correlation_id: str, *, now: datetime) -> dict[str, Any] | None:
    """One transaction's whole story (fields, keys, milestones, SLA verdicts, events)."""
    with engine.connect() as conn:
        return transactions.get(conn, correlation_id, now=now)


_RELATED_ALERTS = sa.text(
    """
    SELECT fingerprint, rule, severity, state, labels, summary, firing_since, last_value, acknowledged_by
    FROM alert_state
    WHERE state = 'firing' AND labels ->> 'channel' = :channel
    ORDER BY firing_since DESC NULLS LAST, fingerprint
    """
)


def related_alerts(engine: Engine, channel: str) -> pd.DataFrame:
    """Firing alerts whose `channel` label is `channel`."""
    return _frame(engine, _RELATED_ALERTS, {"channel": channel})


# -- reconciliation (the core's funnel, so `controltower funnel` and this page count the same orders) --
STAGES = dict(funnel_core.STEPS)  # stage as people name it → milestone
GAP_COLUMNS = ["correlation_id", "order_id", "external_order_id", "reached_at", "status", "last_milestone"]


def funnel(engine: Engine, channel: str, day: date) -> pd.DataFrame:
    """Orders of `channel` received on `day` (UTC) and how many of them reached each stage."""
    with engine.connect() as conn:
        rows = funnel_core.funnel(conn, channel=channel, day=day)
    return pd.DataFrame({"stage": [stage for stage, _ in funnel_core.STEPS],
                         "milestone": [r["milestone"] for r in rows], "orders": [int(r["orders"]) for r in rows]})


def funnel_gap(engine: Engine, channel: str, day: date, a: str, b: str, *, limit: int = 2000) -> pd.DataFrame:
    """Orders received on `day` that reached stage `a` but not stage `b` (stage names of the funnel)."""
    with engine.connect() as conn:
        rows = funnel_core.funnel_gap(conn, channel=channel, day=day, reached=STAGES[a], missing=STAGES[b], limit=limit)
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


# -- alerts (reads; writes go through controltower.alertops) ---------------------------------------
SEVERITY_RANK = {"critical": 0, "page": 0, "warning": 1, "warn": 1, "info": 2}

_ACTIVE_ALERTS = sa.text(
    """
    SELECT fingerprint, rule, severity, state, labels, annotations, summary, active_since, firing_since,
           last_value, acknowledged_by, acknowledged_at, dashboard_url
    FROM alert_state
    WHERE state IN ('pending', 'firing')
    ORDER BY CASE state WHEN 'firing' THEN 0 ELSE 1 END, active_since, fingerprint
    """
)
_ALERT_HISTORY = sa.text(
    "SELECT at, rule, from_state, to_state, value, labels, summary, fingerprint FROM alert_events "
    "WHERE at >= :since ORDER BY at DESC, id DESC LIMIT :limit"
)
_SILENCES = sa.text(
    "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at FROM alert_silences "
    "WHERE ends_at >= :since ORDER BY ends_at DESC, id DESC"
)


def active_alerts(engine: Engine) -> pd.DataFrame:
    """Pending and firing alerts, firing first, then by severity and age."""
    df = _frame(engine, _ACTIVE_ALERTS)
    if not df.empty:
        df["rank"] = df["severity"].map(SEVERITY_RANK).fillna(3)
        df = df.sort_values(["state", "rank", "active_since"], ascending=[True, True, True]).drop(columns="rank")
        df = df.reset_index(drop=True)
    return df


def alert_history(engine: Engine, *, now: datetime, hours: float = 24, limit: int = 200) -> pd.DataFrame:
    return _frame(engine, _ALERT_HISTORY, {"since": now - timedelta(hours=hours), "limit": limit})


def silences(engine: Engine, *, now: datetime, keep_hours: float = 24) -> pd.DataFrame:
    """Active silences and those that ended within `keep_hours`."""
    return _frame(engine, _SILENCES, {"since": now - timedelta(hours=keep_hours)})


# -- identity signals: orphans, duplicate orders (kept by the metrics job), hubs (kept by ingest) ----
# Each business transaction shows as its canonical member, with its member ids and merged keys.
_BUSINESS_OF_X = f"""
CROSS JOIN LATERAL (
    SELECT {identity.CANONICAL_MEMBER} AS correlation_id, count(*) AS members,
           string_agg(t.correlation_id, ', ' ORDER BY t.first_event_at, t.correlation_id) AS member_ids,
           (array_agg(t.order_id ORDER BY t.first_event_at, t.correlation_id)
                FILTER (WHERE t.order_id IS NOT NULL))[1] AS order_id
    FROM transactions t WHERE t.business_id = x.business_id
) b
CROSS JOIN LATERAL (
    SELECT string_agg(kv.kind || ' ' || kv.vals, '; ' ORDER BY kv.kind) AS keys FROM (
        SELECT k.kind, string_agg(DISTINCT k.value, ', ' ORDER BY k.value) AS vals
        FROM transactions t JOIN transaction_keys k ON k.correlation_id = t.correlation_id
        WHERE t.business_id = x.business_id GROUP BY k.kind
    ) kv
) k
"""  # noqa: S608 (a constant fragment of controltower.identity)
_ORPHANS = sa.text(f"""
    SELECT b.correlation_id, COALESCE(x.system, 'unknown') AS system, COALESCE(x.channel, 'unknown') AS channel,
           x.first_event_at, x.orphaned_at, k.keys, b.members, b.member_ids,
           (SELECT string_agg(milestone, ', ' ORDER BY reached_at, milestone) FROM (
                SELECT m.milestone, min(m.reached_at) AS reached_at
                FROM transactions t JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
                WHERE t.business_id = x.business_id GROUP BY m.milestone) ms) AS milestones
    FROM (
        SELECT * FROM signal_orphans
        WHERE orphaned_at IS NOT NULL
          AND (CAST(:system AS text) IS NULL OR COALESCE(system, 'unknown') = :system)
          AND (CAST(:channel AS text) IS NULL OR COALESCE(channel, 'unknown') = :channel)
        ORDER BY orphaned_at DESC, business_id LIMIT :limit
    ) x
    {_BUSINESS_OF_X}
    WHERE b.correlation_id IS NOT NULL
    ORDER BY x.orphaned_at DESC, x.business_id
""")  # noqa: S608 (constant fragments)
_ORPHAN_COUNTS = sa.text("""
    SELECT COALESCE(system, 'unknown') AS system, COALESCE(channel, 'unknown') AS channel, count(*) AS orphans
    FROM signal_orphans WHERE orphaned_at IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2
""")
_DUPLICATE_ORDERS = sa.text(f"""
    SELECT b.correlation_id, COALESCE(x.channel, 'unknown') AS channel, b.order_id, x.received_at,
           array_to_string(x.erp_documents, ', ') AS erp_documents, cardinality(x.erp_documents) AS documents,
           b.members, b.member_ids, k.keys
    FROM (
        SELECT * FROM signal_orders WHERE cardinality(erp_documents) >= 2
        ORDER BY received_at DESC, business_id LIMIT :limit
    ) x
    {_BUSINESS_OF_X}
    WHERE b.correlation_id IS NOT NULL
    ORDER BY x.received_at DESC, x.business_id
""")  # noqa: S608 (constant fragments)
_HUBS = sa.text(
    "SELECT kind, value, fanout, first_seen_at, last_seen_at FROM identity_hubs "
    "ORDER BY fanout DESC, kind, value LIMIT :limit"
)


def identity_orphans(engine: Engine, system: str | None, channel: str | None, *, limit: int = 500) -> pd.DataFrame:
    """Orphan business transactions, newest first (system and channel `unknown` when none is known)."""
    return _frame(engine, _ORPHANS, {"system": system, "channel": channel, "limit": limit})


def orphan_counts(engine: Engine) -> pd.DataFrame:
    """Orphans per system and channel (columns system, channel, orphans)."""
    return _frame(engine, _ORPHAN_COUNTS)


def duplicate_orders(engine: Engine, *, limit: int = 500) -> pd.DataFrame:
    """Channel orders carrying two or more ERP documents, newest first."""
    return _frame(engine, _DUPLICATE_ORDERS, {"limit": limit})


def identity_hubs(engine: Engine, *, limit: int = 500) -> pd.DataFrame:
    """Identity values that link nothing (on more correlation ids than the fan-out limit), widest first."""
    return _frame(engine, _HUBS, {"limit": limit})
_IDENTITY_TOTALS = sa.text("""
    SELECT (SELECT count(*) FROM signal_orders x WHERE cardinality(x.erp_documents) >= 2
              AND EXISTS (SELECT 1 FROM transactions t WHERE t.business_id = x.business_id)) AS duplicates,
           (SELECT count(*) FROM identity_hubs) AS hubs
""")


def identity_totals(engine: Engine) -> dict[str, int]:
    """How many duplicate orders and hubs there are in all (the lists stop at their limit)."""
    with engine.connect() as conn:
        row = conn.execute(_IDENTITY_TOTALS).one()
    return {"duplicates": int(row.duplicates), "hubs": int(row.hubs)}


# -- incidents (reads through controltower.alertops, as the CLI and the API) ------------------------
INCIDENT_COLUMNS = ["Id", "State", "Title", "Since", "Alerts", "Channels", "Orders at risk", "Value at risk", "Open"]


def incidents(engine: Engine, *, with_resolved: bool = False) -> pd.DataFrame:
    """Incidents for the dashboard's list: open, then acknowledged (then resolved), newest first."""
    states = alertops.INCIDENT_STATES if with_resolved else ("open", "acknowledged")
    rows = []
    for r in alertops.list_incidents(engine, states):
        impact = r["impact"] or {}
        value = impact.get("order_value_at_risk")
        rows.append([r["id"], r["state"], r["title"], r["opened_at"], r["alert_count"], ", ".join(r["channels"] or []),
                     int(impact.get("orders_at_risk") or 0), f"{value:,.2f}" if value is not None else "–",
                     f"incidents?id={r['id']}"])
    return pd.DataFrame(rows, columns=INCIDENT_COLUMNS)


def incident(engine: Engine, incident_id: int) -> dict[str, Any] | None:
    """One incident with `alerts` and `timeline` as display tables; None when there is no such incident."""
    try:
        row = alertops.get_incident(engine, incident_id)
    except alertops.NoSuchIncident:
        return None
    alerts = pd.DataFrame(
        [[a["rule"], a["labels"].get("channel", ""), a["state"] or "–", a["summary"] or "", a["attached_at"],
          "yes" if a["first"] else "", a["dashboard_url"]] for a in row["alerts"]],
        columns=["Rule", "Channel", "State", "Summary", "Attached", "First", "Transactions"],
    )
    timeline = pd.DataFrame([[e["at"], e["kind"], e["text"]] for e in row["timeline"]], columns=["At", "Kind", "What"])
    return {**row, "alerts_table": alerts, "timeline_table": timeline}


# --- the exception work queue (controltower.exceptionops) --------------------------------------

def exception_groups(engine: Engine, state: str, channel: str | None, cls: str | None,
                     assignee: str | None) -> pd.DataFrame:
    states = {"active": exceptionops.ACTIVE, "all": exceptionops.STATES}.get(state, (state,))
    return pd.DataFrame(exceptionops.list_groups(engine, states=states, channel=channel, cls=cls, assignee=assignee))


def exception_group(engine: Engine, group_id: int) -> dict[str, Any] | None:
    try:
        return exceptionops.get_group(engine, group_id)
    except exceptionops.NoSuchGroup:
        return None


def exception_stats(engine: Engine, *, now: datetime, days: int = 14) -> dict[str, pd.DataFrame]:
    found = exceptionops.stats(engine, now, days=days)
    return {k: pd.DataFrame(found[k]) for k in ("volume", "time_to_resolve", "open")}
