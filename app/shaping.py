"""Pure shaping of query results into what people read: tables, tiles, grid cells, texts.

DataFrames in, DataFrames or strings out; no database, no Streamlit, no markup (escaping is the
components' job), so every function is table-tested with plain pytest. The vocabulary (health
ranks, durations, labels) comes from `controltower.vocab`, as in every other room.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd

from app import links
from controltower.vocab import HEALTH_RANK, human_duration, worst

HEALTH_SYMBOL = {"ok": "✓", "warn": "!", "critical": "✖", "unknown": "?"}
# The SLA judge's verdicts (controltower.slajudge.STATES) and event statuses, as health colours.
# `closed`: a closing milestone (a cancellation) means nothing is owed any more; `unjudged`,
# `excluded` and `not_started` say nothing about how the transaction is doing.
STATE_HEALTH = {"met": "ok", "closed": "ok", "pending": "unknown", "unjudged": "unknown", "excluded": "unknown",
                "not_started": "unknown", "breached": "warn", "overdue": "critical",
                "ok": "ok", "error": "critical", "dead_letter": "critical", "retry": "warn"}
SEVERITY_HEALTH = {"critical": "critical", "page": "critical", "warning": "warn", "warn": "warn", "info": "ok"}
DEFAULT_MAX_AGE_MS = 3_600_000


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def human_age(moment: Any, now: datetime) -> str:
    """How long before `now` `moment` was: `3 min 5 s ago`."""
    if _missing(moment) or pd.isna(moment):
        return "never"
    return human_duration((now - pd.Timestamp(moment).to_pydatetime()).total_seconds() * 1000) + " ago"


def pct(value: Any, digits: int = 1) -> str:
    return "–" if _missing(value) or pd.isna(value) else f"{float(value) * 100:.{digits}f} %"


def channel_name(channel: str) -> str:
    return "all channels" if channel == "*" else channel


def labels_text(labels: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


# -- the SLA table ----------------------------------------------------------------------------------
def channel_tiles(status: pd.DataFrame) -> pd.DataFrame:
    """One row per channel: worst health, the worst SLA's reason, SLA counts per health.
    Channel-less SLAs (channel `*`) get their own tile, last."""
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
        reason = top["reason"] if isinstance(top["reason"], str) and top["reason"] else (
            "All SLAs within target" if top["health"] == "ok" else "")
        rows.append({
            "channel": channel, "health": worst(group["health"], empty="unknown"), "sla": top["sla"], "reason": reason,
            "critical": int(counts.get("critical", 0)), "warn": int(counts.get("warn", 0)),
            "ok": int(counts.get("ok", 0)), "open_breaches": int(group["open_breaches"].fillna(0).sum()),
        })
    out = pd.DataFrame(rows, columns=columns)
    out["rank"] = out["health"].map(HEALTH_RANK).fillna(-1)
    out["star"] = out["channel"] == "*"
    out = out.sort_values(["star", "rank", "channel"], ascending=[True, False, True])
    return out.drop(columns=["rank", "star"]).reset_index(drop=True)


def is_ratio(row: pd.Series | dict[str, Any]) -> bool:
    """Whether an SLA row's `value` is a ratio (shown as a percentage): the `unit` published with its
    definition says so. Only a row without a published unit (a database the metrics job has not
    published definitions to yet) falls back to the shape of the numbers."""
    unit = row.get("unit")
    if isinstance(unit, str) and unit:
        return unit == "ratio"
    value, threshold = row.get("value"), row.get("threshold")
    return not _missing(threshold) and threshold < 1 and (_missing(value) or value <= 1)


def status_value(row: pd.Series | dict[str, Any]) -> str:
    """An SLA row's headline value as text: the p95 of a latency SLA, a percentage for ratios,
    an age for freshness and absence SLAs, the plain number otherwise."""
    kind, value = row.get("kind"), row.get("value")
    if kind in ("milestone_latency", "latency") or (_missing(value) and not _missing(row.get("p95_ms"))):
        return "–" if _missing(row.get("p95_ms")) else f"p95 {human_duration(row['p95_ms'])}"
    if _missing(value):
        return "–"
    if kind in ("freshness", "absence"):
        return human_duration(value)
    if is_ratio(row):
        return f"{float(value) * 100:.1f} %"
    return f"{value:g}"


def _target_text(row: pd.Series) -> str:
    if row.get("kind") == "deadline":
        return "promised date"
    if not pd.isna(row["threshold"]) and row.get("kind") == "rate" and is_ratio(row):
        return f"≤ {pct(row['threshold'])}"
    if not pd.isna(row["target_ms"]):
        return human_duration(row["target_ms"])
    if not pd.isna(row["threshold"]):
        return f"≤ {row['threshold']:g}"
    return "–"


def _value_text(row: pd.Series) -> str:
    if pd.isna(row["value"]):
        return "–"
    if row.get("kind") in ("freshness", "absence"):  # ages and silences are milliseconds
        return human_duration(row["value"])
    if is_ratio(row):
        return pct(row["value"])
    return f"{row['value']:g}"


def _burn_text(row: pd.Series) -> str:
    s, long_ = row["burn_rate_short"], row["burn_rate_long"]
    if pd.isna(s) and pd.isna(long_):
        return "–"
    return f"{0 if pd.isna(s) else s:.1f}× / {0 if pd.isna(long_) else long_:.1f}×"


SLA_COLUMNS = ["Health", "Channel", "SLA", "Reason", "Target", "Value", "Count", "p50", "p95", "p99",
               "Within target", "Open breaches", "Oldest breach", "Error budget", "Burn rate (short/long)"]


def sla_display(status: pd.DataFrame) -> pd.DataFrame:
    """The SLA table as people read it: worst first, durations humanised, ratios as percentages."""
    if status.empty:
        return pd.DataFrame(columns=SLA_COLUMNS)
    ranked = status.assign(rank=status["health"].map(HEALTH_RANK).fillna(-1), star=status["channel"] == "*")
    status = ranked.sort_values(["rank", "star", "channel", "sla"], ascending=[False, True, True, True])
    return pd.DataFrame({
        "Health": list(status["health"]),
        "Channel": [channel_name(c) for c in status["channel"]],
        "SLA": status["sla"],
        "Reason": status["reason"].fillna(""),
        "Target": status.apply(_target_text, axis=1),
        "Value": status.apply(_value_text, axis=1),
        "Count": status["count"].astype("Int64"),
        "p50": status["p50_ms"].map(human_duration),
        "p95": status["p95_ms"].map(human_duration),
        "p99": status["p99_ms"].map(human_duration),
        "Within target": status["within_target_ratio"].map(pct),
        "Open breaches": status["open_breaches"].astype("Int64"),
        "Oldest breach": status["oldest_breach_ms"].map(human_duration),
        "Error budget": status["error_budget_remaining"].map(lambda v: pct(v, 0)),
        "Burn rate (short/long)": status.apply(_burn_text, axis=1),
    }, columns=SLA_COLUMNS).reset_index(drop=True)


def health_grid(status: pd.DataFrame) -> pd.DataFrame:
    """Channels × SLAs in long form for the grid: channel, sla, health, symbol, value text, reason."""
    columns = ["channel", "sla", "health", "symbol", "value", "reason"]
    if status.empty:
        return pd.DataFrame(columns=columns)
    rows = [
        {
            "channel": channel_name(r["channel"]),
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


def budget_display(status: pd.DataFrame) -> pd.DataFrame:
    """Error budget and burn rates per SLA and window (from sla_status), as people read them."""
    def rate(v: Any) -> str:
        return "–" if _missing(v) or pd.isna(v) else f"{float(v):.1f}×"

    columns = ["Health", "SLA", "Window", "Objective", "Within target", "Error budget left",
               "Burn rate (short)", "Burn rate (long)"]
    rows = [
        {
            "Health": r["health"], "SLA": r["sla"], "Window": r["window"],
            "Objective": "–" if pd.isna(r["objective"]) else f"{float(r['objective']) * 100:g} %",
            "Within target": pct(r["within_target_ratio"]),
            "Error budget left": pct(r["error_budget_remaining"], 0),
            "Burn rate (short)": rate(r["burn_rate_short"]),
            "Burn rate (long)": rate(r["burn_rate_long"]),
        }
        for _, r in status.sort_values(["sla", "window"]).iterrows()
    ]
    return pd.DataFrame(rows, columns=columns)


# -- open breaches --------------------------------------------------------------------------------
def breaches_display(df: pd.DataFrame) -> pd.DataFrame:
    """The work queue as shown and downloaded: link to the transaction page, human ages, and a
    `Note` column only when some row has one (a stored time the core could not read)."""
    out = pd.DataFrame({
        "Transaction": [links.tx_link(cid) for cid in df["correlation_id"]],
        "Correlation id": df["correlation_id"],
        # a business transaction's members, when the core lists them (one row per business)
        "Members": [", ".join(ids) if isinstance(ids, list | tuple) else "" for ids in df["correlation_ids"]]
        if "correlation_ids" in df else "",
        "Order id": df["order_id"].fillna(""),
        "Channel": df["channel"],
        "SLA": df["sla"],
        "Started": pd.to_datetime(df["started_at"], utc=True),
        # the due time in words with its business calendar, else as a UTC time
        "Due": [d if isinstance(d, str) and d else _utc_text(at) for d, at in zip(
            df["due"] if "due" in df else [None] * len(df), df["due_at"] if "due_at" in df else [None] * len(df),
            strict=True)],
        "Age": df["age_ms"].map(human_duration),
        "Overdue by": df["overdue_ms"].map(human_duration),
        "Last milestone": df["last_milestone"].fillna(""),
        "Status": df["status"].fillna(""),
        # a stored time the core could not read: the row is listed, its ages are "–", and it says why
        "Note": df["reason"].fillna("") if "reason" in df else "",
    }).reset_index(drop=True)
    shown = out if (out["Note"] != "").any() else out.drop(columns="Note")
    # members only when some row joins more than its own correlation id
    return shown if shown["Members"].map(lambda v: "," in str(v)).any() else shown.drop(columns="Members")


# -- one transaction ------------------------------------------------------------------------------
def events_frame(tx: dict[str, Any]) -> pd.DataFrame:
    """A transaction's events as a table, time-ordered, one row per event; `correlation_id` says
    which member of a business transaction each came from."""
    columns = ["time", "system", "milestone", "status", "latency", "error", "correlation_id", "event_id", "source"]
    rows = [
        {
            "time": pd.Timestamp(e["occurred_at"]),
            "system": e.get("system") or "unknown",
            "milestone": f"{e.get('flow')}.{e.get('stage')}",
            "status": e.get("status"),
            "latency": human_duration(e.get("latency_ms")) if e.get("latency_ms") is not None else "",
            "error": " ".join(str(x) for x in (e.get("error_code"), e.get("error_message")) if x),
            "correlation_id": e.get("correlation_id") or tx.get("correlation_id"),
            "event_id": e.get("event_id"),
            "source": e.get("source"),
        }
        for e in tx.get("events", [])
    ]
    return pd.DataFrame(rows, columns=columns)


def milestones_frame(tx: dict[str, Any]) -> pd.DataFrame:
    """Merged milestones in time order: when each was first reached, by which system under which
    correlation id (`reached_by`; a reader without it shows the transaction's own id)."""
    columns = ["Milestone", "Reached at", "System", "Correlation id"]
    reached_by = tx.get("reached_by") or {}
    rows = [
        {"Milestone": m, "Reached at": pd.Timestamp(at),
         "System": (reached_by.get(m) or {}).get("system") or "",
         "Correlation id": (reached_by.get(m) or {}).get("correlation_id") or tx.get("correlation_id") or ""}
        for m, at in (tx.get("milestones") or {}).items()
    ]
    return pd.DataFrame(rows, columns=columns)


def keys_text(keys: dict[str, list[Any]] | None) -> str:
    """`erp_document 4500001 · tracking_number 1Z…, 1Z…` as plain text."""
    return " · ".join(f"{kind} {', '.join(str(v) for v in values)}" for kind, values in (keys or {}).items())


def members_frame(tx: dict[str, Any]) -> pd.DataFrame:
    """The correlation ids a business transaction joins, earliest first: each one's systems, the
    keys that linked it, its channel and first/last event."""
    columns = ["Correlation id", "Systems", "Keys", "Channel", "First event", "Last event", "Events", "Status"]
    rows = [
        {"Correlation id": m.get("correlation_id"), "Systems": ", ".join(m.get("systems") or []) or "unknown",
         "Keys": keys_text(m.get("keys")), "Channel": m.get("channel") or "–",
         "First event": pd.Timestamp(m["first_event_at"]) if m.get("first_event_at") else pd.NaT,
         "Last event": pd.Timestamp(m["last_event_at"]) if m.get("last_event_at") else pd.NaT,
         "Events": m.get("event_count"), "Status": m.get("status")}
        for m in tx.get("members") or []
    ]
    return pd.DataFrame(rows, columns=columns)


def search_display(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Search hits, one row per business transaction, as the transaction page lists them."""
    columns = ["correlation_id", "members", "channel", "flow", "order_id", "status", "last_milestone",
               "last_event_at", "error_count", "matched_by"]
    rows = [
        {**{c: r.get(c) for c in columns}, "channel": r.get("channel") or "–",
         "members": ", ".join(r.get("correlation_ids") or [r.get("correlation_id")]),
         "matched_by": ", ".join(r.get("matched_by") or [])}
        for r in results
    ]
    return pd.DataFrame(rows, columns=columns)


def verdict_note(verdict: dict[str, Any]) -> str:
    """Why a verdict is what it is: the closing milestone of a `closed` one, the judge's reason otherwise."""
    closer, reason = verdict.get("closed_by"), verdict.get("reason")
    if closer and (not reason or closer not in reason):
        return f"closed by {closer}" + (f"; {reason}" if reason else "")
    return reason or ""


def verdict_due(verdict: dict[str, Any]) -> str:
    """A verdict's due time: in words with its business calendar (`Tue 8 Dec 17:00
    America/New_York, calendar us-retail: Mon–Fri, cut-off 14:00, …`), else as a UTC time."""
    calendar = verdict.get("calendar")
    if isinstance(calendar, dict) and calendar.get("due"):
        return str(calendar["due"])
    return _utc_text(verdict.get("due_at"))


def _utc_text(moment: Any) -> str:
    if moment is None or (not isinstance(moment, str) and pd.isna(moment)):
        return ""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return f"{stamp:%a} {stamp.day} {stamp:%b %H:%M} UTC"


def verdicts_frame(tx: dict[str, Any]) -> pd.DataFrame:
    """The judge's verdicts on one transaction (`controltower.transactions.get`'s `sla`), one row each."""
    columns = ["SLA", "State", "Elapsed", "Target", "Due", "From → to", "Note"]
    return pd.DataFrame(
        [{"SLA": v["sla"], "State": v["state"], "Elapsed": human_duration(v.get("elapsed_ms")),
          "Target": human_duration(v.get("target_ms")), "Due": verdict_due(v), "From → to": f"{v['from']} → {v['to']}",
          "Note": verdict_note(v)}
         for v in tx.get("sla", [])],
        columns=columns,
    )


def last_error_text(tx: dict[str, Any]) -> str | None:
    err = tx.get("last_error")
    if not err:
        return None
    return f"Last error at {err['at']}: {err.get('code') or ''} {err.get('message') or ''}".strip()


# -- inventory freshness --------------------------------------------------------------------------
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
    """Feeds older than their channel's max age, oldest first."""
    columns = ["Channel", "Location", "Last sync", "Age", "Max age", "Over by"]
    if fresh.empty:
        return pd.DataFrame(columns=columns)
    age_ms = fresh["age_s"] * 1000
    limit = fresh["channel"].map(lambda c: limits.get(c, DEFAULT_MAX_AGE_MS))
    stale = fresh.assign(age_ms=age_ms, limit=limit)[age_ms > limit].sort_values("age_ms", ascending=False)
    return pd.DataFrame({
        "Channel": stale["channel"],
        "Location": stale["location"],
        "Last sync": pd.to_datetime(stale["last_at"], utc=True),
        "Age": stale["age_ms"].map(human_duration),
        "Max age": stale["limit"].map(human_duration),
        "Over by": (stale["age_ms"] - stale["limit"]).map(human_duration),
    }, columns=columns).reset_index(drop=True)


# -- alerts ---------------------------------------------------------------------------------------
def alert_value(v: Any) -> str:
    return "–" if _missing(v) or pd.isna(v) else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}")


def alerts_display(active: pd.DataFrame) -> pd.DataFrame:
    """Pending and firing alerts as the table shows them."""
    since = [f if s == "firing" and not _missing(f) and not pd.isna(f) else a
             for s, f, a in zip(active["state"], active["firing_since"], active["active_since"], strict=True)]
    return pd.DataFrame({
        "Severity": active["severity"],
        "State": active["state"],
        "Rule": active["rule"],
        "Since": pd.to_datetime(pd.Series(since, index=active.index), utc=True),
        "Value": active["last_value"].map(alert_value),
        "Acknowledged": ["–" if _missing(by) or pd.isna(by) else f"{by} at {pd.Timestamp(at):%H:%M}"
                         for by, at in zip(active["acknowledged_by"], active["acknowledged_at"], strict=True)],
        "Summary": active["summary"].fillna(""),
        "Labels": active["labels"].map(labels_text),
    })


def alert_choice(row: pd.Series | dict[str, Any]) -> str:
    """How one alert is named in a picker: state · severity · rule · its distinguishing labels."""
    labels = row["labels"] or {}
    short = " / ".join(str(v) for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    return f"{row['state']} · {row['severity']} · {row['rule']} · {short}"


def silences_display(sil: pd.DataFrame, now: datetime) -> pd.DataFrame:
    moment = pd.Timestamp(now)
    return pd.DataFrame({
        "Id": sil["id"],
        "Active": ["yes" if pd.Timestamp(s) <= moment < pd.Timestamp(e) else "no"
                   for s, e in zip(sil["starts_at"], sil["ends_at"], strict=True)],
        "Matchers": sil["matchers"].map(labels_text),
        "Starts": pd.to_datetime(sil["starts_at"], utc=True),
        "Ends": pd.to_datetime(sil["ends_at"], utc=True),
        "Created by": sil["created_by"],
        "Comment": sil["comment"],
    })


def history_display(history: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "At": pd.to_datetime(history["at"], utc=True),
        "Rule": history["rule"],
        "Change": history["from_state"] + " → " + history["to_state"],
        "Labels": history["labels"].map(labels_text),
        "Value": history["value"].map(lambda v: "–" if pd.isna(v) else f"{v:g}"),
        "Summary": history["summary"].fillna(""),
    })


# -- alerting watches itself ------------------------------------------------------------------------
def alerting_banner(health: dict[str, Any], now: datetime) -> str | None:
    """The every-page warning when alerting has stopped (`controltower.alertops.evaluation_health`
    says `stale`), as plain text; None while it runs. Times in UTC."""
    if not health.get("stale"):
        return None
    last = health.get("last_success_at")
    if last is None:
        text = ("Alerting has never completed an evaluation — on-call is not being paged. "
                "Is the scheduler (controltower scheduler) running?")
    else:
        moment = pd.Timestamp(last).tz_convert("UTC")
        when = f"{moment:%H:%M}" if moment.date() == pd.Timestamp(now).tz_convert("UTC").date() else f"{moment:%d %b %H:%M}"
        text = (f"Alerting has not completed an evaluation since {when} UTC ({human_age(last, now)}) "
                "— on-call is not being paged.")
    if health.get("last_error"):
        error = str(health["last_error"])
        text += f" Last error: {error if len(error) <= 200 else error[:200] + '…'}"
    return text


def evaluation_line(health: dict[str, Any], now: datetime) -> str:
    """`Last evaluation 12 s ago (every 30 s)`: how fresh what the Alerts page shows is, as plain text."""
    interval = float(health.get("interval_seconds") or 0)
    every = f"{interval:g} s" if interval < 60 else human_duration(interval * 1000)
    last = health.get("last_success_at")
    if last is None:
        return f"No alert evaluation has completed yet (every {every} once the scheduler runs)."
    return f"Last evaluation {human_age(last, now)} (every {every})."


def failing_rules_text(health: dict[str, Any]) -> str | None:
    """The smaller warning when some rules fail while the others run: their names, as plain text."""
    failing = health.get("failing_rules") or []
    if not failing:
        return None
    names = ", ".join(str(r["rule"]) for r in failing)
    noun = "rule fails" if len(failing) == 1 else "rules fail"
    return f"{len(failing)} alert {noun} to evaluate and cannot fire: {names}."
