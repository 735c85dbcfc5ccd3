"""What people do to replays (request, approve, cancel, list) and the guards every request passes.

The one implementation: the CLI (`controltower replay …`) and the dashboard's Replay page both
call it, so every request is checked the same way before a row lands in `replay_requests`:
- duplicate: the business transaction already reached the milestone the flow's replay produces
  (`replay.flows.<flow>.produces`) -> refused, unless `confirm_duplicate` (recorded on the row);
- once per message: a message with a pending replay is refused (cancel that one first); after a
  sent replay, another one is a duplicate (refused unless confirmed), checked again at send time;
- approval: a flow with `approval: true` (refund, settlement, credit by default) waits for
  `approve_replay` by a different person than the requester (names compared folded: `same_person`);
- pacing: a bulk request (an exception group, many correlation ids) gets one row per occurrence,
  `not_before` spaced by the flow's `rate_per_minute`; `cancel_replay` stops what is not sent.
A dry run returns the same plan (targets, headers, the masked body, verdicts) and writes nothing.
It sends nothing either way: the collectors' executor (`collectors.replay`) does, and re-checks
the duplicate guard at send time. The core never decrypts the raw store: a preview shows the
masked payload the events table holds.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower.errors import ControlTowerError
from controltower.replayconfig import ReplayConfig
from controltower.schema.replay import raw_payloads, replay_requests

REPLAY_OF_HEADER = "x-controltower-replay-of"  # RabbitMQ header; NATS: Controltower-Replay-Of
REPLAY_OF_NATS_HEADER = "Controltower-Replay-Of"
PENDING = ("requested", "approved")
STATUSES = ("requested", "approved", "sent", "failed", "refused", "cancelled")
FAILED_STATUSES = ("error", "dead_letter")
MAX_BULK = 1000


class NoSuchReplay(ControlTowerError):
    """No replay request has that id (or none is pending where one must be)."""


@dataclass
class PlanItem:
    correlation_id: str
    event_id: str | None
    flow: str | None
    channel: str | None
    target: str | None  # dlq | http
    tap: str | None
    status: str  # what the row is (or would be): requested | approved | refused
    reason: str = ""  # why refused, or what it waits for
    duplicate: str | None = None  # the duplicate guard's finding, also when confirmed
    needs_approval: bool = False
    not_before: datetime | None = None
    preview: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass
class ReplayPlan:
    batch: str
    dry_run: bool
    items: list[PlanItem]

    @property
    def accepted(self) -> list[PlanItem]:
        return [i for i in self.items if i.status != "refused"]

    @property
    def refused(self) -> list[PlanItem]:
        return [i for i in self.items if i.status == "refused"]


_FAILED_EVENT = sa.text(
    """
    SELECT e.correlation_id, e.event_id, e.flow, e.channel, e.order_id, e.source, e.payload, e.status
    FROM events e
    WHERE e.correlation_id = :cid AND (CAST(:eid AS text) IS NULL OR e.event_id = CAST(:eid AS text))
      AND (CAST(:eid AS text) IS NOT NULL OR e.status IN ('error', 'dead_letter'))
    ORDER BY e.occurred_at DESC, e.event_id DESC
    LIMIT 1
    """
)
# the earliest time any member of the business transaction reached the milestone
REACHED = sa.text(
    """
    SELECT min(m.reached_at) AS reached_at,
           (SELECT t2.order_id FROM transactions t2 WHERE t2.business_id = b.business_id
              AND t2.order_id IS NOT NULL ORDER BY t2.first_event_at LIMIT 1) AS order_id
    FROM (SELECT business_id FROM transactions WHERE correlation_id = :cid) b
    JOIN transactions t ON t.business_id = b.business_id
    LEFT JOIN transaction_milestones m ON m.correlation_id = t.correlation_id AND m.milestone = :milestone
    GROUP BY b.business_id
    """
)
_OCCURRENCES = sa.text(
    "SELECT correlation_id, event_id FROM exception_occurrences WHERE group_id = :g ORDER BY at, correlation_id"
)


def reached(conn: Connection, correlation_id: str, milestone: str) -> tuple[datetime | None, str | None]:
    """When the business transaction of `correlation_id` first reached `milestone` (None: not yet),
    and its order id."""
    row = conn.execute(REACHED, {"cid": correlation_id, "milestone": milestone}).first()
    return (row.reached_at, row.order_id) if row is not None else (None, None)


def person(name: str) -> str:
    """A name as recorded: compatibility forms folded (full-width letters), invisible format
    characters (zero-width space, soft hyphen) dropped, whitespace collapsed."""
    text = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")
    return " ".join(text.split())


def same_person(a: str, b: str) -> bool:
    """Whether two recorded names are one person for the second-person rule: "Dana", "dana ",
    "ｄａｎａ" and "da\u200bna" are; the comparison ignores case."""
    return person(a).casefold() == person(b).casefold()


# a replay of the same message that is pending, or was sent: a second one would send it twice
_OTHER_REPLAY = sa.text(
    """
    SELECT id, status, requested_by, sent_at FROM replay_requests
    WHERE correlation_id = :cid AND event_id = :eid AND id <> :id
      AND (status IN ('requested', 'approved') OR (status = 'sent' AND :pending_only = false))
    ORDER BY (status = 'sent') DESC, id
    LIMIT 1
    """
)


def other_replay(conn: Connection, correlation_id: str, event_id: str, *, exclude: int = 0,
                 pending_only: bool = False) -> Any:
    """Another replay request of the same message: a sent one first, else a pending one (None: none)."""
    return conn.execute(_OTHER_REPLAY, {"cid": correlation_id, "eid": event_id, "id": exclude,
                                        "pending_only": pending_only}).first()


def replayed_reason(other: Any) -> str:
    if other.status == "sent":
        return (f"already replayed by {other.requested_by} at {other.sent_at:%Y-%m-%d %H:%M} UTC (replay {other.id}): "
                "a second replay would send it twice (confirm the duplicate to replay anyway)")
    return f"already requested by {other.requested_by} (replay {other.id}, {other.status}): cancel that one first"


def duplicate_reason(flow: str, order: str, milestone: str, at: datetime) -> str:
    return (f"{flow} {order} already reached {milestone} at {at:%Y-%m-%d %H:%M} UTC: a replay would "
            "duplicate it (confirm the duplicate to replay anyway)")


def request_replay(
    engine: Engine,
    *,
    config: ReplayConfig,
    by: str,
    now: datetime,
    group_id: int | None = None,
    occurrences: Sequence[tuple[str, str | None]] = (),
    correlation_ids: Sequence[str] = (),
    dry_run: bool = False,
    confirm_duplicate: bool = False,
    target: str | None = None,
) -> ReplayPlan:
    """Plan (and unless `dry_run`, record) one replay per occurrence: `(correlation_id, event_id)`
    pairs, correlation ids (their latest failed event), or every occurrence of an exception group.

    Refused items are recorded too (status refused, the reason in `outcome`), so the audit shows
    who tried what. Raises `ControlTowerError` for a missing `by` or nothing to replay.
    """
    by = person(by)
    if not by:
        raise ControlTowerError("by: missing (who asks for the replay)")
    if target not in (None, "dlq", "http"):
        raise ControlTowerError(f"target: {target!r} (expected dlq or http)")
    wanted: list[tuple[str, str | None]] = [(c, e) for c, e in occurrences]
    wanted += [(c.strip(), None) for c in correlation_ids if c.strip()]
    with engine.begin() as conn:
        if group_id is not None:
            wanted += _group_occurrences(conn, group_id)
        if not wanted:
            raise ControlTowerError("nothing to replay: give correlation ids, occurrences or an exception group")
        if len(wanted) > MAX_BULK:
            raise ControlTowerError(f"{len(wanted)} occurrences: at most {MAX_BULK} in one request")
        batch = uuid.uuid4().hex[:12]
        if not dry_run:  # requests are recorded one at a time: two people cannot both pass the "pending" guard
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('controltower:replay-requests'))"))
        items = [_plan(conn, config, cid, eid, now=now, confirm=confirm_duplicate, target=target)
                 for cid, eid in dict.fromkeys(wanted)]
        _once_per_message(items)
        _pace(items, config, now)
        if not dry_run:
            for item in items:
                item.id = _record(conn, item, by=by, now=now, batch=batch, group_id=group_id,
                                  confirm=confirm_duplicate)
    return ReplayPlan(batch=batch, dry_run=dry_run, items=items)


def _group_occurrences(conn: Connection, group_id: int) -> list[tuple[str, str | None]]:
    if conn.execute(sa.text("SELECT to_regclass('exception_occurrences')")).scalar() is None:
        raise ControlTowerError("exception groups are not available in this database (migration 0016 missing)")
    rows = conn.execute(_OCCURRENCES, {"g": group_id}).all()
    if not rows:
        raise ControlTowerError(f"exception group {group_id}: no occurrences")
    return [(r.correlation_id, r.event_id) for r in rows]


def _plan(conn: Connection, config: ReplayConfig, cid: str, eid: str | None, *, now: datetime, confirm: bool,
          target: str | None) -> PlanItem:
    event = conn.execute(_FAILED_EVENT, {"cid": cid, "eid": eid}).mappings().first()
    if event is None:
        what = f"event {eid}" if eid else "failed (error or dead-letter) event"
        return PlanItem(cid, eid, None, None, None, None, "refused", f"no {what} for correlation id {cid}")
    item = PlanItem(cid, event["event_id"], event["flow"], event["channel"], None, None, "approved")
    flow = config.flow(event["flow"])
    if flow is None:
        item.status, item.reason = "refused", (
            f"flow {event['flow']} has no replay configured (replay.flows.{event['flow']} in {config.source})")
        return item
    has_raw = conn.execute(sa.select(sa.literal(1)).where(
        raw_payloads.c.correlation_id == cid, raw_payloads.c.event_id == item.event_id)).first() is not None
    from_tap = str(event["source"]).startswith("tap:")
    if target is None:
        target = "http" if has_raw and flow.flow in config.endpoints else ("dlq" if from_tap else None)
    item.target, item.tap = target, str(event["source"])[4:] if from_tap else None
    if target is None:
        item.status, item.reason = "refused", (
            "nothing to replay from: the event did not come through a broker tap and no raw payload is stored")
        return item
    if target == "http" and (not has_raw or flow.flow not in config.endpoints):
        item.status, item.reason = "refused", (
            f"HTTP replay needs the stored original (raw_store: true on the tap) and replay.endpoints.{flow.flow}")
        return item
    if target == "dlq" and not from_tap:
        item.status, item.reason = "refused", "a DLQ replay needs an event that came through a broker tap"
        return item
    other = other_replay(conn, cid, item.event_id or "")
    if other is not None and other.status != "sent":  # never two pending replays of one message
        item.status, item.reason = "refused", replayed_reason(other)
        return item
    at, order = reached(conn, cid, flow.produces)
    if at is not None:
        item.duplicate = duplicate_reason(flow.flow, order or cid, flow.produces, at)
    elif other is not None:
        item.duplicate = replayed_reason(other)
    if item.duplicate is not None and not confirm:
        item.status, item.reason = "refused", item.duplicate
        return item
    item.needs_approval = flow.approval
    if flow.approval:
        item.status, item.reason = "requested", "waits for approval by a second person"
    item.preview = _preview(item, event["payload"], config)
    return item


def _preview(item: PlanItem, payload: Any, config: ReplayConfig) -> dict[str, Any]:
    """What would be sent: target, headers (no secrets), the body as stored (masked)."""
    if item.target == "dlq":
        where = f"RabbitMQ: message {item.event_id} from tap {item.tap}'s dead-letter queue back to its source"
        headers = {REPLAY_OF_HEADER: item.event_id}
    else:
        endpoint = config.endpoints[item.flow or ""]
        where = f"HTTP POST to ${endpoint.url_env}"
        headers = {"X-Controltower-Replay-Of": item.event_id}
        if endpoint.token_env:
            headers["Authorization"] = f"Bearer ${endpoint.token_env} (not shown)"
    return {"target": where, "headers": headers, "body_masked": payload}


def _once_per_message(items: Iterable[PlanItem]) -> None:
    """A message named twice in one request (by correlation id and by occurrence) is replayed once."""
    seen: set[tuple[str, str | None]] = set()
    for item in items:
        key = (item.correlation_id, item.event_id)
        if item.status != "refused" and key in seen:
            item.status, item.reason = "refused", f"message {item.event_id} is already in this request"
        seen.add(key)


def _pace(items: Iterable[PlanItem], config: ReplayConfig, now: datetime) -> None:
    """Space each flow's accepted items by its rate: the i-th of a flow is due i/rate minutes on."""
    seen: dict[str, int] = {}
    for item in items:
        if item.status == "refused" or item.flow is None:
            continue
        flow = config.flows[item.flow]
        i = seen.get(item.flow, 0)
        seen[item.flow] = i + 1
        item.not_before = now + timedelta(seconds=i * 60.0 / flow.rate_per_minute)


def _record(conn: Connection, item: PlanItem, *, by: str, now: datetime, batch: str, group_id: int | None,
            confirm: bool) -> int:
    return int(conn.execute(replay_requests.insert().values(
        created_at=now, requested_by=by, target=item.target or "none", tap=item.tap, flow=item.flow or "unknown",
        channel=item.channel, correlation_id=item.correlation_id, event_id=item.event_id or "",
        message_id=item.event_id, group_id=group_id, batch=batch, status=item.status,
        needs_approval=item.needs_approval, confirm_duplicate=confirm and item.duplicate is not None,
        not_before=item.not_before or now, outcome=item.reason or None, updated_at=now,
    ).returning(replay_requests.c.id)).scalar_one())


def approve_replay(engine: Engine, request_id: int, by: str, now: datetime) -> dict[str, Any]:
    """Approve a request waiting for approval. The approver must not be the requester."""
    by = person(by)
    if not by:
        raise ControlTowerError("by: missing (who approves)")
    with engine.begin() as conn:
        row = conn.execute(sa.select(replay_requests).where(replay_requests.c.id == request_id)
                           .with_for_update()).first()
        if row is None:
            raise NoSuchReplay(f"no replay request {request_id}")
        if row.status != "requested":
            raise ControlTowerError(f"replay {request_id} is {row.status}: only a requested replay can be approved")
        if same_person(by, row.requested_by):
            raise ControlTowerError(
                f"replay {request_id} ({row.flow}) was requested by {row.requested_by}: a second, different "
                "person must approve it")
        conn.execute(replay_requests.update().where(replay_requests.c.id == request_id).values(
            status="approved", approved_by=by, approved_at=now, outcome=f"approved by {by}", updated_at=now))
        return {**row._mapping, "status": "approved", "approved_by": by, "approved_at": now}


def cancel_replay(
    engine: Engine, *, by: str, now: datetime, request_id: int | None = None, batch: str | None = None,
    group_id: int | None = None,
) -> int:
    """Cancel what is not sent yet of one request, a bulk batch or an exception group's replays.
    Returns how many were cancelled. A request being sent right now is finished first (the
    executor holds its row lock), then is no longer pending."""
    by = person(by)
    if not by:
        raise ControlTowerError("by: missing (who cancels)")
    t = replay_requests
    if request_id is not None:
        where = t.c.id == request_id
    elif batch:
        where = t.c.batch == batch
    elif group_id is not None:
        where = t.c.group_id == group_id
    else:
        raise ControlTowerError("cancel what? give a request id, a batch or an exception group")
    with engine.begin() as conn:
        ids = [r.id for r in conn.execute(sa.select(t.c.id).where(where, t.c.status.in_(PENDING))
                                          .order_by(t.c.id).with_for_update())]
        # re-read after the locks: a row the executor sent meanwhile is no longer pending
        result = conn.execute(t.update().where(t.c.id.in_(ids), t.c.status.in_(PENDING)).values(
            status="cancelled", cancelled_by=by, outcome=f"cancelled by {by}", updated_at=now))
        if request_id is not None and result.rowcount == 0:
            raise NoSuchReplay(f"no pending replay request {request_id}")
        return int(result.rowcount)


def list_replays(engine: Engine, config: ReplayConfig | None = None, *, statuses: Sequence[str] = STATUSES,
                 limit: int = 200) -> list[dict[str, Any]]:
    """Requests newest first; with `config`, each sent one has `produced_at`: when its business
    transaction reached the flow's produced milestone after the replay ("posted at 10:43")."""
    t = replay_requests
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(t).where(t.c.status.in_(list(statuses))).order_by(t.c.id.desc()).limit(limit))]
        for row in rows:
            row["produced_at"] = None
            flow = config.flow(row["flow"]) if config is not None else None
            if flow is None or row["sent_at"] is None:
                continue
            at, _ = reached(conn, row["correlation_id"], flow.produces)
            row["produced_at"] = at if at is not None and at >= row["sent_at"] else None
    return rows
