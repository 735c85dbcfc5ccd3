"""What the dashboard reads: query functions over the database tables, and formatting helpers.

Every query is SQLAlchemy `sa.text` with bound parameters. Query functions take the engine as
`_engine` (the leading underscore keeps it out of Streamlit's cache key) and return plain
DataFrames or dicts; pages call them through `cached(...)` so a query runs at most once per
refresh interval. The app reads tables only: it imports the core package, never a room.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine

from controltower import histogram, transactions
from controltower.context import AppContext
from controltower.settings import Settings

HEALTH_RANK = {"ok": 0, "warn": 1, "critical": 2}
HEALTH_COLOUR = {"ok": "#1a7f37", "warn": "#bf8700", "critical": "#cf222e", "unknown": "#6e7781"}
EMPTY_MESSAGE = "No data yet: start the simulator with `controltower simulate` (or send events to the collector)."

ACRONYMS = {"erp": "ERP", "pos": "POS", "wms": "WMS", "sku": "SKU", "3pl": "3PL", "edi": "EDI", "api": "API"}

F = TypeVar("F", bound=Callable[..., Any])


# -- process-wide resources ---------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _settings(env_key: tuple[tuple[str, str], ...]) -> Settings:
    return Settings.load()


def settings() -> Settings:
    """The settings from the environment (CONTROLTOWER_*), loaded once per distinct environment."""
    import os

    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("CONTROLTOWER_")))
    return _settings(key)


@st.cache_resource(show_spinner=False)
def _engine_for(_settings_obj: Settings, database_url: str | None, data_dir: str) -> Engine:
    return AppContext.open(_settings_obj, pool_size=3, application_name="controltower-dashboard").engine


def engine() -> Engine:
    s = settings()
    return _engine_for(s, s.database_url, str(s.data_dir))


def cached(fn: F) -> F:
    """`fn` behind `st.cache_data` with the refresh interval as lifetime (decided on first call)."""
    holder: dict[str, Any] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "f" not in holder:
            holder["f"] = st.cache_data(ttl=max(1.0, settings().refresh_seconds), show_spinner=False)(fn)
        return holder["f"](*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- formatting ---------------------------------------------------------------------------------
def human_duration(ms: float | None) -> str:
    """Milliseconds as a short human duration: `850 ms`, `42 s`, `4 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "–"
    ms = float(ms)
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{sign}{seconds:.0f} s" if seconds >= 10 else f"{sign}{seconds:.1f} s"
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h" if hours else f"{sign}{days} d"
    if hours:
        return f"{sign}{hours} h {minutes} min" if minutes else f"{sign}{hours} h"
    return f"{sign}{minutes} min {secs} s" if secs else f"{sign}{minutes} min"


def human_age(moment: datetime | pd.Timestamp | None, now: datetime | None = None) -> str:
    """How long ago `moment` was: `3 min 5 s ago`."""
    if moment is None or pd.isna(moment):
        return "never"
    now = now or datetime.now(UTC)
    return human_duration((now - pd.Timestamp(moment).to_pydatetime()).total_seconds() * 1000) + " ago"


def label(slug: str | None) -> str:
    """`erp_posting` → `Erp posting`; a hop or SLA name as people read it."""
    if not slug:
        return ""
    words = str(slug).replace(".", " · ").split("_")
    words = [ACRONYMS.get(w, w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def worst(healths: list[str] | pd.Series) -> str:
    values = [h for h in healths if isinstance(h, str)]
    if not values:
        return "unknown"
    return max(values, key=lambda h: HEALTH_RANK.get(h, -1))


# -- queries ------------------------------------------------------------------------------------
def _frame(_engine: Engine, query: sa.TextClause, params: dict[str, Any] | None = None) -> pd.DataFrame:
    with _engine.connect() as conn:
        result = conn.execute(query, params or {})
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


_TABLES = ("sla_status", "hop_health", "event_rollup_minute", "transactions", "sla_open_items", "freshness_state")
_MISSING = sa.text("SELECT t FROM unnest(CAST(:names AS text[])) AS t WHERE to_regclass(t) IS NULL")
_HAS_DATA = sa.text(
    "SELECT EXISTS (SELECT 1 FROM sla_status) OR EXISTS (SELECT 1 FROM hop_health) "
    "OR EXISTS (SELECT 1 FROM event_rollup_minute) OR EXISTS (SELECT 1 FROM transactions)"
)


def database_state(_engine: Engine) -> str:
    """`ready`, `empty` (migrated, nothing written yet) or `unmigrated`."""
    with _engine.connect() as conn:
        missing = conn.execute(_MISSING, {"names": list(_TABLES)}).scalars().all()
        if missing:
            return "unmigrated"
        return "ready" if conn.execute(_HAS_DATA).scalar() else "empty"


_SLA_STATUS = sa.text(
    """
    SELECT sla, channel, "window", kind, computed_at, count, p50_ms, p95_ms, p99_ms, target_ms,
           within_target_ratio, open_breaches, oldest_breach_ms, value, threshold, health, reason,
           objective, error_budget_remaining, burn_rate_short, burn_rate_long
    FROM sla_status
    WHERE "window" = :window
    ORDER BY channel, sla
    """
)


def sla_status(_engine: Engine, window: str = "1h") -> pd.DataFrame:
    """The current SLA table for one window, one row per SLA and channel."""
    return _frame(_engine, _SLA_STATUS, {"window": window})


def channel_tiles(status: pd.DataFrame) -> pd.DataFrame:
    """One row per channel: worst health, the worst SLA's reason, SLA counts per health.

    Channel-less SLAs (channel `*`) get their own tile labelled `all channels`.
    """
    columns = ["channel", "health", "sla", "reason", "critical", "warn", "ok", "open_breaches"]
    if status.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for channel, group in status.groupby("channel", sort=True):
        ranked = group.assign(rank=group["health"].map(HEALTH_RANK).fillna(-1)).sort_values(
            ["rank", "open_breaches"], ascending=[False, False], na_position="last"
        )
        top = ranked.iloc[0]
        counts = group["health"].value_counts()
        rows.append(
            {
                "channel": channel,
                "health": worst(group["health"]),
                "sla": top["sla"],
                "reason": top["reason"] if not pd.isna(top["reason"]) and top["reason"] else (
                    "All SLAs within target" if top["health"] == "ok" else ""
                ),
                "critical": int(counts.get("critical", 0)),
                "warn": int(counts.get("warn", 0)),
                "ok": int(counts.get("ok", 0)),
                "open_breaches": int(group["open_breaches"].fillna(0).sum()),
            }
        )
    out = pd.DataFrame(rows, columns=columns)
    out["rank"] = out["health"].map(HEALTH_RANK).fillna(-1)
    out["star"] = out["channel"] == "*"  # the channel-less tile goes last
    out = out.sort_values(["star", "rank", "channel"], ascending=[True, False, True])
    return out.drop(columns=["rank", "star"]).reset_index(drop=True)


STATE_HEALTH = {"met": "ok", "pending": "unknown", "breached": "warn", "overdue": "critical", "error": "critical",
                "dead_letter": "critical", "retry": "warn"}


def style_health(df: pd.DataFrame, *columns: str) -> Any:
    """`df` as a Styler whose health/state `columns` are coloured (ok green, warn amber, critical red)."""

    def colour(value: Any) -> str:
        health = value if value in HEALTH_COLOUR else STATE_HEALTH.get(value, "unknown")
        return f"color: {HEALTH_COLOUR[health]}; font-weight: 600"

    return df.style.map(colour, subset=list(columns))


def sla_display(status: pd.DataFrame) -> pd.DataFrame:
    """The SLA table as people read it: durations humanised, ratios as percentages."""
    if status.empty:
        return pd.DataFrame(
            columns=["Health", "Channel", "SLA", "Reason", "Target", "Value", "Count", "p50", "p95", "p99",
                     "Within target", "Open breaches", "Oldest breach", "Error budget", "Burn rate (short/long)"]
        )

    def burn(row: pd.Series) -> str:
        s, long_ = row["burn_rate_short"], row["burn_rate_long"]
        if pd.isna(s) and pd.isna(long_):
            return "–"
        return f"{0 if pd.isna(s) else s:.1f}× / {0 if pd.isna(long_) else long_:.1f}×"

    def target(row: pd.Series) -> str:
        if not pd.isna(row["target_ms"]):
            return human_duration(row["target_ms"])
        if not pd.isna(row["threshold"]):
            return f"≤ {row['threshold']:g}"
        return "–"

    def pct(value: Any, digits: int = 1) -> str:
        return "–" if pd.isna(value) else f"{float(value) * 100:.{digits}f} %"

    def value(row: pd.Series) -> str:
        if pd.isna(row["value"]):
            return "–"
        if row.get("kind") in ("freshness", "absence"):  # ages and silences are milliseconds
            return human_duration(row["value"])
        if row.get("sla") == "error_rate" or (not pd.isna(row["threshold"]) and row["threshold"] < 1 and row["value"] <= 1):
            return pct(row["value"])
        return f"{row['value']:g}"

    def target_text(row: pd.Series) -> str:
        if row.get("kind") == "deadline":
            return "promised date"
        if row.get("kind") == "rate" and not pd.isna(row["threshold"]) and row["threshold"] < 1:
            return f"≤ {pct(row['threshold'])}"
        return target(row)

    ranked = status.assign(rank=status["health"].map(HEALTH_RANK).fillna(-1), star=status["channel"] == "*")
    status = ranked.sort_values(["rank", "star", "channel", "sla"], ascending=[False, True, True, True])
    return pd.DataFrame(
        {
            "Health": list(status["health"]),
            "Channel": ["all channels" if c == "*" else c for c in status["channel"]],
            "SLA": status["sla"],
            "Reason": status["reason"].fillna(""),
            "Target": status.apply(target_text, axis=1),
            "Value": status.apply(value, axis=1),
            "Count": status["count"].astype("Int64"),
            "p50": status["p50_ms"].map(human_duration),
            "p95": status["p95_ms"].map(human_duration),
            "p99": status["p99_ms"].map(human_duration),
            "Within target": status["within_target_ratio"].map(pct),
            "Open breaches": status["open_breaches"].astype("Int64"),
            "Oldest breach": status["oldest_breach_ms"].map(human_duration),
            "Error budget": status["error_budget_remaining"].map(lambda v: pct(v, 0)),
            "Burn rate (short/long)": status.apply(burn, axis=1),
        }
    ).reset_index(drop=True)


_HOPS = sa.text(
    "SELECT channel, hop, position, computed_at, volume, backlog, p95_ms, health, reason "
    "FROM hop_health ORDER BY channel, position"
)


def hop_health(_engine: Engine) -> pd.DataFrame:
    """Per channel its hops in order: volume, backlog, p95 and health (where the delay sits)."""
    return _frame(_engine, _HOPS)


def _complete_bins(df: pd.DataFrame, now: datetime, bin_minutes: int) -> pd.DataFrame:
    """Drop the bin still filling up (it would draw a misleading drop at the right edge)."""
    if df.empty:
        return df
    end = pd.to_datetime(df["bucket"], utc=True) + pd.Timedelta(minutes=bin_minutes)
    return df[end <= pd.Timestamp(now)].reset_index(drop=True)


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


def throughput(_engine: Engine, hours: float = 6, *, bin_minutes: int = 5, now: datetime | None = None) -> pd.DataFrame:
    """Events and errors (`error` + `dead_letter`) per channel in `bin_minutes` bins over the last `hours`."""
    now = now or datetime.now(UTC)
    since = now - pd.Timedelta(hours=hours)
    df = _complete_bins(_frame(_engine, _THROUGHPUT, {"bin": f"{int(bin_minutes)} minutes", "since": since}),
                        now, bin_minutes)
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


def within_target(
    _engine: Engine, hours: float = 6, sla: str | None = None, *, bin_minutes: int = 5, now: datetime | None = None
) -> pd.DataFrame:
    """Share of completed items within target per channel and bin (one SLA, or all of them)."""
    now = now or datetime.now(UTC)
    since = now - pd.Timedelta(hours=hours)
    df = _complete_bins(
        _frame(_engine, _WITHIN, {"bin": f"{int(bin_minutes)} minutes", "since": since, "sla": sla}), now, bin_minutes
    )
    if df.empty:
        return pd.DataFrame(columns=["bucket", "channel", "count", "met", "within_pct"])
    df["within_pct"] = (df["met"] / df["count"].where(df["count"] > 0) * 100).round(2)
    return df


_ROLLUP_SLAS = sa.text("SELECT DISTINCT sla FROM sla_rollup_minute WHERE minute >= :since ORDER BY sla")


def rollup_slas(_engine: Engine, hours: float = 24) -> list[str]:
    since = datetime.now(UTC) - pd.Timedelta(hours=hours)
    with _engine.connect() as conn:
        return list(conn.execute(_ROLLUP_SLAS, {"since": since}).scalars())


_FRESHNESS = sa.text(
    """
    SELECT sla, channel, key AS location, last_at,
           EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - last_at)) AS age_s
    FROM freshness_state
    ORDER BY channel, key
    """
)


def freshness(_engine: Engine, *, now: datetime | None = None) -> pd.DataFrame:
    """Age of the last successful sync per channel and location (key)."""
    df = _frame(_engine, _FRESHNESS, {"now": now or datetime.now(UTC)})
    if not df.empty:
        df["age_s"] = df["age_s"].astype(float)
    return df


_OPEN = sa.text(
    """
    SELECT o.correlation_id, t.order_id, o.channel, o.sla, o.started_at, o.due_at,
           EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - o.started_at)) * 1000 AS age_ms,
           EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - o.due_at)) * 1000 AS overdue_ms,
           t.status, t.last_milestone
    FROM sla_open_items o
    LEFT JOIN transactions t ON t.correlation_id = o.correlation_id
    WHERE o.due_at < :now
      AND (CAST(:sla AS text) IS NULL OR o.sla = :sla)
      AND (CAST(:channel AS text) IS NULL OR o.channel = :channel)
    ORDER BY o.due_at, o.correlation_id
    LIMIT :limit
    """
)


def open_breaches(
    _engine: Engine,
    sla: str | None = None,
    channel: str | None = None,
    *,
    limit: int = 5000,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Overdue open items (due_at < now), most overdue first: the offending transactions."""
    df = _frame(
        _engine,
        _OPEN,
        {"now": now or datetime.now(UTC), "sla": sla or None, "channel": channel or None, "limit": limit},
    )
    for column in ("age_ms", "overdue_ms"):
        if column in df:
            df[column] = df[column].astype(float)
    return df


_OPEN_OPTIONS = sa.text(
    "SELECT DISTINCT sla, channel FROM sla_open_items UNION SELECT DISTINCT sla, channel FROM sla_status "
    "ORDER BY sla, channel"
)


def breach_filters(_engine: Engine) -> tuple[list[str], list[str]]:
    """SLA names and channels known to the open-items and SLA tables (for filter choices)."""
    df = _frame(_engine, _OPEN_OPTIONS)
    slas = sorted(set(df["sla"])) if not df.empty else []
    channels = sorted(c for c in set(df["channel"]) if c != "*") if not df.empty else []
    return slas, channels


def breaches_display(df: pd.DataFrame) -> pd.DataFrame:
    """The work queue as shown and downloaded: link to the transaction page, human ages."""
    return pd.DataFrame(
        {
            "Transaction": [f"transaction?id={cid}" for cid in df["correlation_id"]],
            "Correlation id": df["correlation_id"],
            "Order id": df["order_id"].fillna(""),
            "Channel": df["channel"],
            "SLA": df["sla"],
            "Started": pd.to_datetime(df["started_at"], utc=True),
            "Age": df["age_ms"].map(human_duration),
            "Overdue by": df["overdue_ms"].map(human_duration),
            "Last milestone": df["last_milestone"].fillna(""),
            "Status": df["status"].fillna(""),
        }
    ).reset_index(drop=True)


def search_transactions(_engine: Engine, q: str, limit: int = 50) -> list[dict[str, Any]]:
    """Transactions with any key (order id, marketplace order number, SKU, tracking…) equal to `q`."""
    with _engine.connect() as conn:
        return transactions.search(conn, q, limit=limit)


def get_transaction(_engine: Engine, correlation_id: str) -> dict[str, Any] | None:
    """One transaction's whole story (fields, keys, milestones, SLA verdicts, events)."""
    with _engine.connect() as conn:
        return transactions.get(conn, correlation_id, now=datetime.now(UTC))


def events_frame(tx: dict[str, Any]) -> pd.DataFrame:
    """A transaction's events as a table, time-ordered, one row per event."""
    rows = [
        {
            "time": pd.Timestamp(e["occurred_at"]),
            "system": e.get("system") or "unknown",
            "milestone": f"{e.get('flow')}.{e.get('stage')}",
            "status": e.get("status"),
            "latency": human_duration(e.get("latency_ms")) if e.get("latency_ms") is not None else "",
            "error": " ".join(str(x) for x in (e.get("error_code"), e.get("error_message")) if x),
            "event_id": e.get("event_id"),
            "source": e.get("source"),
        }
        for e in tx.get("events", [])
    ]
    return pd.DataFrame(
        rows, columns=["time", "system", "milestone", "status", "latency", "error", "event_id", "source"]
    )


def transaction_header(tx: dict[str, Any]) -> str:
    """An HTML card with the transaction's identity: order, channel, status, milestone, counts."""
    from html import escape

    health = STATE_HEALTH.get(tx["status"], "ok")
    colour = HEALTH_COLOUR[health]
    cells = [
        ("Channel", tx["channel"]),
        ("Order id", tx["order_id"] or "–"),
        ("Flow", tx["flow"]),
        ("Last milestone", tx["last_milestone"]),
        ("Last system", tx["last_system"] or "–"),
        ("Events", f"{tx['event_count']} ({tx['error_count']} errors, {tx['retry_count']} retries)"),
        ("First event", (tx["first_event_at"] or "")[:19].replace("T", " ")),
        ("Last event", (tx["last_event_at"] or "")[:19].replace("T", " ")),
    ]
    grid = "".join(
        f'<div><div style="font-size:0.75rem;color:#57606a">{escape(k)}</div>'
        f'<div style="font-size:1.02rem;font-weight:600;word-break:break-all">{escape(str(v))}</div></div>'
        for k, v in cells
    )
    return (
        f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;padding:12px 16px;'
        f'margin-bottom:12px"><div style="display:flex;align-items:center;gap:12px;margin-bottom:8px">'
        f'<span style="font-size:1.35rem;font-weight:700">{escape(tx["order_id"] or tx["correlation_id"])}</span>'
        f'<span style="background:{colour};color:#fff;border-radius:12px;padding:1px 10px;font-size:0.8rem;'
        f'font-weight:600;text-transform:uppercase">{escape(tx["status"])}</span>'
        f'<span style="color:#57606a;font-size:0.85rem">correlation id <code>{escape(tx["correlation_id"])}</code>'
        f'</span></div><div style="display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:8px 16px">'
        f"{grid}</div></div>"
    )


def verdicts_frame(tx: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "SLA": v["sla"],
                "State": v["state"],
                "Elapsed": human_duration(v.get("elapsed_ms")),
                "Target": human_duration(v.get("target_ms")),
                "From → to": f"{v['from']} → {v['to']}",
            }
            for v in tx.get("sla", [])
        ],
        columns=["SLA", "State", "Elapsed", "Target", "From → to"],
    )


# -- page guard ---------------------------------------------------------------------------------
def channel_choices(engine: Engine) -> list[str]:
    """Known channels for a page's channel picker, with `?channel=` (a deep link) preselected;
    stops the page with the empty-state message when there are none."""
    channels = cached(known_channels)(engine)
    wanted = st.query_params.get("channel") or None
    if wanted and wanted not in channels:
        channels.append(wanted)
    if not channels:
        st.info(EMPTY_MESSAGE)
        st.stop()
    st.session_state.setdefault("channel", wanted or channels[0])
    return channels


def require_data(_engine: Engine) -> str:
    """Stop the page with a friendly message when the database is unreachable, unmigrated or empty."""
    try:
        state = database_state(_engine)
    except sa.exc.OperationalError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig and str(exc.orig).strip() else type(exc).__name__
        st.error(
            "**The database is unreachable**, so the dashboard has nothing to show right now. "
            "Check that PostgreSQL is running and that `CONTROLTOWER_DATABASE_URL` points at it; "
            f"this page retries on reload.\n\nDetail: `{detail}`",
            icon=":material/cloud_off:",
        )
        st.stop()
    if state == "unmigrated":
        st.warning("The database has no Control Tower tables yet: run `controltower migrate`.")
        st.stop()
    if state == "empty":
        st.info(EMPTY_MESSAGE, icon="🛰️")
        st.stop()
    return state


# -- health grid and headline counts --------------------------------------------------------------
HEALTH_SYMBOL = {"ok": "✓", "warn": "!", "critical": "✖", "unknown": "?"}

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


def headline_counts(_engine: Engine, *, now: datetime | None = None) -> dict[str, int]:
    """The home page's headline: orders received and dead letters in the last hour, overdue open
    items (open breaches) and firing alerts right now."""
    now = now or datetime.now(UTC)
    with _engine.connect() as conn:
        row = conn.execute(_HEADLINE, {"since": now - pd.Timedelta(hours=1), "now": now}).mappings().one()
    return {k: int(v or 0) for k, v in row.items()}


def status_value(row: pd.Series | dict[str, Any]) -> str:
    """An SLA row's headline value as text: the p95 of a latency SLA, a percentage for ratios,
    an age for freshness and absence SLAs, the plain number otherwise."""
    def missing(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    kind, value, threshold = row.get("kind"), row.get("value"), row.get("threshold")
    if kind in ("milestone_latency", "latency") or (missing(value) and not missing(row.get("p95_ms"))):
        return "–" if missing(row.get("p95_ms")) else f"p95 {human_duration(row['p95_ms'])}"
    if missing(value):
        return "–"
    if kind in ("freshness", "absence"):
        return human_duration(value)
    if row.get("sla") == "error_rate" or (not missing(threshold) and threshold < 1 and value <= 1):
        return f"{float(value) * 100:.1f} %"
    return f"{value:g}"


def health_grid(status: pd.DataFrame) -> pd.DataFrame:
    """Channels × SLAs in long form for the grid: channel, sla, health, symbol, value text, reason."""
    columns = ["channel", "sla", "health", "symbol", "value", "reason"]
    if status.empty:
        return pd.DataFrame(columns=columns)
    rows = [
        {
            "channel": "all channels" if r["channel"] == "*" else r["channel"],
            "sla": r["sla"],
            "health": r["health"] if r["health"] in HEALTH_SYMBOL else "unknown",
            "symbol": HEALTH_SYMBOL.get(r["health"], "?"),
            "value": status_value(r),
            "reason": r["reason"] if isinstance(r["reason"], str) and r["reason"] else (
                "within target" if r["health"] == "ok" else ""),
        }
        for _, r in status.iterrows()
    ]
    return pd.DataFrame(rows, columns=columns)


# -- latency percentiles from the rollups' log histograms (format: controltower.histogram) -------
bucket_ms = histogram.bucket_value
merge_histograms = histogram.merge
hist_percentile = histogram.percentile


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


_CHANNEL_ROLLUP = sa.text(
    "SELECT sla, minute, count, met, hist FROM sla_rollup_minute "
    "WHERE channel = :channel AND minute >= :since ORDER BY sla, minute"
)


def channel_latency(
    _engine: Engine, channel: str, hours: float = 6, *, bin_minutes: int = 5, now: datetime | None = None
) -> pd.DataFrame:
    """p50/p95 latency, count and met per SLA and bin for one channel (complete bins only)."""
    now = now or datetime.now(UTC)
    rows = _frame(_engine, _CHANNEL_ROLLUP, {"channel": channel, "since": now - pd.Timedelta(hours=hours)})
    return _complete_bins(latency_bins(rows, bin_minutes=bin_minutes), now, bin_minutes)


def known_channels(_engine: Engine) -> list[str]:
    """Every channel the SLA, open-item and transaction tables know (for channel pickers)."""
    with _engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT channel FROM sla_status WHERE channel <> '*' UNION SELECT channel FROM sla_open_items "
            "UNION SELECT DISTINCT channel FROM freshness_state ORDER BY 1"
        )).scalars())


def budget_display(status: pd.DataFrame) -> pd.DataFrame:
    """Error budget and burn rates per SLA and window (from sla_status), as people read them."""
    def num(v: Any, fmt: str) -> str:
        return "–" if v is None or pd.isna(v) else format(float(v), fmt)

    rows = [
        {
            "Health": r["health"],
            "SLA": r["sla"],
            "Window": r["window"],
            "Objective": "–" if pd.isna(r["objective"]) else f"{float(r['objective']) * 100:g} %",
            "Within target": "–" if pd.isna(r["within_target_ratio"]) else f"{r['within_target_ratio'] * 100:.1f} %",
            "Error budget left": "–" if pd.isna(r["error_budget_remaining"]) else f"{r['error_budget_remaining'] * 100:.0f} %",
            "Burn rate (short)": num(r["burn_rate_short"], ".1f") + ("×" if not pd.isna(r["burn_rate_short"]) else ""),
            "Burn rate (long)": num(r["burn_rate_long"], ".1f") + ("×" if not pd.isna(r["burn_rate_long"]) else ""),
        }
        for _, r in status.sort_values(["sla", "window"]).iterrows()
    ]
    return pd.DataFrame(rows, columns=["Health", "SLA", "Window", "Objective", "Within target", "Error budget left",
                                       "Burn rate (short)", "Burn rate (long)"])


def tx_link(correlation_id: str) -> str:
    return f"transaction?correlation_id={correlation_id}"


# -- the transaction story ----------------------------------------------------------------------
_DONE = {
    "order.received": "received from {channel}",
    "order.acknowledged": "acknowledged",
    "order.erp_posted": "posted to the ERP",
    "fulfilment.released": "released to the warehouse",
    "fulfilment.shipped": "shipped",
    "shipment.shipment_confirmed": "shipment confirmed to {channel}",
    "shipment.delivered": "delivered",
}
_STEP = {
    "order.received": "receiving the order",
    "order.acknowledged": "acknowledgement to {channel}",
    "order.erp_posted": "posting to the ERP",
    "fulfilment.released": "release to the warehouse",
    "fulfilment.shipped": "shipping",
    "shipment.shipment_confirmed": "confirmation to {channel}",
    "shipment.delivered": "delivery",
}
_FAILED = ("error", "retry", "dead_letter")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _parse(moment: Any) -> datetime:
    return pd.Timestamp(moment).tz_convert(UTC).to_pydatetime() if pd.Timestamp(moment).tzinfo else (
        pd.Timestamp(moment).tz_localize(UTC).to_pydatetime())


def transaction_story(tx: dict[str, Any], *, tz: Any = UTC) -> str:
    """A plain-language account of one transaction (the `controltower.transactions.get` shape)
    that support can read to a customer: milestones with times, failed attempts per step, and the
    step it waits on with its deadline. Times in `tz`, with the date when it differs from the first. Pure."""
    channel = label(tx.get("channel")) or "the channel"
    reached = sorted(((m, _parse(at).astimezone(tz)) for m, at in (tx.get("milestones") or {}).items()),
                     key=lambda item: item[1])
    first_day = reached[0][1].date() if reached else None

    def when(moment: datetime) -> str:
        moment = moment.astimezone(tz)
        if first_day is not None and moment.date() != first_day:
            return f"{moment:%d %b %H:%M}".lstrip("0")
        return f"{moment:%H:%M}"

    def phrase(table: dict[str, str], milestone: str) -> str:
        text = table.get(milestone) or label(milestone.split(".")[-1]).lower()
        return text.format(channel=channel)

    steps = [f"{phrase(_DONE, m)} {when(at)}" for m, at in reached]
    story = ", ".join(steps) if steps else f"No milestone reached yet for this {channel} order"

    failures: dict[str, list[str]] = {}
    for event in sorted(tx.get("events") or [], key=lambda e: str(e.get("occurred_at"))):
        if event.get("status") in _FAILED:
            failures.setdefault(f"{event.get('flow')}.{event.get('stage')}", []).append(event["status"])
    clauses = []
    for milestone, statuses in failures.items():
        clause = f"{phrase(_STEP, milestone)} failed {_times(len(statuses))}"
        if "dead_letter" in statuses:
            clause += " (parked in the dead-letter queue)"
        elif milestone in dict(reached):
            clause += ", then succeeded"
        clauses.append(clause)
    if clauses:
        story += "; " + "; ".join(clauses)

    waiting = [v for v in tx.get("sla") or [] if v.get("state") in ("overdue", "pending") and v.get("due_at")]
    if waiting:
        blocking = min(waiting, key=lambda v: (v["state"] != "overdue", str(v["due_at"])))
        due = when(_parse(blocking["due_at"]))
        name = label(blocking["sla"])
        name = name if name[:3].isupper() else name[:1].lower() + name[1:]
        deadline = f"overdue since {due}" if blocking["state"] == "overdue" else f"due by {due}"
        story += f" — blocking step: {name}, {deadline}"
    story = story[:1].upper() + story[1:]
    return story + "."


_RELATED_ALERTS = sa.text(
    """
    SELECT fingerprint, rule, severity, state, labels, summary, firing_since, last_value, acknowledged_by
    FROM alert_state
    WHERE state = 'firing' AND labels ->> 'channel' = :channel
    ORDER BY firing_since DESC NULLS LAST, fingerprint
    """
)


def related_alerts(_engine: Engine, channel: str) -> pd.DataFrame:
    """Firing alerts whose `channel` label is `channel`."""
    return _frame(_engine, _RELATED_ALERTS, {"channel": channel})


# -- reconciliation -------------------------------------------------------------------------------
FUNNEL = [
    ("received", "order.received"),
    ("acknowledged", "order.acknowledged"),
    ("erp_posted", "order.erp_posted"),
    ("released", "fulfilment.released"),
    ("shipped", "fulfilment.shipped"),
    ("shipment_confirmed", "shipment.shipment_confirmed"),
    ("delivered", "shipment.delivered"),
]
_MILESTONE_OF = dict(FUNNEL)

_FUNNEL = sa.text(
    """
    WITH orders AS (
        SELECT DISTINCT correlation_id FROM transaction_milestones
        WHERE milestone = 'order.received' AND channel = :channel AND reached_at >= :start AND reached_at < :end
    )
    SELECT m.milestone, COUNT(DISTINCT m.correlation_id)::bigint AS orders
    FROM transaction_milestones m JOIN orders o USING (correlation_id)
    WHERE m.milestone = ANY(:milestones)
    GROUP BY m.milestone
    """
)
_GAP = sa.text(
    """
    WITH orders AS (
        SELECT DISTINCT correlation_id FROM transaction_milestones
        WHERE milestone = 'order.received' AND channel = :channel AND reached_at >= :start AND reached_at < :end
    )
    SELECT o.correlation_id, t.order_id,
           (SELECT min(k.value) FROM transaction_keys k
             WHERE k.correlation_id = o.correlation_id AND k.kind = 'external_order_id') AS external_order_id,
           a.reached_at AS reached_at, t.status, t.last_milestone
    FROM orders o
    JOIN transaction_milestones a ON a.correlation_id = o.correlation_id AND a.milestone = :a
    LEFT JOIN transactions t ON t.correlation_id = o.correlation_id
    WHERE NOT EXISTS (SELECT 1 FROM transaction_milestones b WHERE b.correlation_id = o.correlation_id AND b.milestone = :b)
    ORDER BY a.reached_at, o.correlation_id
    LIMIT :limit
    """
)


def _day_bounds(day: Any) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + pd.Timedelta(days=1)


def funnel(_engine: Engine, channel: str, day: Any) -> pd.DataFrame:
    """Orders of `channel` received on `day` (UTC) and how many of them reached each stage."""
    start, end = _day_bounds(day)
    df = _frame(_engine, _FUNNEL, {"channel": channel, "start": start, "end": end,
                                   "milestones": [m for _, m in FUNNEL]})
    counts = dict(zip(df["milestone"], df["orders"], strict=False)) if not df.empty else {}
    return pd.DataFrame({"stage": [s for s, _ in FUNNEL], "milestone": [m for _, m in FUNNEL],
                         "orders": [int(counts.get(m, 0)) for _, m in FUNNEL]})


def funnel_gap(_engine: Engine, channel: str, day: Any, a: str, b: str, *, limit: int = 2000) -> pd.DataFrame:
    """Orders received on `day` that reached stage `a` but not stage `b` (stage names of FUNNEL)."""
    start, end = _day_bounds(day)
    return _frame(_engine, _GAP, {"channel": channel, "start": start, "end": end, "a": _MILESTONE_OF[a],
                                  "b": _MILESTONE_OF[b], "limit": limit})


# -- inventory freshness ----------------------------------------------------------------------------
DEFAULT_MAX_AGE_MS = 3_600_000


def freshness_limits(status: pd.DataFrame, sla: str = "inventory_freshness") -> dict[str, float]:
    """Max age (ms) per channel for a freshness SLA, from its sla_status target."""
    rows = status[(status["sla"] == sla)] if not status.empty else status
    out: dict[str, float] = {}
    for _, r in rows.iterrows():
        limit = r["target_ms"] if not pd.isna(r["target_ms"]) else r["threshold"]
        if not pd.isna(limit) and float(limit) > 0:
            out[r["channel"]] = float(limit)
    return out


def stale_feeds(fresh: pd.DataFrame, limits: dict[str, float]) -> pd.DataFrame:
    """Feeds older than their channel's max age, oldest first. Pure."""
    columns = ["Channel", "Location", "Last sync", "Age", "Max age", "Over by"]
    if fresh.empty:
        return pd.DataFrame(columns=columns)
    age_ms = fresh["age_s"] * 1000
    limit = fresh["channel"].map(lambda c: limits.get(c, DEFAULT_MAX_AGE_MS))
    stale = fresh.assign(age_ms=age_ms, limit=limit)[age_ms > limit].sort_values("age_ms", ascending=False)
    return pd.DataFrame(
        {
            "Channel": stale["channel"],
            "Location": stale["location"],
            "Last sync": pd.to_datetime(stale["last_at"], utc=True),
            "Age": stale["age_ms"].map(human_duration),
            "Max age": stale["limit"].map(human_duration),
            "Over by": (stale["age_ms"] - stale["limit"]).map(human_duration),
        },
        columns=columns,
    ).reset_index(drop=True)


# -- alerts -----------------------------------------------------------------------------------------
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


def active_alerts(_engine: Engine) -> pd.DataFrame:
    """Pending and firing alerts, firing first; severity rank for sorting."""
    df = _frame(_engine, _ACTIVE_ALERTS)
    if not df.empty:
        df["rank"] = df["severity"].map(SEVERITY_RANK).fillna(3)
        df = df.sort_values(["state", "rank", "active_since"], ascending=[True, True, True]).drop(columns="rank")
        df = df.reset_index(drop=True)
    return df


def alert_history(_engine: Engine, *, hours: float = 24, limit: int = 200, now: datetime | None = None) -> pd.DataFrame:
    now = now or datetime.now(UTC)
    return _frame(_engine, _ALERT_HISTORY, {"since": now - pd.Timedelta(hours=hours), "limit": limit})


def silences(_engine: Engine, *, now: datetime | None = None, keep_hours: float = 24) -> pd.DataFrame:
    """Active silences and those that ended within `keep_hours`."""
    now = now or datetime.now(UTC)
    return _frame(_engine, _SILENCES, {"since": now - pd.Timedelta(hours=keep_hours)})


def labels_text(labels: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


_ACK = sa.text(
    "UPDATE alert_state SET acknowledged_by = :who, acknowledged_at = :at WHERE fingerprint = :fingerprint"
)
_SILENCE = sa.text(
    "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment, created_at) "
    "VALUES (CAST(:matchers AS jsonb), :starts_at, :ends_at, :created_by, :comment, :at) RETURNING id"
)


_AUDIT = sa.text(
    "INSERT INTO alert_audit (at, actor, action, target, detail) VALUES (:at, :actor, :action, :target, CAST(:detail AS jsonb))"
)


def acknowledge_alert(_engine: Engine, fingerprint: str, who: str, *, now: datetime | None = None) -> bool:
    """Record that `who` acknowledged the alert `fingerprint`; False when no such alert."""
    who = who.strip()
    if not who:
        raise ValueError("who acknowledges is required")
    at = now or datetime.now(UTC)
    with _engine.begin() as conn:
        result = conn.execute(_ACK, {"who": who, "at": at, "fingerprint": fingerprint})
        if result.rowcount:  # the audit log says who did it, in the same transaction
            conn.execute(_AUDIT, {"at": at, "actor": who, "action": "acknowledge", "target": fingerprint,
                                  "detail": '{"via": "dashboard"}'})
        return bool(result.rowcount)


def create_silence(
    _engine: Engine,
    matchers: dict[str, str],
    duration: Any,
    *,
    created_by: str,
    comment: str = "",
    now: datetime | None = None,
) -> int:
    """Silence alerts whose labels match every matcher for `duration` from now; returns its id."""
    import json

    created_by = created_by.strip()
    if not created_by:
        raise ValueError("created_by is required")
    if not matchers:
        raise ValueError("a silence needs at least one matcher")
    now = now or datetime.now(UTC)
    clean = {str(k): str(v) for k, v in matchers.items()}
    ends_at = now + pd.Timedelta(duration)
    with _engine.begin() as conn:
        silence_id = int(conn.execute(_SILENCE, {
            "matchers": json.dumps(clean, sort_keys=True),
            "starts_at": now, "ends_at": ends_at, "created_by": created_by,
            "comment": comment.strip(), "at": now,
        }).scalar_one())
        detail = {"matchers": clean, "ends_at": ends_at.isoformat(), "comment": comment.strip(), "via": "dashboard"}
        conn.execute(_AUDIT, {"at": now, "actor": created_by, "action": "silence", "target": f"silence:{silence_id}",
                              "detail": json.dumps(detail)})
        return silence_id
