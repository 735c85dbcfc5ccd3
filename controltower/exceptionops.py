"""What people do to exception groups (assign, comment, tag, snooze, resolve, reopen), the
audit trail of who did it, and the reads of the work queue (list, one group, counts).

The one implementation of these operations: the metrics room's CLI, the HTTP API and the
dashboard all call it, so every action takes the group's row lock, checks its state, and lands
in `exception_actions` in the same transaction as the change itself, whichever way it came in
(`via`: cli, http, dashboard). Comments are masked (`controltower.masking`) before storage.
The grouping job (metrics room) owns the groups and occurrences; it records its automatic
actions (auto-resolve, reopen, wake) through `record` with the actor `controltower`.
Nothing here groups, classifies or schedules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower.errors import ControlTowerError
from controltower.masking import Masker
from controltower.schema.exceptions import (
    exception_actions,
    exception_groups,
    exception_occurrences,
)

STATES = ("open", "snoozed", "resolved")
ACTIVE = ("open", "snoozed")
AUTO_ACTOR = "controltower"
MANUAL = "manual"
MAX_TEXT = 2000  # characters of a comment or note kept
MAX_TAGS = 20
MAX_NAME = 200
OCCURRENCES_SHOWN = 500


MAX_SNOOZE = timedelta(days=90)
MAX_ID = 2**63 - 1  # exception_groups.id is a bigint


class NoSuchGroup(ControlTowerError):
    """No exception group has that id: a caller may answer 404."""


class BadAction(ControlTowerError):
    """The action's input is wrong whatever the group's state (a caller may answer 400); other
    ControlTowerErrors of an action are conflicts with the group's state (409)."""


def record(conn: Connection, group_id: int, now: datetime, actor: str, action: str, via: str,
           detail: Mapping[str, Any] | None = None) -> None:
    """One audit row (in the caller's transaction)."""
    conn.execute(exception_actions.insert().values(group_id=group_id, at=now, actor=actor, action=action, via=via,
                                                   detail=dict(detail or {})))


def _clean(text: str, what: str, limit: int = MAX_NAME, *, required: bool = True, lines: bool = False) -> str:
    """Printable text; a name or tag is one line (a newline or escape in an actor would forge audit lines)."""
    if lines:
        out = "".join(ch for ch in str(text) if ch.isprintable() or ch == "\n")
    else:
        out = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    out = out.strip()[:limit]
    if required and not out:
        raise BadAction(f"{what}: missing")
    return out


def _actor(by: str) -> str:
    who = _clean(by, "by (who acts)")
    if who.casefold() == AUTO_ACTOR:
        raise BadAction(f"by: {AUTO_ACTOR!r} is reserved for the automatic actions")
    return who


def _locked(conn: Connection, group_id: int) -> Any:
    _check_id(group_id)
    row = conn.execute(sa.select(exception_groups).where(exception_groups.c.id == group_id).with_for_update()).first()
    if row is None:
        raise NoSuchGroup(f"no exception group {group_id}")
    return row


def _check_id(group_id: int) -> None:
    if not 0 < group_id <= MAX_ID:
        raise NoSuchGroup(f"no exception group {group_id}")


def _change(engine: Engine, group_id: int, by: str, now: datetime, via: str, action: str,
            values: Mapping[str, Any], detail: Mapping[str, Any], *, check: Any = None) -> dict[str, Any]:
    by = _actor(by)
    with engine.begin() as conn:
        row = _locked(conn, group_id)
        if check is not None:
            check(row)
        if values:
            conn.execute(exception_groups.update().where(exception_groups.c.id == group_id)
                         .values(**values, updated_at=now))
        record(conn, group_id, now, by, action, via, detail)
        return {**row._mapping, **values}


def assign(engine: Engine, group_id: int, assignee: str, by: str, now: datetime, *, via: str = "cli") -> dict[str, Any]:
    """Give the group to `assignee` (empty: unassign)."""
    who = _clean(assignee, "assignee", required=False) or None
    return _change(engine, group_id, by, now, via, "assign", {"assignee": who}, {"assignee": who})


def comment(engine: Engine, group_id: int, text: str, by: str, now: datetime, *, masker: Masker,
            via: str = "cli") -> dict[str, Any]:
    """Add a comment (personal data masked as in an event's free text)."""
    clean = _clean(text, "comment", MAX_TEXT, lines=True)
    masked = masker.find.value(clean, free_text=True)
    return _change(engine, group_id, by, now, via, "comment", {}, {"text": masked})


def tag(engine: Engine, group_id: int, by: str, now: datetime, *, add: Iterable[str] = (),
        remove: Iterable[str] = (), via: str = "cli") -> dict[str, Any]:
    """Add and remove tags (lowercase slugs, at most `MAX_TAGS`)."""
    plus = [_clean(t, "tag", 64).lower() for t in add]
    minus = {_clean(t, "tag", 64).lower() for t in remove}
    if not plus and not minus:
        raise BadAction("tag: give at least one tag to add or remove")
    by = _actor(by)
    with engine.begin() as conn:
        row = _locked(conn, group_id)
        tags = [t for t in row.tags if t not in minus]
        tags += [t for t in dict.fromkeys(plus) if t not in tags]
        if len(tags) > MAX_TAGS:
            raise BadAction(f"tag: a group carries at most {MAX_TAGS} tags")
        conn.execute(exception_groups.update().where(exception_groups.c.id == group_id).values(tags=tags, updated_at=now))
        record(conn, group_id, now, by, "tag", via, {"added": plus, "removed": sorted(minus), "tags": tags})
        return {**row._mapping, "tags": tags}


def snooze(engine: Engine, group_id: int, until: datetime, by: str, now: datetime, *, via: str = "cli") -> dict[str, Any]:
    """Put an open group aside until `until` (the grouping job wakes it then)."""
    if until <= now:
        raise BadAction("snooze: until must be in the future")
    if until > now + MAX_SNOOZE:
        raise BadAction(f"snooze: a snooze lasts at most {MAX_SNOOZE.days} days")

    def check(row: Any) -> None:
        if row.state == "resolved":
            raise ControlTowerError(f"exception group {group_id} is resolved: reopen it first")

    return _change(engine, group_id, by, now, via, "snooze", {"state": "snoozed", "snoozed_until": until},
                   {"until": until.isoformat()}, check=check)


def resolve(engine: Engine, group_id: int, note: str, by: str, now: datetime, *, via: str = "cli",
            masker: Masker | None = None) -> dict[str, Any]:
    """Resolve by hand with a note (masked like a comment); a new occurrence reopens it."""
    text = _clean(note, "note", MAX_TEXT, required=False, lines=True)
    if masker is not None and text:
        text = masker.find.value(text, free_text=True)
    by = _actor(by)
    with engine.begin() as conn:
        row = _locked(conn, group_id)
        if row.state == "resolved":
            raise ControlTowerError(f"exception group {group_id} is already resolved")
        values = {"state": "resolved", "resolved_at": now, "resolved_by": by, "resolution": MANUAL,
                  "resolution_note": text or None, "snoozed_until": None}
        conn.execute(exception_groups.update().where(exception_groups.c.id == group_id).values(**values, updated_at=now))
        record(conn, group_id, now, by, "resolve", via,
               {"note": text, "resolution": MANUAL, "open_ms": _ms(now - row.opened_at),
                "occurrences": int(row.open_count)})
        return {**row._mapping, **values}


def reopen(engine: Engine, group_id: int, by: str, now: datetime, *, via: str = "cli") -> dict[str, Any]:
    """Open a resolved or snoozed group again (a resolved one counts as reopened)."""
    by = _actor(by)
    with engine.begin() as conn:
        row = _locked(conn, group_id)
        if row.state == "open":
            raise ControlTowerError(f"exception group {group_id} is already open")
        values: dict[str, Any] = {"state": "open", "snoozed_until": None}
        if row.state == "resolved":
            values |= {"opened_at": now, "reopen_count": row.reopen_count + 1, "resolved_at": None,
                       "resolved_by": None, "resolution": None, "resolution_note": None}
        conn.execute(exception_groups.update().where(exception_groups.c.id == group_id).values(**values, updated_at=now))
        record(conn, group_id, now, by, "reopen", via, {"from_state": row.state})
        return {**row._mapping, **values}


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


# --- reads -----------------------------------------------------------------------------------

def list_groups(engine: Engine, *, states: Sequence[str] = ACTIVE, channel: str | None = None,
                cls: str | None = None, assignee: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Groups in `states`, filtered; open before snoozed before resolved, most occurrences first."""
    g = exception_groups
    query = sa.select(g).where(g.c.state.in_(list(states)))
    if channel:
        query = query.where(g.c.channel == channel)
    if cls:
        query = query.where(g.c["class"] == cls)
    if assignee == "-":  # unassigned
        query = query.where(g.c.assignee.is_(None))
    elif assignee:
        query = query.where(g.c.assignee == assignee)
    query = query.order_by(sa.case({"open": 0, "snoozed": 1}, value=g.c.state, else_=2), g.c.open_count.desc(),
                           g.c.last_seen_at.desc(), g.c.id).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def get_group(engine: Engine, group_id: int) -> dict[str, Any]:
    """One group with its `occurrences` (newest first, at most `OCCURRENCES_SHOWN`) and `actions` (oldest first)."""
    _check_id(group_id)
    with engine.connect() as conn:
        row = conn.execute(sa.select(exception_groups).where(exception_groups.c.id == group_id)).first()
        if row is None:
            raise NoSuchGroup(f"no exception group {group_id}")
        o = exception_occurrences
        occurrences = conn.execute(
            sa.select(o.c.correlation_id, o.c.source, o.c.event_id, o.c.at, o.c.first_at, o.c.count, o.c.awaits,
                      o.c.error_code, o.c.message, o.c.resolved_at)
            .where(o.c.group_id == group_id).order_by(o.c.at.desc(), o.c.correlation_id, o.c.source)
            .limit(OCCURRENCES_SHOWN))
        a = exception_actions
        actions = conn.execute(sa.select(a.c.id, a.c.at, a.c.actor, a.c.action, a.c.via, a.c.detail)
                               .where(a.c.group_id == group_id).order_by(a.c.id))
        return {**row._mapping, "occurrences": [dict(r._mapping) for r in occurrences],
                "actions": [dict(r._mapping) for r in actions]}


def filters(engine: Engine) -> dict[str, list[str]]:
    """The channels, classes and assignees groups have (for filter choices)."""
    g = exception_groups
    with engine.connect() as conn:
        return {name: [v for (v,) in conn.execute(sa.select(col).distinct().where(col.is_not(None)).order_by(col))]
                for name, col in (("channel", g.c.channel), ("class", g.c["class"]), ("assignee", g.c.assignee))}


_VOLUME = sa.text("""
WITH days AS (
    SELECT date_trunc('day', o.first_at AT TIME ZONE 'UTC') AS day, g.channel, count(*) AS occurrences,
           0 AS manual, 0 AS auto
    FROM exception_occurrences o JOIN exception_groups g ON g.id = o.group_id
    WHERE o.first_at >= :since
    GROUP BY 1, 2
    UNION ALL
    SELECT date_trunc('day', a.at AT TIME ZONE 'UTC'), g.channel, 0,
           count(*) FILTER (WHERE a.action = 'resolve'), count(*) FILTER (WHERE a.action = 'auto_resolve')
    FROM exception_actions a JOIN exception_groups g ON g.id = a.group_id
    WHERE a.at >= :since AND a.action IN ('resolve', 'auto_resolve')
    GROUP BY 1, 2
)
SELECT CAST(day AS date) AS day, channel, sum(occurrences)::bigint AS occurrences,
       sum(manual)::bigint AS resolved_manually, sum(auto)::bigint AS resolved_automatically
FROM days GROUP BY 1, 2 ORDER BY 1, 2
""")
_TIME_TO_RESOLVE = sa.text("""
SELECT g.channel, count(*) AS resolved,
       count(*) FILTER (WHERE a.action = 'resolve') AS manual,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (a.detail->>'open_ms')::float8) AS p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY (a.detail->>'open_ms')::float8) AS p90_ms
FROM exception_actions a JOIN exception_groups g ON g.id = a.group_id
WHERE a.at >= :since AND a.action IN ('resolve', 'auto_resolve') AND a.detail ? 'open_ms'
GROUP BY g.channel ORDER BY g.channel
""")


def stats(engine: Engine, now: datetime, *, days: int = 14) -> dict[str, Any]:
    """The counts of the work queue over the last `days` days:
    `volume`: per UTC day and channel, new occurrences (the manual-exception volume) and groups
    resolved by a person vs automatically; `time_to_resolve`: per channel, resolutions and the
    p50/p90 of the time from (re)opening to resolving, in ms; `open`: open groups per channel."""
    since = now - timedelta(days=days)
    with engine.connect() as conn:
        volume = [dict(r._mapping) for r in conn.execute(_VOLUME, {"since": since})]
        ttr = [dict(r._mapping) for r in conn.execute(_TIME_TO_RESOLVE, {"since": since})]
        g = exception_groups
        open_ = [dict(r._mapping) for r in conn.execute(
            sa.select(g.c.channel, sa.func.count().label("groups"), sa.func.sum(g.c.open_count).label("occurrences"))
            .where(g.c.state == "open").group_by(g.c.channel).order_by(g.c.channel))]
    for row in ttr:
        for key in ("p50_ms", "p90_ms"):
            row[key] = None if row[key] is None else round(row[key])
    for row in open_:
        row["occurrences"] = int(row["occurrences"] or 0)
    return {"days": days, "volume": volume, "time_to_resolve": ttr, "open": open_}
