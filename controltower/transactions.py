"""Reading one business transaction: search by any of its keys, and its whole story.

Shared by the HTTP API (`/v1/transactions`), the CLI (`controltower search`) and the
dashboard. Read-only. Search resolves a key through `transaction_keys` first, then reads the
transaction's events bounded by its first/last event time so partition pruning applies.
SLA verdicts come from the `sla_definitions` the metrics room stores.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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
    "SELECT milestone, reached_at FROM transaction_milestones WHERE correlation_id = :cid "
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
    "deadline_attribute, objective FROM sla_definitions "
    "WHERE from_milestone IS NOT NULL AND to_milestone IS NOT NULL ORDER BY name"
)


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as every API response writes timestamps."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        item["first_event_at"] = iso(item["first_event_at"])
        item["last_event_at"] = iso(item["last_event_at"])
        out.append(item)
    return out


def verdicts(
    milestones: dict[str, datetime],
    channel: str,
    definitions: list[dict[str, Any]],
    *,
    attributes: dict[str, Any] | None = None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Per-SLA verdict of one transaction: met, breached, pending (A reached, B not yet, within
    target) or overdue (A reached, B missing past target). Pure."""
    out = []
    for d in definitions:
        start = milestones.get(d["from_milestone"])
        if start is None:
            continue
        end = milestones.get(d["to_milestone"])
        target = (d.get("targets_ms") or {}).get(channel, d.get("default_target_ms"))
        deadline = None
        if d.get("deadline_attribute") and attributes:
            raw = attributes.get(d["deadline_attribute"])
            if isinstance(raw, str):
                try:
                    deadline = datetime.fromisoformat(raw)
                    if deadline.tzinfo is None:
                        deadline = deadline.replace(tzinfo=UTC)
                except ValueError:
                    deadline = None
        elapsed = ((end or now) - start).total_seconds() * 1000
        if deadline is not None:
            late = (end or now) > deadline
        elif target is not None:
            late = elapsed > float(target)
        else:
            late = False
        if end is not None:
            state = "breached" if late else "met"
        else:
            state = "overdue" if late else "pending"
        verdict: dict[str, Any] = {
            "sla": d["name"],
            "from": d["from_milestone"],
            "to": d["to_milestone"],
            "state": state,
            "elapsed_ms": int(elapsed),
            "target_ms": int(target) if target is not None else None,
        }
        if deadline is not None:
            verdict["due_at"] = iso(deadline)
        elif target is not None:
            verdict["due_at"] = iso(start + timedelta(milliseconds=float(target)))
        out.append(verdict)
    return out


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
    milestones = {m: at for m, at in milestone_rows}
    keys: dict[str, list[str]] = defaultdict(list)
    for kind, value in conn.execute(_KEYS, {"cid": correlation_id}):
        keys[kind].append(value)
    events = []
    attributes: dict[str, Any] = {}
    for row in conn.execute(
        _EVENTS,
        {"cid": correlation_id, "first": tx["first_event_at"], "last": tx["last_event_at"], "limit": event_limit},
    ).mappings():
        item = {k: v for k, v in row.items() if v is not None}
        item["occurred_at"] = iso(row["occurred_at"])
        item["received_at"] = iso(row["received_at"])
        attributes.update(row["attributes"] or {})
        events.append(item)
    definitions = [dict(r._mapping) for r in conn.execute(_SLA_DEFS)]
    return {
        "correlation_id": tx["correlation_id"],
        "order_id": tx["order_id"],
        "channel": tx["channel"],
        "flow": tx["flow"],
        "status": tx["status"],
        "last_milestone": tx["last_milestone"],
        "last_system": tx["last_system"],
        "first_event_at": iso(tx["first_event_at"]),
        "last_event_at": iso(tx["last_event_at"]),
        "event_count": tx["event_count"],
        "error_count": tx["error_count"],
        "retry_count": tx["retry_count"],
        "dead_letter_count": tx["dead_letter_count"],
        "last_error": None
        if tx["last_error_at"] is None
        else {"at": iso(tx["last_error_at"]), "code": tx["last_error_code"], "message": tx["last_error_message"]},
        "keys": dict(keys),
        "milestones": {m: iso(at) for m, at in milestones.items()},
        "sla": verdicts(milestones, tx["channel"], definitions, attributes=attributes, now=now),
        "events": events,
    }
