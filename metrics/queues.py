"""Queue SLAs: dead-letter queues, growing queues and consumer lag, judged from `queue_samples`.

The collectors' queue probe writes one sample per queue and probe (depth, oldest message age,
JetStream pending counts, and the queue's `channel` and `hop` from taps.yaml). Three SLA kinds
judge them, each per queue, then per (SLA, channel) into the SLA table (queues without a
channel under channel `*`, "all channels"):

- `dlq_not_empty` (`target`): a dead-letter queue non-empty at every sample since the last
  empty one for longer than `target` is a breach (warn; critical past `critical_factor` x target).
- `queue_growing` (`window`): a queue (or JetStream consumer) whose depth never fell between
  two samples over the window and ends higher than it started (the window must be covered: a
  sample at or before its start, no older than one window before it, and no gap between samples
  longer than the window) is a breach (warn).
- `consumer_lag` (`max_pending`, optional `critical`): a JetStream consumer's num_pending, or a
  RabbitMQ queue's ready messages, above `max_pending` (warn; above `critical`: critical).

Every SLA may name the `queues` it judges (default: all of the kinds above). Only queues sampled
within `FRESH` count (a queue no longer probed is no longer judged). Each row's `details.queues`
lists the per-queue verdicts (queue, kind, hop, depth, health, text); `hop_verdicts` hands those
with a hop to the hop strip. Reads only `queue_samples`, by its (queue, at) key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower.vocab import human_duration, worst

if TYPE_CHECKING:
    from metrics.definitions import SLA, Definitions

UNITS = {"dlq_not_empty": "ms", "queue_growing": "count", "consumer_lag": "count"}
KINDS = frozenset(UNITS)
KEYS = {
    "dlq_not_empty": {"target", "critical_factor", "queues"},
    "queue_growing": {"window", "queues"},
    "consumer_lag": {"max_pending", "critical", "queues"},
}
SAMPLED = {"dlq_not_empty": ("dlq",), "queue_growing": ("queue", "consumer"), "consumer_lag": ("consumer", "queue")}
ALL_CHANNELS = "*"
FRESH = timedelta(hours=1)

_LATEST = sa.text("""
SELECT DISTINCT ON (queue) queue, kind, coalesce(channel, '*') AS channel, hop, at, depth, oldest_age_ms, pending
FROM queue_samples
WHERE at <= :now AND at > :fresh AND (CAST(:channel AS text) IS NULL OR coalesce(channel, '*') = :channel)
ORDER BY queue, at DESC
""")
# since when each dead-letter queue has been non-empty: its first sample after the last empty one
_NON_EMPTY_SINCE = sa.text("""
SELECT q.queue, (
    SELECT min(s.at) FROM queue_samples s
    WHERE s.queue = q.queue AND s.at <= :now
      AND s.at > coalesce((SELECT max(e.at) FROM queue_samples e WHERE e.queue = q.queue AND e.at <= :now AND e.depth = 0),
                          '-infinity')
) AS since
FROM unnest(CAST(:queues AS text[])) AS q(queue)
""")
# each queue's depths over the window, from the last sample at or before its start
_OVER_WINDOW = sa.text("""
SELECT s.queue, s.at, s.depth FROM unnest(CAST(:queues AS text[])) AS q(queue)
JOIN queue_samples s ON s.queue = q.queue AND s.at <= :now
 AND s.at >= coalesce((SELECT max(p.at) FROM queue_samples p WHERE p.queue = q.queue AND p.at <= :start), :start)
ORDER BY s.queue, s.at
""")


def parse(c: Any, item: dict[str, Any], path: tuple[Any, ...], fields: dict[str, Any]) -> None:
    """The queue kinds' keys (`c`: the definitions' checker) into the SLA's fields."""
    name, kind = fields["name"], fields["kind"]

    def need(key: str) -> Any:
        if key not in item:
            raise c.fail(f"{name}: {kind} needs `{key}`", *path)
        return item[key]

    if kind == "dlq_not_empty":
        fields["target_ms"] = c.duration_ms(need("target"), *path, "target")
        if "critical_factor" in item:
            fields["critical_factor"] = c.number(item["critical_factor"], *path, "critical_factor", low=1.0)
    elif kind == "queue_growing":
        fields["window_ms"] = c.duration_ms(need("window"), *path, "window")
    else:
        fields["max"] = c.number(need("max_pending"), *path, "max_pending", integer=True)
        if "critical" in item:
            fields["critical"] = c.number(item["critical"], *path, "critical", integer=True)
            if fields["critical"] < fields["max"]:
                raise c.fail(f"{name}: critical ({fields['critical']}) is below max_pending ({fields['max']})",
                             *path, "critical")
    if "queues" in item:
        fields["queues"] = c.text_list(item["queues"], *path, "queues")


def sla_rows(
    conn: Connection, defs: Definitions, *, now: datetime, channel: str | None,
    base: Callable[[SLA, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The SLA table's rows of the queue kinds at `now`: one per (SLA, channel) with queues."""
    slas = [s for s in defs.slas if s.kind in KINDS]
    if not slas:
        return []
    latest = {r.queue: r for r in conn.execute(_LATEST, {"now": now, "fresh": now - FRESH, "channel": channel})}
    if not latest:
        return []
    out = []
    for sla in slas:
        judged = {q: r for q, r in latest.items() if r.kind in SAMPLED[sla.kind] and (not sla.queues or q in sla.queues)}
        if not judged:
            continue
        if sla.kind == "dlq_not_empty":
            verdicts = _dead_letters(conn, sla, judged, now)
        elif sla.kind == "queue_growing":
            verdicts = _growing(conn, sla, judged, now)
        else:
            verdicts = [_lag(sla, r) for r in judged.values()]
        by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for verdict in verdicts:
            by_channel[verdict["channel"]].append(verdict)
        out += [_row(base(sla, ch), sla, sorted(vs, key=lambda v: v["queue"])) for ch, vs in sorted(by_channel.items())]
    return out


def _verdict(r: Any, **extra: Any) -> dict[str, Any]:
    return {"queue": r.queue, "kind": r.kind, "channel": r.channel, "hop": r.hop, "depth": r.depth,
            "oldest_age_ms": r.oldest_age_ms, "health": "ok", "breached": False, "value": 0, "text": None} | extra


def _oldest(r: Any) -> str:
    return f", oldest {human_duration(r.oldest_age_ms)}" if r.oldest_age_ms is not None else ""


def _dead_letters(conn: Connection, sla: SLA, judged: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    since = {r.queue: r.since for r in conn.execute(_NON_EMPTY_SINCE, {"now": now, "queues": sorted(judged)})}
    target = sla.target_ms or 0
    out = []
    for queue, r in judged.items():
        if not r.depth or since.get(queue) is None:
            out.append(_verdict(r))
            continue
        ms = max(0, int((now - since[queue]).total_seconds() * 1000))
        breached = ms > target
        health = ("critical" if ms > target * sla.critical_factor else "warn") if breached else "ok"
        text = f"DLQ {queue}: {r.depth:,} message{'s' if r.depth != 1 else ''} for {human_duration(ms)}{_oldest(r)}"
        out.append(_verdict(r, health=health, breached=breached, value=ms, non_empty_ms=ms,
                            text=text + (f" (max {human_duration(target)})" if breached else "")))
    return out


def _growing(conn: Connection, sla: SLA, judged: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    window = timedelta(milliseconds=sla.window_ms or 0)
    start = now - window
    series: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for s in conn.execute(_OVER_WINDOW, {"now": now, "start": start, "queues": sorted(judged)}):
        if s.depth is not None:
            series[s.queue].append((s.at, int(s.depth)))
    out = []
    for queue, r in judged.items():
        points = series.get(queue, [])
        # observed over the window: a baseline at or before its start, and no gap longer than the
        # window between samples (the probe off for a day, then 5 -> 10, is not "growing for 15 min")
        covered = len(points) >= 2 and start - window <= points[0][0] <= start and all(
            b[0] - a[0] <= window for a, b in zip(points, points[1:], strict=False))
        depths = [d for _, d in points]
        rising = covered and all(b >= a for a, b in zip(depths, depths[1:], strict=False)) and depths[-1] > depths[0]
        if not rising:
            out.append(_verdict(r, value=(depths[-1] - depths[0]) if len(depths) >= 2 else 0))
            continue
        text = (f"{'consumer' if r.kind == 'consumer' else 'queue'} {queue}: growing for {human_duration(sla.window_ms)}, "
                f"{depths[0]:,} → {depths[-1]:,} messages{_oldest(r)}")
        out.append(_verdict(r, health="warn", breached=True, value=depths[-1] - depths[0], text=text))
    return out


def _lag(sla: SLA, r: Any) -> dict[str, Any]:
    pending = r.pending if r.pending is not None else r.depth
    if pending is None or sla.max is None or pending <= sla.max:
        return _verdict(r, value=pending or 0)
    health = "critical" if sla.critical is not None and pending > sla.critical else "warn"
    what = f"consumer {r.queue}: {pending:,} pending" if r.kind == "consumer" else f"queue {r.queue}: {pending:,} ready"
    return _verdict(r, health=health, breached=True, value=pending, text=f"{what} (max {sla.max:,.0f}){_oldest(r)}")


def _row(row: dict[str, Any], sla: SLA, verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    breached = [v for v in verdicts if v["breached"]]
    row.update(
        count=len(verdicts), value=max(v["value"] for v in verdicts), open_breaches=len(breached),
        threshold=sla.target_ms if sla.kind == "dlq_not_empty" else (sla.window_ms if sla.kind == "queue_growing" else sla.max),
        target_ms=sla.target_ms if sla.kind == "dlq_not_empty" else None,
        oldest_breach_ms=max((v.get("non_empty_ms", 0) for v in breached), default=0) or None,
        health=worst(v["health"] for v in verdicts),
        details={"queues": verdicts},
    )
    if breached:
        row["reason"] = f"{sla.name}: " + "; ".join(v["text"] for v in breached)
    return row


def hop_verdicts(table: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (channel, hop) the queue verdicts of the SLA table (channel `*`: every channel's hop)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in table:
        if r["kind"] in KINDS:
            for v in (r.get("details") or {}).get("queues", []):
                if v.get("hop"):
                    out[(r["channel"], v["hop"])].append(v)
    return out
