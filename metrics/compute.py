"""The SLA table, channel health, error budgets and scorecards, read from rollups.

Every query here reads rollups (`sla_rollup_*`, `event_rollup_minute`, `freshness_state`) or
`sla_open_items` through their indexes: the cost depends on the window's length in minutes
and hours and the number of open breaches, never on the number of raw events.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import breaches, slajudge
from controltower.vocab import HEALTH_RANK, human_duration, worst
from metrics import queues, signals
from metrics.definitions import SLA, Definitions
from metrics.rollups import SILENCE_KEY, percentile

SHORT_BURN = timedelta(hours=1)  # Google SRE workbook: page on 1 h (and 5 m) burn > 14.4
LONG_BURN = timedelta(hours=6)  # ... and on 6 h (and 30 m) burn > 6
PAGE_BURN, TICKET_BURN = 14.4, 6.0
MIN_SAMPLES = 10  # below this, a ratio says nothing about health


@dataclass(frozen=True)
class Span:
    """A window split into whole hours (hour rollups) and ragged edges (minute rollups)."""

    start: datetime
    end: datetime

    @property
    def hours(self) -> tuple[datetime, datetime]:
        first = self.start.replace(minute=0, second=0, microsecond=0)
        if first < self.start:
            first += timedelta(hours=1)
        last = self.end.replace(minute=0, second=0, microsecond=0)
        return first, max(first, last)


_LATENCY_HIST = sa.text("""
WITH r AS (
    SELECT sla, channel, count, met, hist FROM sla_rollup_hour
    WHERE hour >= :h0 AND hour < :h1 AND (CAST(:channel AS text) IS NULL OR channel = :channel)
    UNION ALL
    SELECT sla, channel, count, met, hist FROM sla_rollup_minute
    WHERE ((minute >= :start AND minute < LEAST(:h0, :end)) OR (minute >= GREATEST(:h1, :start) AND minute < :end))
      AND (CAST(:channel AS text) IS NULL OR channel = :channel)
)
SELECT sla, channel, e.key::int AS bucket, sum(e.value::bigint) AS n
FROM r, jsonb_each_text(r.hist) e GROUP BY 1, 2, 3
""")

_LATENCY_COUNTS = sa.text("""
SELECT sla, channel, sum(count) AS count, sum(met) AS met FROM (
    SELECT sla, channel, count, met FROM sla_rollup_hour
    WHERE hour >= :h0 AND hour < :h1 AND (CAST(:channel AS text) IS NULL OR channel = :channel)
    UNION ALL
    SELECT sla, channel, count, met FROM sla_rollup_minute
    WHERE ((minute >= :start AND minute < LEAST(:h0, :end)) OR (minute >= GREATEST(:h1, :start) AND minute < :end))
      AND (CAST(:channel AS text) IS NULL OR channel = :channel)
) r GROUP BY 1, 2
""")

_OPEN = sa.text("""
SELECT sla, channel, count(*) AS n, count(*) FILTER (WHERE started_at >= :period_start) AS in_period,
       min(started_at) FILTER (WHERE started_at >= :earliest AND started_at < :latest) AS oldest
FROM sla_open_items
WHERE due_at < :now AND (CAST(:channel AS text) IS NULL OR channel = :channel)
GROUP BY 1, 2
""")

_EVENTS = sa.text("""
SELECT channel, status, sum(n) AS n FROM (
    SELECT channel, status, sum(count) AS n FROM event_rollup_hour
    WHERE hour >= :h0 AND hour < :h1 AND (CAST(:channel AS text) IS NULL OR channel = :channel)
    GROUP BY 1, 2
    UNION ALL
    SELECT channel, status, sum(count) FROM event_rollup_minute
    WHERE ((minute >= :start AND minute < LEAST(:h0, :end)) OR (minute >= GREATEST(:h1, :start) AND minute < :end))
      AND (CAST(:channel AS text) IS NULL OR channel = :channel)
    GROUP BY 1, 2
) e GROUP BY 1, 2
""")

_FRESH = sa.text("""
SELECT sla, channel, key, last_at FROM freshness_state
WHERE (CAST(:channel AS text) IS NULL OR channel = :channel)
""")


def _counts(conn: Connection, start: datetime, end: datetime, channel: str | None) -> dict[tuple[str, str], tuple[int, int]]:
    h0, h1 = Span(start, end).hours
    rows = conn.execute(_LATENCY_COUNTS, {"start": start, "end": end, "h0": h0, "h1": h1, "channel": channel})
    return {(r.sla, r.channel): (int(r.count), int(r.met)) for r in rows}


def sla_table(conn: Connection, definitions: Definitions, *, window: timedelta, now: datetime, channel: str | None = None) -> list[dict[str, Any]]:
    """Every SLA per channel over `[now - window, now)`, with health and error budget."""
    start = now - window
    h0, h1 = Span(start, now).hours
    params = {"start": start, "end": now, "h0": h0, "h1": h1, "channel": channel}
    hists: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for r in conn.execute(_LATENCY_HIST, params):
        hists[(r.sla, r.channel)][int(r.bucket)] = int(r.n)
    counts = _counts(conn, start, now, channel)
    longest = max((s.period_s for s in definitions.latency), default=0)
    period_counts = {}
    for sla in definitions.latency:
        if sla.objective:
            period_counts[sla.period_s] = period_counts.get(sla.period_s) or _counts(conn, now - timedelta(seconds=sla.period_s), now, channel)
    short = _counts(conn, now - SHORT_BURN, now, channel)
    long = _counts(conn, now - LONG_BURN, now, channel)
    open_rows: dict[tuple[str, str], Any] = {}
    sane = {"earliest": slajudge.EARLIEST, "latest": slajudge.LATEST}
    for r in conn.execute(_OPEN, {"now": now, "channel": channel, "period_start": now - timedelta(seconds=longest)} | sane):
        open_rows[(r.sla, r.channel)] = r
    events: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in conn.execute(_EVENTS, params):
        events[r.channel][r.status] += int(r.n)
    fresh: dict[tuple[str, str], dict[str, datetime]] = defaultdict(dict)
    for r in conn.execute(_FRESH, {"channel": channel}):
        fresh[(r.sla, r.channel)][r.key] = r.last_at

    channels = sorted({c for _, c in counts} | {c for _, c in open_rows} | set(events) | {c for _, c in fresh})
    if channel is not None:
        channels = [channel]
    out: list[dict[str, Any]] = []
    for sla in definitions.slas:
        for ch in channels:
            if sla.is_latency:
                row = _latency_row(sla, ch, counts, hists, open_rows, period_counts, short, long, now)
            elif sla.kind == "rate":
                row = _rate_row(sla, ch, events.get(ch))
            elif sla.kind == "freshness":
                row = _freshness_row(sla, ch, fresh.get((sla.name, ch)), now)
            elif sla.kind in signals.KINDS or sla.kind in queues.KINDS:
                continue  # below, over the channels of their own tables
            else:
                row = _absence_row(sla, ch, fresh.get((sla.name, ch), {}).get(SILENCE_KEY), now)
            if row is not None:
                out.append(row)
    out += signals.sla_rows(conn, definitions, window=window, now=now, channel=channel, base=_base)
    out += queues.sla_rows(conn, definitions, now=now, channel=channel, base=_base)  # the latest samples
    return out


def flow_of(sla: SLA | None) -> str:
    if sla is None:
        return "*"
    return (sla.from_milestone or sla.milestone or "").split(".")[0] or sla.flow or "*"


def _base(sla: SLA, channel: str) -> dict[str, Any]:
    return {
        "sla": sla.name, "kind": sla.kind, "channel": channel, "flow": flow_of(sla),
        "count": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "target_ms": None,
        "within_target_ratio": None, "open_breaches": 0, "oldest_breach_ms": None, "value": None,
        "threshold": None, "objective": sla.objective, "error_budget_remaining": None,
        "burn_rate_short": None, "burn_rate_long": None, "health": "ok", "reason": None, "details": {},
    }


def _burn(counts: tuple[int, int] | None, objective: float) -> float | None:
    # a burn rate over a handful of transactions is noise (1 late of 6 would "burn" 16x)
    if not counts or counts[0] < MIN_SAMPLES:
        return None
    total, met = counts
    return ((total - met) / total) / (1 - objective)


def _latency_row(sla, ch, counts, hists, open_rows, period_counts, short, long, now) -> dict[str, Any] | None:
    key = (sla.name, ch)
    total, met = counts.get(key, (0, 0))
    opened = open_rows.get(key)
    if total == 0 and opened is None:
        return None
    row = _base(sla, ch)
    hist = hists.get(key, {})
    row.update(
        count=total,
        p50_ms=_round(percentile(hist, 0.50)),
        p95_ms=_round(percentile(hist, 0.95)),
        p99_ms=_round(percentile(hist, 0.99)),
        target_ms=sla.target_for(ch),
        within_target_ratio=(met / total) if total else None,
        open_breaches=int(opened.n) if opened else 0,
        oldest_breach_ms=int((now - opened.oldest).total_seconds() * 1000) if opened and opened.oldest else None,
    )
    reasons, health = [], "ok"
    if sla.objective:
        p_total, p_met = period_counts.get(sla.period_s, {}).get(key, (0, 0))
        overdue = int(opened.in_period) if opened else 0
        budget_total = p_total + overdue
        if budget_total:
            bad_ratio = (p_total - p_met + overdue) / budget_total
            row["error_budget_remaining"] = 1 - bad_ratio / (1 - sla.objective)
        row["burn_rate_short"] = _burn(short.get(key), sla.objective)
        row["burn_rate_long"] = _burn(long.get(key), sla.objective)
        row["threshold"] = sla.objective
    n_open = row["open_breaches"]
    noun = f"{(sla.from_milestone or 'x').split('.')[0]}s"
    what = f"{noun} {sla.open_label or f'without {sla.to_milestone}'}"
    if n_open >= sla.critical_open_breaches:
        health = "critical"
    elif n_open >= sla.warn_open_breaches:
        health = "warn"
    if n_open:
        target = f"> {human_duration(sla.target_for(ch))}" if sla.kind == "milestone_latency" else "past their promised date"
        reasons.append(f"{n_open} {what} {target}, oldest {human_duration(row['oldest_breach_ms'])}")
    burn_short, burn_long = row["burn_rate_short"] or 0, row["burn_rate_long"] or 0
    if sla.objective and total >= MIN_SAMPLES:
        if burn_short >= PAGE_BURN and burn_long >= PAGE_BURN:
            health = "critical"
            reasons.append(f"error budget burning {burn_short:.0f}x (1 h)")
        elif burn_long >= TICKET_BURN:
            health = worst([health, "warn"])
            reasons.append(f"error budget burning {burn_long:.1f}x (6 h)")
        if row["within_target_ratio"] is not None and row["within_target_ratio"] < sla.objective:
            health = worst([health, "warn"])
            reasons.append(f"{row['within_target_ratio']:.1%} within target (objective {sla.objective:.1%})")
    row["health"] = health
    row["reason"] = f"{sla.name}: " + "; ".join(reasons) if reasons else None
    return row


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rate_row(sla: SLA, ch: str, statuses: dict[str, int] | None) -> dict[str, Any] | None:
    if not statuses:
        return None
    row = _base(sla, ch)
    total = sum(statuses.values())
    value: float
    if sla.metric == "error_ratio":
        value = (statuses.get("error", 0) + statuses.get("dead_letter", 0)) / total
    elif sla.metric == "dead_letters":
        value = statuses.get("dead_letter", 0)
    elif sla.metric == "retries":
        value = statuses.get("retry", 0)
    else:
        value = total
    row.update(count=total, value=value, threshold=sla.max, details=dict(statuses))
    ratio = sla.unit == "ratio"
    enough = not ratio or total >= sla.min_events
    if enough and sla.critical is not None and value > sla.critical:
        row["health"] = "critical"
    elif enough and sla.max is not None and value > sla.max:
        row["health"] = "warn"
    if row["health"] != "ok":
        shown, limit = (f"{value:.1%}", f"{sla.max:.1%}") if ratio else (f"{value:.0f}", f"{sla.max:.0f}")
        row["reason"] = f"{sla.name}: {shown} (max {limit})"
    return row


def _freshness_row(sla: SLA, ch: str, keys: dict[str, datetime] | None, now: datetime) -> dict[str, Any] | None:
    if not keys:
        return None
    row = _base(sla, ch)
    limit = sla.max_ms_for(ch) or 0
    ages = {k: max(0, int((now - at).total_seconds() * 1000)) for k, at in keys.items()}
    stale = {k: a for k, a in ages.items() if a > limit}
    oldest_key = max(ages, key=lambda k: ages[k])
    row.update(
        count=len(ages), value=ages[oldest_key], threshold=limit, target_ms=int(limit), open_breaches=len(stale),
        oldest_breach_ms=max(stale.values()) if stale else None, details={"ages_ms": ages},
    )
    if stale:
        row["health"] = "critical" if ages[oldest_key] > limit * sla.critical_factor else "warn"
        row["reason"] = f"{sla.name}: {len(stale)} of {len(ages)} {sla.key or 'feed'}s stale, oldest {oldest_key} {human_duration(ages[oldest_key])} (max {human_duration(limit)})"
    return row


def _absence_row(sla: SLA, ch: str, last: datetime | None, now: datetime) -> dict[str, Any] | None:
    if last is None:
        return None
    row = _base(sla, ch)
    limit = sla.max_ms_for(ch) or 0
    silent = max(0, int((now - last).total_seconds() * 1000))
    row.update(value=silent, threshold=limit, target_ms=int(limit), details={"last_event_at": last.isoformat()})
    if silent > limit:
        row["health"] = "critical" if silent > limit * sla.critical_factor else "warn"
        row["open_breaches"] = 1
        row["oldest_breach_ms"] = silent
        row["reason"] = f"{sla.name}: no events from {ch} for {human_duration(silent)} (max {human_duration(limit)})"
    return row


def hop_health(definitions: Definitions, table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per channel and hop, the health of the SLA that judges it: where is the delay? A queue
    sitting at the hop (taps.yaml `hop`; no channel: every channel's) adds its verdicts: the hop
    is the worst of its SLA and its queues, and its reason names the queues worth a look."""
    by_key = {(r["sla"], r["channel"]): r for r in table}
    # a channel-less queue row (`*`) is no channel of its own: it sits on every channel's hop
    channels = sorted({r["channel"] for r in table if not (r["kind"] in queues.KINDS and r["channel"] == queues.ALL_CHANNELS)})
    at_hop = queues.hop_verdicts(table)
    out = []
    for ch in channels:
        for position, hop in enumerate(definitions.hops):
            r = by_key.get((hop.sla, ch))
            verdicts = at_hop.get((ch, hop.hop), []) + at_hop.get((queues.ALL_CHANNELS, hop.hop), [])
            notes = list(dict.fromkeys(v["text"] for v in sorted(verdicts, key=_worst_first) if v["text"]))
            reason = "; ".join(([r["reason"]] if r and r["reason"] else []) + notes) or None
            out.append({
                "channel": ch, "hop": hop.hop, "position": position, "sla": hop.sla, "cause": hop.cause,
                "volume": int(r["count"] or 0) if r else 0,
                "backlog": int(r["open_breaches"] or 0) if r else 0,
                "p95_ms": r["p95_ms"] if r else None,
                "health": worst([r["health"] if r else "ok", *(v["health"] for v in verdicts)]),
                "reason": reason,
            })
    return out


def _worst_first(verdict: dict[str, Any]) -> tuple[int, str]:
    return (-HEALTH_RANK.get(verdict["health"], -1), verdict["queue"])


def channel_health(table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Worst health per channel with the reasons of its worst SLAs."""
    out: dict[str, dict[str, Any]] = {}
    for r in table:
        entry = out.setdefault(r["channel"], {"health": "ok", "reasons": []})
        entry["health"] = worst([entry["health"], r["health"]])
    for r in table:
        if r["health"] == out[r["channel"]]["health"] and r["reason"]:
            out[r["channel"]]["reasons"].append(r["reason"])
    return out


def open_breaches(conn: Connection, *, sla: str, now: datetime, channel: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Offending transactions of one SLA, oldest first (e.g. the unposted orders)."""
    return breaches.open_breaches(conn, now=now, sla=sla, channel=channel, limit=limit)


def scorecards(conn: Connection, definitions: Definitions, *, now: datetime) -> list[dict[str, Any]]:
    """Marketplace scorecard rates over their rolling windows, and the budget left."""
    out = []
    for card in definitions.scorecards:
        start = now - timedelta(seconds=card.window_s)
        total, met = _counts(conn, start, now, card.channel).get((card.sla, card.channel), (0, 0))
        overdue = conn.execute(
            sa.text("SELECT count(*) FROM sla_open_items WHERE sla = :sla AND channel = :ch AND due_at < :now AND due_at >= :start"),
            {"sla": card.sla, "ch": card.channel, "now": now, "start": start},
        ).scalar_one()
        late = total - met + overdue
        judged = total + overdue
        rate = late / judged if judged else 0.0
        out.append({
            "channel": card.channel, "metric": card.metric, "sla": card.sla, "window_days": card.window_s / 86400,
            "orders": judged, "late": late, "rate": rate, "limit": card.limit,
            "late_orders_left": max(0, math.floor(card.limit * judged) - late),
            "health": "critical" if rate > card.limit else ("warn" if rate > 0.8 * card.limit else "ok"),
        })
    return out
