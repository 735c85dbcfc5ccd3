"""The write path's SQL: staging tables, the idempotent insert, conflicts and the merges.

A batch is COPYed into the staging table `ct_batch` under its own batch id, with its arrival
order (`ord`) and `fresh` set on the first arrival of each id. `CLAIM_IDS` claims those ids in
`event_ids` (the store clears `fresh` on the ones it lost, `UNCLAIMED`), so an id is stored
once whatever its time; `INSERT_EVENTS` writes the fresh rows to `events`; `RECORD_CONFLICTS`
compares the rest with the stored content; the upserts then merge only the fresh rows into
`transactions`, `transaction_milestones` and `transaction_keys`, each commutatively (earliest
milestone wins, "last" fields follow the latest `(occurred_at, event_id)`). Each statement is
one INSERT … SELECT between tables co-located by the correlation id (or the key value), no
modifying-CTE chain, so the same text runs on one PostgreSQL and, shard by shard, on Citus.
Every identifier here is a module constant, never input.
"""

from __future__ import annotations

from controltower.distribute import KEYS_COLUMNS, MEMBERS, STAGING_COLUMNS
from controltower.event import CONTENT_FIELDS, IDENTITY

# The events table's columns in COPY order: its key (time first), reception, then the content.
COPY_COLUMNS = ("occurred_at", *IDENTITY, "received_at", *CONTENT_FIELDS[1:], "source")
COLS = ", ".join(COPY_COLUMNS)
# Binary COPY types of COPY_COLUMNS, in order.
COPY_TYPES = (
    "timestamptz", "text", "text", "timestamptz", "text", "text", "text", "text", "text", "text",
    "float8", "text", "text", "jsonb", "jsonb", "text", "text", "text", "text",
)
# What "the same content" means (ct_event_hash in migration 0005 takes these, in this order):
# everything but the identity and where/when it was received.
HASHED = CONTENT_FIELDS
_HASH_ARGS = ", ".join(HASHED)

# The staging tables: `batch` tells one batch's rows from another's, `ord` is the arrival order
# in the batch, `fresh` marks the rows stored (the store COPYs each id's first arrival as fresh
# and clears the flag of those whose claim failed). On plain PostgreSQL they are per-connection
# temporary tables emptied at commit; on Citus `controltower migrate --distributed` creates them
# as distributed tables co-located with what they feed (controltower.distribute.STAGING), so
# every statement below runs on the shards; the store does not create the temporary ones there
# (they would shadow the distributed ones) and deletes its batch's rows before commit.
STAGING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS ct_batch ({STAGING_COLUMNS}) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ct_keys ({KEYS_COLUMNS}) ON COMMIT DELETE ROWS;
"""
COPY_BATCH = f"COPY ct_batch (batch, ord, fresh, {COLS}) FROM STDIN (FORMAT BINARY)"  # noqa: S608
BATCH_TYPES = ("int8", "int4", "bool", *COPY_TYPES)

# The batch's first arrivals claim their ids in `event_ids` (the store staged only them as
# fresh); answers the ids claimed. In key order, so concurrent batches lock in one order.
CLAIM_IDS = f"""
INSERT INTO event_ids (correlation_id, event_id, occurred_at, content_hash)
SELECT correlation_id, event_id, occurred_at, ct_event_hash({_HASH_ARGS})
FROM ct_batch
WHERE batch = %(batch)s AND fresh
ORDER BY correlation_id, event_id
ON CONFLICT DO NOTHING
RETURNING correlation_id, event_id
"""  # noqa: S608
# The first arrivals whose claim failed (`%(ords)s`: their arrival order) are not stored.
UNCLAIMED = "UPDATE ct_batch SET fresh = false WHERE batch = %(batch)s AND ord = ANY(%(ords)s::integer[])"
# Only claimed ids reach `events` (whose own key keeps occurred_at for partition pruning).
INSERT_EVENTS = f"""
INSERT INTO events ({COLS})
SELECT {COLS} FROM ct_batch WHERE batch = %(batch)s AND fresh
ON CONFLICT DO NOTHING
"""  # noqa: S608
# Citus only (a temporary table empties itself at commit).
CLEAR_BATCH = "DELETE FROM ct_batch WHERE batch = %(batch)s"
CLEAR_KEYS = "DELETE FROM ct_keys WHERE batch = %(batch)s"

# Fields compared with the stored event when an id comes back with another content hash.
_COMPARED = CONTENT_FIELDS[1:]  # occurred_at is compared with the claimed time in event_ids
_DIFF_FIELDS = sorted(
    [
        ("occurred_at", "to_jsonb(d.occurred_at)", "d.occurred_at IS DISTINCT FROM d.stored_occurred_at"),
        # the payload's incoming value is not copied here: it may be large; the event shows it
        ("payload", "to_jsonb('differs'::text)", "d.payload IS DISTINCT FROM s.payload"),
    ]
    + [(f, f"to_jsonb(d.{f})", f"d.{f} IS DISTINCT FROM s.{f}") for f in _COMPARED if f != "payload"]
)
# The names of the fields that differ (in name order) and their incoming values, as plain
# expressions (Citus refuses a VALUES list of non-immutable functions in a pushed-down query).
_CHANGED = "array_remove(ARRAY[{}]::text[], NULL)".format(
    ", ".join(f"CASE WHEN {differs} THEN '{name}' END" for name, _, differs in _DIFF_FIELDS)
)
_INCOMING = "jsonb_build_object({}) - array_remove(ARRAY[{}]::text[], NULL)".format(
    ", ".join(f"'{name}', {value}" for name, value, _ in _DIFF_FIELDS),
    ", ".join(f"CASE WHEN NOT ({differs}) THEN '{name}' END" for name, _, differs in _DIFF_FIELDS),
)

# The staged rows that were not stored (not `fresh`), each with the stored id's hash and time
# (one index probe per row: LIMIT keeps the planner from a hash join over all of event_ids).
_NOT_STORED = f"""
    SELECT b.*, i.content_hash AS stored_hash, i.occurred_at AS stored_occurred_at,
           ct_event_hash({", ".join("b." + f for f in HASHED)}) AS incoming_hash
    FROM ct_batch b
    CROSS JOIN LATERAL (
        SELECT content_hash, occurred_at FROM event_ids i
        WHERE i.correlation_id = b.correlation_id AND i.event_id = b.event_id
        LIMIT 1
    ) i
    WHERE b.batch = %(batch)s AND NOT b.fresh
"""  # noqa: S608

# How many staged rows not stored carry another content than the stored event (conflicts).
COUNT_CONFLICTS = f"SELECT count(*)::integer FROM ({_NOT_STORED}) c WHERE incoming_hash <> stored_hash"  # noqa: S608

# Those conflicts into `event_conflicts`: one row per distinct incoming content, counted, with
# the names of the fields that differ. One INSERT … SELECT without CTEs, so Citus runs it on
# the shards (the probes follow the correlation id).
RECORD_CONFLICTS = f"""
INSERT INTO event_conflicts AS x (
    correlation_id, event_id, incoming_hash, stored_hash, stored_occurred_at,
    incoming_occurred_at, changed, incoming, source, first_seen_at, last_seen_at, count)
SELECT d.correlation_id, d.event_id, d.incoming_hash, d.stored_hash, d.stored_occurred_at,
       d.occurred_at, {_CHANGED}, {_INCOMING}, d.source, %(now)s, %(now)s, d.n
FROM (
    SELECT DISTINCT ON (correlation_id, event_id, incoming_hash) c.*,
           count(*) OVER (PARTITION BY correlation_id, event_id, incoming_hash) AS n
    FROM ({_NOT_STORED}) c
    WHERE incoming_hash <> stored_hash
    ORDER BY correlation_id, event_id, incoming_hash, ord
) d
-- one index probe per conflict into the stored event's partition
LEFT JOIN LATERAL (
    SELECT * FROM events e
    WHERE e.correlation_id = d.correlation_id AND e.event_id = d.event_id
      AND e.occurred_at = d.stored_occurred_at
    LIMIT 1
) s ON true
ORDER BY d.correlation_id, d.event_id, d.incoming_hash
ON CONFLICT (correlation_id, event_id, incoming_hash) DO UPDATE SET
    first_seen_at = LEAST(x.first_seen_at, excluded.first_seen_at),
    last_seen_at = GREATEST(x.last_seen_at, excluded.last_seen_at),
    source = excluded.source,
    count = x.count + excluded.count
"""  # noqa: S608

# "first" fields follow the earliest (occurred_at, event_id), "last" fields the latest; counts
# add up only over rows that were new; the latest error follows (time, code, message). Every
# merge below is commutative and associative, so batch boundaries and arrival order don't matter.
UPSERT_TRANSACTIONS = """
INSERT INTO transactions AS t (
    correlation_id, channel, flow, order_id, first_event_at, first_event_id, last_event_at,
    last_event_id, status, last_milestone, last_system, event_count, error_count, retry_count,
    dead_letter_count, last_error_at, last_error_code, last_error_message, updated_at, business_id,
    channel_at, channel_event_id)
SELECT correlation_id,
       (array_agg(channel ORDER BY occurred_at, event_id) FILTER (WHERE channel IS NOT NULL))[1],
       (array_agg(flow ORDER BY occurred_at, event_id))[1],
       min(order_id),
       min(occurred_at),
       (array_agg(event_id ORDER BY occurred_at, event_id))[1],
       max(occurred_at),
       (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(status ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(flow || '.' || stage ORDER BY occurred_at DESC, event_id DESC))[1],
       (array_agg(system ORDER BY occurred_at DESC, event_id DESC))[1],
       count(*),
       count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'retry'),
       count(*) FILTER (WHERE status = 'dead_letter'),
       max(occurred_at) FILTER (WHERE status IN ('error', 'dead_letter')),
       (array_agg(error_code ORDER BY occurred_at DESC, coalesce(error_code, '') DESC,
                  coalesce(error_message, '') DESC)
            FILTER (WHERE status IN ('error', 'dead_letter')))[1],
       (array_agg(error_message ORDER BY occurred_at DESC, coalesce(error_code, '') DESC,
                  coalesce(error_message, '') DESC)
            FILTER (WHERE status IN ('error', 'dead_letter')))[1],
       %(now)s,
       coalesce(a.bid, correlation_id),  -- a new correlation id joins the business linking chose
       min(occurred_at) FILTER (WHERE channel IS NOT NULL),
       (array_agg(event_id ORDER BY occurred_at, event_id) FILTER (WHERE channel IS NOT NULL))[1]
FROM ct_batch
LEFT JOIN unnest(%(assign_cids)s::text[], %(assign_bids)s::text[]) AS a(cid, bid) ON a.cid = ct_batch.correlation_id
WHERE batch = %(batch)s AND fresh
GROUP BY correlation_id, a.bid
ORDER BY correlation_id
ON CONFLICT (correlation_id) DO UPDATE SET
    -- the channel of the earliest event that has one (events without one never displace it)
    channel = CASE WHEN excluded.channel IS NOT NULL AND (t.channel IS NULL
                        OR (excluded.channel_at, excluded.channel_event_id) < (t.channel_at, t.channel_event_id))
                   THEN excluded.channel ELSE t.channel END,
    channel_event_id = CASE WHEN excluded.channel IS NOT NULL AND (t.channel IS NULL
                        OR (excluded.channel_at, excluded.channel_event_id) < (t.channel_at, t.channel_event_id))
                   THEN excluded.channel_event_id ELSE t.channel_event_id END,
    channel_at = CASE WHEN excluded.channel IS NOT NULL AND (t.channel IS NULL
                        OR (excluded.channel_at, excluded.channel_event_id) < (t.channel_at, t.channel_event_id))
                   THEN excluded.channel_at ELSE t.channel_at END,
    flow = CASE WHEN (excluded.first_event_at, excluded.first_event_id)
                     < (t.first_event_at, t.first_event_id)
                THEN excluded.flow ELSE t.flow END,
    first_event_id = CASE WHEN (excluded.first_event_at, excluded.first_event_id)
                               < (t.first_event_at, t.first_event_id)
                          THEN excluded.first_event_id ELSE t.first_event_id END,
    first_event_at = LEAST(t.first_event_at, excluded.first_event_at),
    order_id = LEAST(t.order_id, excluded.order_id),
    status = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                       > (t.last_event_at, t.last_event_id)
                  THEN excluded.status ELSE t.status END,
    last_milestone = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                               > (t.last_event_at, t.last_event_id)
                          THEN excluded.last_milestone ELSE t.last_milestone END,
    last_system = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                            > (t.last_event_at, t.last_event_id)
                       THEN excluded.last_system ELSE t.last_system END,
    last_event_id = CASE WHEN (excluded.last_event_at, excluded.last_event_id)
                              > (t.last_event_at, t.last_event_id)
                         THEN excluded.last_event_id ELSE t.last_event_id END,
    last_event_at = GREATEST(t.last_event_at, excluded.last_event_at),
    event_count = t.event_count + excluded.event_count,
    error_count = t.error_count + excluded.error_count,
    retry_count = t.retry_count + excluded.retry_count,
    dead_letter_count = t.dead_letter_count + excluded.dead_letter_count,
    last_error_code = CASE WHEN t.last_error_at IS NULL
                             OR (excluded.last_error_at, coalesce(excluded.last_error_code, ''),
                                 coalesce(excluded.last_error_message, ''))
                              > (t.last_error_at, coalesce(t.last_error_code, ''),
                                 coalesce(t.last_error_message, ''))
                           THEN excluded.last_error_code ELSE t.last_error_code END,
    last_error_message = CASE WHEN t.last_error_at IS NULL
                             OR (excluded.last_error_at, coalesce(excluded.last_error_code, ''),
                                 coalesce(excluded.last_error_message, ''))
                              > (t.last_error_at, coalesce(t.last_error_code, ''),
                                 coalesce(t.last_error_message, ''))
                           THEN excluded.last_error_message ELSE t.last_error_message END,
    last_error_at = GREATEST(t.last_error_at, excluded.last_error_at),
    updated_at = excluded.updated_at,
    -- linking assigned this (then new) id to another business while a concurrent batch, which
    -- linked nothing for it, stored its row alone: the assignment wins (linking still holds the
    -- lock of that lone business, so nothing else joined it)
    business_id = CASE WHEN excluded.business_id <> excluded.correlation_id
                       THEN excluded.business_id ELSE t.business_id END
"""
# On a cluster keeping `business_members` (controltower.distribute.MEMBERS), the member rows of
# the batch's transactions that are their own business (every new one linking did not assign
# elsewhere): the member row's shard is the transaction's (co-located, same id), so this runs on
# the shards; one already there is left alone. The few that linking assigned to another business
# get theirs from the store (MEMBERS_ASSIGNED, then distribute.add_members).
MEMBERS_OWN = f"""
INSERT INTO {MEMBERS} (business_id, correlation_id)
SELECT t.correlation_id, t.correlation_id FROM transactions t
WHERE t.correlation_id IN (SELECT correlation_id FROM ct_batch WHERE batch = %(batch)s AND fresh)
  AND t.business_id = t.correlation_id
ON CONFLICT DO NOTHING
"""  # noqa: S608
# the business each assigned one was really stored with (a concurrent batch may have stored it first)
MEMBERS_ASSIGNED = "SELECT business_id, correlation_id FROM transactions WHERE correlation_id = ANY(%(cids)s)"


# Milestones come from the events this batch really stored (`fresh`): per (correlation id,
# milestone) the earliest successful one, its channel breaking ties (NULL first), merged with
# LEAST-like semantics, so they follow the same idempotency as `events`: a duplicate changes
# nothing. Keys are computed in Python (collectors.rows) from the same events.
UPSERT_MILESTONES = """
INSERT INTO transaction_milestones AS m (correlation_id, milestone, reached_at, channel, recorded_at)
SELECT DISTINCT ON (correlation_id, flow || '.' || stage)
       correlation_id, flow || '.' || stage, occurred_at, channel, %(now)s
FROM ct_batch
WHERE batch = %(batch)s AND fresh AND status = 'ok'
ORDER BY correlation_id, flow || '.' || stage, occurred_at, coalesce(channel, '') COLLATE "C"
ON CONFLICT (correlation_id, milestone) DO UPDATE SET
    reached_at = excluded.reached_at,
    channel = excluded.channel,
    recorded_at = excluded.recorded_at
WHERE (excluded.reached_at, coalesce(excluded.channel, '')) < (m.reached_at, coalesce(m.channel, ''))
"""

COPY_KEYS = "COPY ct_keys (batch, value, kind, correlation_id, first_seen_at) FROM STDIN (FORMAT BINARY)"
KEY_TYPES = ("int8", "text", "text", "text", "timestamptz")
UPSERT_KEYS = """
INSERT INTO transaction_keys AS k (value, kind, correlation_id, first_seen_at)
SELECT value, kind, correlation_id, first_seen_at FROM ct_keys
WHERE batch = %(batch)s
ORDER BY value, kind, correlation_id
ON CONFLICT (value, kind, correlation_id) DO UPDATE SET first_seen_at = excluded.first_seen_at
WHERE excluded.first_seen_at < k.first_seen_at
"""
# The same, answering every key row written and whether it was inserted (`xmax = 0`: not an
# update), when the batch holds identity rows: only new ones can change the identity graph
# (controltower.linking; the store keeps those whose kind links).
UPSERT_KEYS_RETURNING = UPSERT_KEYS + "RETURNING value, kind, correlation_id, xmax = 0 AS inserted\n"
