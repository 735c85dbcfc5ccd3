"""Incremental maintenance of the SLA samples and rollups (the metrics job's first half).

Each run looks only at what changed since its watermark (minus a safety lag for transactions
that committed late), so its cost follows the ingest rate, not the data size:

- latency SLAs are measured per *business transaction* (correlation IDs joined by identity
  keys, named by `transactions.business_id`; `sla_samples.correlation_id` and
  `sla_open_items.correlation_id` hold that business id). A run touches, once for all SLAs,
  the business of every transaction that received events or milestones since the watermark
  (its milestones, channel or first event may have changed, and with them its business's),
  plus every business id journaled in `identity_changes` since then (both sides of a merge or
  split), plus per deadline SLA the businesses whose promise arrived since. It clears the touched ids' samples and open items and recomputes them
  for the ids that still name a business: milestones are the earliest over all members, the
  channel is the business channel (`controltower.identity.BUSINESS_CHANNEL`; a business
  without one measures nothing: it is an orphan, counted elsewhere), the due time is the
  earliest promise of any member (`sla_deadlines` stays per correlation ID) else `from` + the
  channel's target, counted in business days when the SLA's calendar applies to a whole-day
  target (`ct_business_due`, migration 0009, the twin of `controltower.calendars.due`; the
  calendar is picked by the `from` events' `location`, the channel or a default, and named in
  `sla_open_items.calendar`), and any member's closing milestone closes it. So a late link that merges
  two transactions in flight is re-attributed incrementally: the absorbed id's sample or open
  item vanishes and the survivor's is recomputed, in O(members of the touched businesses).
  The minutes whose samples changed are re-aggregated into `sla_rollup_minute` (log-bucket
  histograms), their hours into `sla_rollup_hour`. Recomputing per business makes the result
  idempotent: late, duplicate and out-of-order events and links give the same rollups as
  in-order delivery. The set-based SQL implements the rules of `controltower.slajudge` on a
  business's merged facts (`Facts.merged`); a property test holds it to the judge.
- event counts: minutes that received events are recounted from `events` per day partition.
  An event without a channel is counted under its business transaction's channel as known
  when its minute is counted, else under `unknown` (`UNKNOWN_CHANNEL`: the rollups' channel is
  NOT NULL). The minutes of such events are recounted when their business is journaled in
  `identity_changes`, so a late link moves them from `unknown` to the channel. A business
  channel that changes without a link (a channel-less trace whose later events name one) is
  seen by the SLAs at once, but by these counts only at the minute's next recount or a
  `rebuild`: finding those events on every tick would read every active business's events.
- freshness and channel silence read only events that name their channel (a carrier scan
  without one says nothing about a channel's feed being alive).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower import histogram, identity, slajudge
from metrics.definitions import SLA, Definitions

BUCKET_RATIO = histogram.RATIO
LAG = timedelta(minutes=2)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WATERMARK = "rollups"
SILENCE_KEY = "*"
UNKNOWN_CHANNEL = "unknown"  # event counts of channel-less events whose business has no channel
bucket_of, bucket_value, percentile = histogram.bucket_of, histogram.bucket_value, histogram.percentile


# the judge's rules for a promise (controltower.slajudge): its grammar, then its sane range
_DEADLINES = sa.text("""
INSERT INTO sla_deadlines (sla, correlation_id, due_at)
SELECT :sla, correlation_id, min(due_at) FROM (
    SELECT correlation_id, ct_deadline(attributes ->> :attr) AS due_at
    FROM events
    WHERE received_at > :since AND flow = :flow AND stage = :stage AND attributes ? :attr
      AND (attributes ->> :attr) ~ :pattern
) promises
WHERE due_at >= :earliest AND due_at < :latest
GROUP BY correlation_id
ON CONFLICT (sla, correlation_id) DO UPDATE SET due_at = LEAST(sla_deadlines.due_at, excluded.due_at)
""")

# Once per run, for every latency SLA: the businesses of the transactions that received events
# (their milestones, channel or first event may have changed, and with them their business's
# milestones and channel) or milestones since, and every business id a link or split re-keyed
# since (transactions_updated_idx, transaction_milestones_recorded_idx,
# identity_changes_changed_idx; then the transactions primary key). The ids come back to the
# job, which passes them on as an array: on Citus a temp table cannot join a distributed table.
_TOUCH = sa.text("""
SELECT business_id FROM transactions WHERE updated_at > :since
UNION
SELECT t.business_id FROM transaction_milestones m JOIN transactions t ON t.correlation_id = m.correlation_id
WHERE m.recorded_at > :since
UNION
SELECT business_id FROM identity_changes WHERE changed_at > :since
""")
# a deadline can arrive on an event after its milestone was recorded (a re-sent order)
_TOUCH_DEADLINES = sa.text("""
SELECT DISTINCT t.business_id FROM events e JOIN transactions t ON t.correlation_id = e.correlation_id
WHERE e.received_at > :since AND e.flow = :flow AND e.stage = :stage AND e.attributes ? :attr
""")

# the touched ids' samples and open items go (by primary key; on Citus each routed to its shard);
# the minutes of the samples are re-aggregated after
_CLEAR = (
    sa.text("""
WITH gone AS (
    DELETE FROM sla_samples WHERE sla = :sla AND correlation_id = ANY(CAST(:ids AS text[]))
    RETURNING channel, completed_at
)
SELECT DISTINCT channel, date_trunc('minute', completed_at) AS minute, date_trunc('hour', completed_at) AS hour FROM gone
"""),
    sa.text("""
DELETE FROM sla_open_items WHERE sla = :sla AND correlation_id = ANY(CAST(:ids AS text[]))
"""),
)

# One row per touched id that still names a business: its members through
# transactions_business_idx, their milestones, promises and `from` events through the primary
# keys. The touched ids go in as an array (an index scan per id, never a scan of transactions).
# Each per-business fact is one join of a member with its own rows on the correlation id, so
# on Citus it runs on the shards (co-located) and only the per-business aggregates meet on the
# coordinator; the samples and open items are written each to the shard of its business id.
# Returns the (channel, minute, hour) of every sample written.
_PAIRS = """
WITH business AS (
    SELECT t.business_id AS bid, """ + identity.BUSINESS_CHANNEL + """ AS channel
    FROM transactions t WHERE t.business_id = ANY(CAST(:ids AS text[])) GROUP BY t.business_id
), reached AS (
    SELECT t.business_id AS bid,
           min(m.reached_at) FILTER (WHERE m.milestone = :a) AS started_at,
           min(m.reached_at) FILTER (WHERE m.milestone = :b) AS completed_at,
           bool_or(m.milestone = ANY(:closed_by)) AS closed
    FROM transactions t JOIN transaction_milestones m ON m.correlation_id = t.correlation_id
    WHERE t.business_id = ANY(CAST(:ids AS text[])) AND m.milestone = ANY(:watch)
    GROUP BY t.business_id
), promised AS (
    SELECT t.business_id AS bid, min(d.due_at) AS due_at
    FROM transactions t JOIN sla_deadlines d ON d.correlation_id = t.correlation_id
    WHERE t.business_id = ANY(CAST(:ids AS text[])) AND CAST(:attr AS text) IS NOT NULL
      AND d.sla = :sla AND d.due_at >= :earliest AND d.due_at < :latest
    GROUP BY t.business_id
), located AS (
    SELECT t.business_id AS bid, min((e.attributes ->> 'location') COLLATE "C") AS location
    FROM transactions t JOIN events e ON e.correlation_id = t.correlation_id
    WHERE t.business_id = ANY(CAST(:ids AS text[])) AND cardinality(CAST(:locations AS text[])) > 0
      AND e.flow = :flow AND e.stage = :stage
      AND jsonb_typeof(e.attributes -> 'location') = 'string' AND (e.attributes ->> 'location') = ANY(:locations)
    GROUP BY t.business_id
), chosen AS (
    SELECT b.bid AS cid, b.channel, r.started_at, r.completed_at, r.closed, p.due_at AS promised_at,
           COALESCE((CAST(:targets AS jsonb) ->> b.channel)::bigint, CAST(:target AS bigint)) AS target_ms,
           CAST(:calendars AS jsonb) -> COALESCE(
               CAST(:cal_locations AS jsonb) ->> l.location, CAST(:cal_channels AS jsonb) ->> b.channel,
               CAST(:cal_default AS text)
           ) AS cal
    FROM business b JOIN reached r ON r.bid = b.bid LEFT JOIN promised p ON p.bid = b.bid
    LEFT JOIN located l ON l.bid = b.bid
    WHERE r.started_at IS NOT NULL AND b.channel IS NOT NULL AND b.channel <> ALL(:excluded)
      AND (cardinality(CAST(:only AS text[])) = 0 OR b.channel = ANY(:only))
), pairs AS (
    SELECT c.cid, c.channel, c.started_at, c.completed_at, c.closed,
           CASE WHEN c.promised_at IS NULL AND c.business THEN c.cal ->> 'name' END AS calendar,
           COALESCE(c.promised_at, CASE WHEN c.business THEN ct_business_due(
               c.started_at, (c.target_ms / 86400000)::int, c.cal ->> 'tz',
               ARRAY(SELECT jsonb_array_elements_text(c.cal -> 'workdays'))::int[],
               ARRAY(SELECT jsonb_array_elements_text(c.cal -> 'holidays'))::date[],
               (c.cal ->> 'cutoff')::time, (c.cal ->> 'pickup')::time
           ) ELSE c.started_at + make_interval(secs => c.target_ms / 1000.0) END) AS due_at
    FROM (SELECT *, cal IS NOT NULL AND target_ms % 86400000 = 0 AS business FROM chosen) c
), samples AS (
    INSERT INTO sla_samples (sla, correlation_id, channel, started_at, completed_at, latency_ms, due_at, met)
    SELECT :sla, cid, channel, started_at, completed_at,
           GREATEST(0, EXTRACT(EPOCH FROM completed_at - started_at) * 1000), due_at, completed_at <= due_at
    FROM pairs WHERE completed_at IS NOT NULL AND due_at IS NOT NULL
    RETURNING channel, completed_at
), items AS (
    INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at, calendar)
    SELECT :sla, cid, channel, started_at, due_at, calendar
    FROM pairs WHERE completed_at IS NULL AND due_at IS NOT NULL AND NOT closed
)
SELECT DISTINCT channel, date_trunc('minute', completed_at) AS minute, date_trunc('hour', completed_at) AS hour
FROM samples
"""  # noqa: S608 (a constant fragment, no input)

# The (channel, minute) pairs whose samples changed go in as two arrays (:channels, :minutes),
# their (channel, hour) pairs as two more (:hour_channels, :hours), and the range they span as
# [:lo, :hi) and [:hour_lo, :hour_hi): values, where a temp table would stop Citus.
_ROLLUP_MINUTES = (
    sa.text("""
DELETE FROM sla_rollup_minute r USING unnest(CAST(:channels AS text[]), CAST(:minutes AS timestamptz[])) AS m(channel, minute)
WHERE r.sla = :sla AND r.channel = m.channel AND r.minute = m.minute
"""),
    # one range scan of the SLA's samples between the first and last touched minute, kept to
    # the touched (channel, minute) pairs by a hash semi-join
    sa.text("""
INSERT INTO sla_rollup_minute (sla, channel, minute, count, met, hist)
SELECT :sla, channel, minute, sum(n), sum(met), jsonb_object_agg(bucket, n)
FROM (
    SELECT s.channel, date_trunc('minute', s.completed_at) AS minute,
           floor(ln(GREATEST(s.latency_ms, 1)) / ln(:ratio))::int AS bucket,
           count(*) AS n, count(*) FILTER (WHERE s.met) AS met
    FROM sla_samples s
    WHERE s.sla = :sla AND s.completed_at >= :lo AND s.completed_at < :hi
      AND (s.channel, date_trunc('minute', s.completed_at)) IN (
          SELECT * FROM unnest(CAST(:channels AS text[]), CAST(:minutes AS timestamptz[])))
    GROUP BY 1, 2, 3
) b
GROUP BY channel, minute
"""),
)

_ROLLUP_HOURS = (
    sa.text("""
DELETE FROM sla_rollup_hour r USING unnest(CAST(:hour_channels AS text[]), CAST(:hours AS timestamptz[])) AS h(channel, hour)
WHERE r.sla = :sla AND r.channel = h.channel AND r.hour = h.hour
"""),
    sa.text("""
INSERT INTO sla_rollup_hour (sla, channel, hour, count, met, hist)
SELECT :sla, c.channel, c.hour, c.count, c.met, x.hist
FROM (
    SELECT r.channel, date_trunc('hour', r.minute) AS hour, sum(r.count) AS count, sum(r.met) AS met
    FROM sla_rollup_minute r
    WHERE r.sla = :sla AND r.minute >= :hour_lo AND r.minute < :hour_hi
      AND (r.channel, date_trunc('hour', r.minute)) IN (
          SELECT * FROM unnest(CAST(:hour_channels AS text[]), CAST(:hours AS timestamptz[])))
    GROUP BY 1, 2
) c
JOIN (
    SELECT channel, hour, jsonb_object_agg(k, n) AS hist FROM (
        SELECT r.channel, date_trunc('hour', r.minute) AS hour, e.key AS k, sum(e.value::bigint) AS n
        FROM sla_rollup_minute r, jsonb_each_text(r.hist) e
        WHERE r.sla = :sla AND r.minute >= :hour_lo AND r.minute < :hour_hi
          AND (r.channel, date_trunc('hour', r.minute)) IN (
              SELECT * FROM unnest(CAST(:hour_channels AS text[]), CAST(:hours AS timestamptz[])))
        GROUP BY 1, 2, 3
    ) k GROUP BY 1, 2
) x ON x.channel = c.channel AND x.hour = c.hour
"""),
)

# minutes that received events, and the minutes of channel-less events of every business a
# link re-keyed since (their channel may have changed); events_correlation_idx by correlation id
_EVENT_MINUTES = sa.text("""
SELECT DISTINCT date_trunc('minute', occurred_at) AS minute FROM events WHERE received_at > :since
UNION
SELECT DISTINCT date_trunc('minute', e.occurred_at)
FROM (SELECT DISTINCT business_id FROM identity_changes WHERE changed_at > :since) c
JOIN transactions t ON t.business_id = c.business_id
JOIN events e ON e.correlation_id = t.correlation_id AND e.channel IS NULL
    AND e.occurred_at >= t.first_event_at AND e.occurred_at <= t.last_event_at
""")

# The counts of the given minutes, a channel-less event's counted under its business (its
# transaction's business id, looked up only for those events, on the event's own shard), then
# that business's channel (one grouped read of the few businesses named; `unknown` without one).
_RECOUNT = (
    sa.text("""
DELETE FROM event_rollup_minute WHERE minute = ANY(CAST(:minutes AS timestamptz[]))
"""),
    sa.text("""
WITH counted AS MATERIALIZED (
    SELECT date_trunc('minute', e.occurred_at) AS minute, e.channel,
           CASE WHEN e.channel IS NULL
                THEN (SELECT b.business_id FROM transactions b WHERE b.correlation_id = e.correlation_id) END AS bid,
           e.flow, e.stage, e.status, count(*) AS n
    FROM events e
    JOIN unnest(CAST(:minutes AS timestamptz[])) AS m(minute) ON m.minute = date_trunc('minute', e.occurred_at)
    WHERE e.occurred_at >= :lo AND e.occurred_at < :hi
    GROUP BY 1, 2, 3, 4, 5, 6
), channels AS (
    SELECT t.business_id AS bid, """ + identity.BUSINESS_CHANNEL + """ AS channel FROM transactions t
    WHERE t.business_id = ANY(ARRAY(SELECT DISTINCT bid FROM counted WHERE bid IS NOT NULL))
    GROUP BY t.business_id
)
INSERT INTO event_rollup_minute (minute, channel, flow, stage, status, count)
SELECT c.minute, COALESCE(c.channel, b.channel, '""" + UNKNOWN_CHANNEL + """'), c.flow, c.stage, c.status, sum(c.n)
FROM counted c LEFT JOIN channels b ON b.bid = c.bid
GROUP BY 1, 2, 3, 4, 5
"""),  # noqa: S608 (constant fragments, no input)
    sa.text("""
DELETE FROM event_rollup_hour
WHERE hour = ANY(SELECT DISTINCT date_trunc('hour', m) FROM unnest(CAST(:minutes AS timestamptz[])) AS m)
"""),
    sa.text("""
INSERT INTO event_rollup_hour (hour, channel, flow, stage, status, count)
SELECT date_trunc('hour', minute), channel, flow, stage, status, sum(count)
FROM event_rollup_minute
WHERE minute >= date_trunc('hour', CAST(:lo AS timestamptz)) AND minute < date_trunc('hour', CAST(:hi AS timestamptz)) + interval '1 hour'
  AND date_trunc('hour', minute) = ANY(SELECT DISTINCT date_trunc('hour', m) FROM unnest(CAST(:minutes AS timestamptz[])) AS m)
GROUP BY 1, 2, 3, 4, 5
"""),
)

_FRESHNESS = sa.text("""
INSERT INTO freshness_state (sla, channel, key, last_at)
SELECT :sla, channel, COALESCE(attributes ->> CAST(:key AS text), '*'), max(occurred_at)
FROM events
WHERE received_at > :since AND flow = :flow AND stage = :stage AND status = 'ok' AND channel IS NOT NULL
GROUP BY 2, 3
ON CONFLICT (sla, channel, key) DO UPDATE SET last_at = GREATEST(freshness_state.last_at, excluded.last_at)
""")

_SILENCE = sa.text("""
INSERT INTO freshness_state (sla, channel, key, last_at)
SELECT :sla, channel, '*', max(occurred_at) FROM events WHERE received_at > :since AND channel IS NOT NULL
GROUP BY channel
ON CONFLICT (sla, channel, key) DO UPDATE SET last_at = GREATEST(freshness_state.last_at, excluded.last_at)
""")


def _run(conn: Connection, statements: tuple[sa.TextClause, ...], params: dict[str, object]) -> None:
    for statement in statements:
        conn.execute(statement, params)


def _watermark(conn: Connection) -> datetime:
    value = conn.execute(sa.text("SELECT value FROM metrics_watermarks WHERE name = :n"), {"n": WATERMARK}).scalar()
    return value or EPOCH


def refresh_rollups(engine: Engine, definitions: Definitions, now: datetime) -> dict[str, int]:
    """Bring samples, open items and rollups up to `now`; returns counts of what changed."""
    stats: dict[str, int] = defaultdict(int)
    with engine.begin() as conn:
        # one refresher at a time (a second scheduler or a CLI `sla --refresh` waits)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('controltower.metrics.rollups'))"))
        since = _watermark(conn) - LAG
        touched = set(conn.execute(_TOUCH, {"since": since}).scalars())
        for sla in definitions.latency:
            stats["transactions"] += _refresh_latency(conn, sla, since, touched)
        stats["event_minutes"] = _refresh_event_counts(conn, since)
        for sla in definitions.slas:
            if sla.kind == "freshness" and sla.milestone:
                flow, stage = sla.milestone.split(".", 1)
                conn.execute(_FRESHNESS, {"sla": sla.name, "key": sla.key, "since": since, "flow": flow, "stage": stage})
            elif sla.kind == "absence":
                conn.execute(_SILENCE, {"sla": sla.name, "since": since})
        conn.execute(
            sa.text(
                "INSERT INTO metrics_watermarks (name, value) VALUES (:n, :v)"
                " ON CONFLICT (name) DO UPDATE SET value = GREATEST(metrics_watermarks.value, excluded.value)"
            ),
            {"n": WATERMARK, "v": now},
        )
    return dict(stats)


def _refresh_latency(conn: Connection, sla: SLA, since: datetime, touched: set[str]) -> int:
    assert sla.from_milestone and sla.to_milestone
    flow, stage = sla.from_milestone.split(".", 1)
    params = {
        "sla": sla.name, "a": sla.from_milestone, "b": sla.to_milestone, "since": since,
        "flow": flow, "stage": stage, "attr": sla.deadline_attribute,
        "targets": orjson.dumps(sla.targets_ms).decode(), "target": sla.target_ms, "ratio": BUCKET_RATIO,
        "watch": [sla.from_milestone, sla.to_milestone, *sla.closed_by], "closed_by": list(sla.closed_by),
        "excluded": list(sla.exclude_channels), "only": list(sla.channels),
        "pattern": slajudge.DEADLINE_PATTERN, "earliest": slajudge.EARLIEST, "latest": slajudge.LATEST,
        **_calendar_params(sla),
    }
    ids = touched
    if sla.deadline_attribute:
        conn.execute(_DEADLINES, params)
        ids = touched | set(conn.execute(_TOUCH_DEADLINES, params).scalars())
    if not ids:
        return 0
    params["ids"] = sorted(ids)
    changed = {(r.channel, r.minute, r.hour) for r in conn.execute(_CLEAR[0], params)}
    conn.execute(_CLEAR[1], params)
    changed |= {(r.channel, r.minute, r.hour) for r in conn.execute(sa.text(_PAIRS), params)}
    if changed:
        _rollup(conn, params, changed)
    return len(ids)


def _rollup(conn: Connection, params: dict[str, object], changed: set[tuple[str, datetime, datetime]]) -> None:
    """Re-aggregate the (channel, minute)s whose samples changed, then their (channel, hour)s."""
    minutes = sorted({(channel, minute) for channel, minute, _ in changed})
    hours = sorted({(channel, hour) for channel, _, hour in changed})
    first, last = min(m for _, m in minutes), max(m for _, m in minutes)
    params = params | {
        "channels": [c for c, _ in minutes], "minutes": [m for _, m in minutes],
        "lo": first, "hi": last + timedelta(minutes=1),
        "hour_channels": [c for c, _ in hours], "hours": [h for _, h in hours],
        "hour_lo": min(h for _, h in hours), "hour_hi": max(h for _, h in hours) + timedelta(hours=1),
    }
    _run(conn, _ROLLUP_MINUTES, params)
    _run(conn, _ROLLUP_HOURS, params)


def _calendar_params(sla: SLA) -> dict[str, object]:
    """The SLA's calendar choice as `_PAIRS` reads it (`ct_business_due`'s arguments per calendar)."""
    choice = sla.calendar
    if choice is None:
        return {"locations": [], "calendars": "{}", "cal_locations": "{}", "cal_channels": "{}", "cal_default": None}
    cals = {
        name: {"name": name, "tz": c.timezone, "workdays": list(c.business_days), "holidays": [d.isoformat() for d in c.holidays],
               "cutoff": c.cutoff.isoformat() if c.cutoff else None, "pickup": c.pickup.isoformat() if c.pickup else None}
        for name, c in choice.calendars.items()
    }
    return {
        "locations": sorted(choice.locations), "calendars": orjson.dumps(cals).decode(),
        "cal_locations": orjson.dumps(dict(choice.locations)).decode(),
        "cal_channels": orjson.dumps(dict(choice.channels)).decode(), "cal_default": choice.default,
    }


def _refresh_event_counts(conn: Connection, since: datetime) -> int:
    minutes = [row.minute for row in conn.execute(_EVENT_MINUTES, {"since": since})]
    by_day: dict[object, list[datetime]] = defaultdict(list)
    for minute in minutes:
        by_day[minute.astimezone(UTC).date()].append(minute)
    for day_minutes in by_day.values():
        lo, hi = min(day_minutes), max(day_minutes) + timedelta(minutes=1)
        _run(conn, _RECOUNT, {"minutes": day_minutes, "lo": lo, "hi": hi})
    return len(minutes)


def rebuild(engine: Engine, definitions: Definitions, now: datetime) -> dict[str, int]:
    """Forget all derived rows and recompute them from events and milestones."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "TRUNCATE sla_samples, sla_open_items, sla_deadlines, sla_rollup_minute, sla_rollup_hour,"
                " event_rollup_minute, event_rollup_hour, freshness_state, metrics_watermarks"
            )
        )
    return refresh_rollups(engine, definitions, now)
