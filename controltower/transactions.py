"""Reading one business transaction: search by any of its keys, and its whole story.

Shared by the HTTP API (`/v1/transactions`), the CLI (`controltower search`) and the
dashboard. Read-only. Search resolves a key through `transaction_keys` first, then reads the
transaction's events bounded by its first/last event time so partition pruning applies.
SLA verdicts come from `controltower.slajudge` fed with the full definitions the metrics room
publishes to `sla_definitions`, so they agree with the SLA table. A stored value the judge
cannot read (a promise in year 9999, a garbage date) is shown with a reason, never raised.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import slajudge
from controltower.vocab import rfc3339

MAX_PAGE = 200

_SEARCH = sa.text(
    """
    WITH hits AS (
        SELECT correlation_id, 'correlation_id' AS kind FROM transactions WHERE correlation_id = :q
        UNION ALL
        SELECT correlation_id, kind FROM transaction_keys WHERE value = :q
    ), matched AS (
        SELECT correlation_id, array_agg(DISTINCT kind ORDER BY kind) AS matched_by
        FROM hits GROUP BY correlation_id
    )
    SELECT t.correlation_id, t.channel, t.flow, t.order_id, t.status, t.last_milestone,
           t.first_event_at, t.last_event_at, t.event_count, t.error_count,
           t.last_error_code, t.last_error_message, m.matched_by
    FROM matched m JOIN transactions t USING (correlation_id)
    ORDER BY t.last_event_at DESC, t.correlation_id
    LIMIT :limit OFFSET :offset
    """
)

_TRANSACTION = sa.text("SELECT * FROM transactions WHERE correlation_id = :cid")
_MILESTONES = sa.text(
    "SELECT milestone, reached_at, channel FROM transaction_milestones WHERE correlation_id = :cid "
    "ORDER BY reached_at, milestone"
)
_KEYS = sa.text(
    "SELECT kind, value FROM transaction_keys WHERE correlation_id = :cid ORDER BY kind, first_seen_at, value"
)
# Bounded by the transaction's own time span: only the partitions it touches are read.
_EVENTS = sa.text(
    """
    SELECT event_id, occurred_at, received_at, order_id, channel, flow, stage, status, system,
           latency_ms, error_code, error_message, attributes, payload, trace_id, span_id,
           parent_span_id, source
    FROM events
    WHERE correlation_id = :cid AND occurred_at >= :first AND occurred_at <= :last
    ORDER BY occurred_at, event_id
    LIMIT :limit
    """
)
_SLA_DEFS = sa.text(
    "SELECT name, kind, from_milestone, to_milestone, default_target_ms, targets_ms, "
    "deadline_attribute, objective, description, definition FROM sla_definitions "
    "WHERE from_milestone IS NOT NULL AND to_milestone IS NOT NULL ORDER BY name"
)


def published(conn: Connection) -> list[slajudge.Definition]:
    """The latency SLA definitions the metrics room published, as the judge reads them."""
    return [slajudge.Definition.from_row(row) for row in conn.execute(_SLA_DEFS).mappings()]


def search(conn: Connection, q: str, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Transactions any of whose keys (or correlation id) equals `q`, newest first."""
    q = q.strip()
    if not q or "\x00" in q:  # stored text never holds U+0000 (PostgreSQL refuses it): no match
        return []
    rows = conn.execute(
        _SEARCH, {"q": q, "limit": max(1, min(limit, MAX_PAGE)), "offset": max(0, offset)}
    )
    out = []
    for row in rows:
        item = dict(row._mapping)
        item["first_event_at"] = rfc3339(item["first_event_at"])
        item["last_event_at"] = rfc3339(item["last_event_at"])
        out.append(item)
    return out


def verdicts(
    facts: slajudge.Facts, definitions: list[slajudge.Definition], *, now: datetime
) -> list[dict[str, Any]]:
    """Every SLA verdict that applies to one transaction, in the API shape. Pure."""
    return [v.as_dict() for v in slajudge.judge_all(definitions, facts, now=now)]


def get(
    conn: Connection, correlation_id: str, *, now: datetime | None = None, event_limit: int = 5000
) -> dict[str, Any] | None:
    """One transaction: its fields, keys, milestones, SLA verdicts and events in time order."""
    if "\x00" in correlation_id:
        return None
    tx = conn.execute(_TRANSACTION, {"cid": correlation_id}).mappings().first()
    if tx is None:
        return None
    now = now or datetime.now(UTC)
    milestone_rows = conn.execute(_MILESTONES, {"cid": correlation_id}).all()
    milestones = {m: at for m, at, _ in milestone_rows}
    keys: dict[str, list[str]] = defaultdict(list)
    for kind, value in conn.execute(_KEYS, {"cid": correlation_id}):
        keys[kind].append(value)
    events = []
    attributes: dict[str, list[Any]] = defaultdict(list)  # per milestone: its events' attributes
    for row in conn.execute(
        _EVENTS,
        {"cid": correlation_id, "first": tx["first_event_at"], "last": tx["last_event_at"], "limit": event_limit},
    ).mappings():
        item = {k: v for k, v in row.items() if v is not None}
        item["occurred_at"] = rfc3339(row["occurred_at"])
        item["received_at"] = rfc3339(row["received_at"])
        attributes[f"{row['flow']}.{row['stage']}"].append(row["attributes"] or {})
        events.append(item)
    facts = slajudge.Facts(
        milestones=milestones, channel=tx["channel"],
        channels={m: channel for m, _, channel in milestone_rows}, attributes=attributes,
    )
    return {
        "correlation_id": tx["correlation_id"],
        "order_id": tx["order_id"],
        "channel": tx["channel"],
        "flow": tx["flow"],
        "status": tx["status"],
        "last_milestone": tx["last_milestone"],
        "last_system": tx["last_system"],
        "first_event_at": rfc3339(tx["first_event_at"]),
        "last_event_at": rfc3339(tx["last_event_at"]),
        "event_count": tx["event_count"],
        "error_count": tx["error_count"],
        "retry_count": tx["retry_count"],
        "dead_letter_count": tx["dead_letter_count"],
        "last_error": None
        if tx["last_error_at"] is None
        else {"at": rfc3339(tx["last_error_at"]), "code": tx["last_error_code"], "message": tx["last_error_message"]},
        "keys": dict(keys),
        "milestones": {m: rfc3339(at) for m, at in milestones.items()},
        "sla": verdicts(facts, published(conn), now=now),
        "events": events,
    }
