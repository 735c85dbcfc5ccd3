"""What people do to alerts (list, acknowledge, silence) and the audit log of who did it.

The one implementation of these operations: the alerts room's CLI, the HTTP API and the
dashboard all call it, so every acknowledgement and silence takes the row lock, checks the
alert's state, and lands in `alert_audit` (and `alert_events`) in the same transaction as the
change itself, whichever way it came in. `evaluation_health` tells any reader whether alerting
itself runs (from `alert_evaluations`, written by the evaluator). It owns no scheduling and sends
nothing.
Incidents (alerts grouped by cause, written by the evaluator) are listed and acknowledged here
too: acknowledging an incident acknowledges its pending and firing alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controltower.errors import ControlTowerError
from controltower.schema.alerts import (
    alert_audit,
    alert_evaluations,
    alert_events,
    alert_notifications,
    alert_silences,
    alert_state,
    incident_alerts,
    incident_events,
    incidents,
)

ACTIVE = ("pending", "firing")
DEFAULT_INTERVAL_SECONDS = 30.0  # the scheduler's default evaluation_interval
STALE_AFTER_INTERVALS = 3


class NoSuchAlert(ControlTowerError):
    """No pending or firing alert has that fingerprint (or prefix): a caller may answer 404."""


class NoSuchIncident(ControlTowerError):
    """No incident has that id (or it is resolved, for acknowledging): a caller may answer 404."""


class AmbiguousFingerprint(ControlTowerError):
    """The fingerprint prefix matches more than one alert."""


def audit(conn: Connection, now: datetime, actor: str, action: str, target: str, detail: Mapping[str, Any]) -> None:
    conn.execute(alert_audit.insert().values(at=now, actor=actor, action=action, target=target, detail=dict(detail)))


def list_alerts(engine: Engine, states: Sequence[str] = ACTIVE) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(alert_state)
            .where(alert_state.c.state.in_(list(states)))
            .order_by(
                sa.case({"firing": 0, "pending": 1}, value=alert_state.c.state, else_=2),
                sa.case({"page": 0, "ticket": 1}, value=alert_state.c.severity, else_=2),
                alert_state.c.active_since,
                alert_state.c.rule,
                alert_state.c.labels["sla"].astext,
                alert_state.c.labels["channel"].astext,
                alert_state.c.fingerprint,
            )
        )
        return [dict(r._mapping) for r in rows]


def acknowledge(
    engine: Engine, fingerprint_or_prefix: str, by: str, now: datetime, *, via: str = "cli"
) -> dict[str, Any]:
    """Acknowledge one pending or firing alert (an unambiguous fingerprint prefix is enough).

    Returns the alert's row as acknowledged. Raises `NoSuchAlert` when no pending or firing alert
    matches, `AmbiguousFingerprint` when the prefix matches several, `ControlTowerError` (their
    base) for an empty fingerprint. `via` names the way in (cli, http, dashboard) in the audit log.
    """
    prefix = fingerprint_or_prefix.strip().lower()
    if not prefix:
        raise ControlTowerError("fingerprint: missing")
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(alert_state)
            .where(alert_state.c.fingerprint.startswith(prefix, autoescape=True), alert_state.c.state.in_(ACTIVE))
            .with_for_update()
        ).all()
        if not rows:
            raise NoSuchAlert(f"no pending or firing alert with fingerprint {prefix!r}")
        if len(rows) > 1:
            raise AmbiguousFingerprint(f"fingerprint prefix {prefix!r} matches {len(rows)} alerts; give more digits")
        row = rows[0]
        conn.execute(
            alert_state.update()
            .where(alert_state.c.fingerprint == row.fingerprint)
            .values(acknowledged_by=by, acknowledged_at=now)
        )
        conn.execute(
            alert_events.insert().values(
                at=now, fingerprint=row.fingerprint, rule=row.rule, from_state=row.state,
                to_state=row.state, value=row.last_value, labels=row.labels, summary=f"acknowledged by {by}",
            )
        )
        audit(conn, now, by, "acknowledge", row.fingerprint,
              {"rule": row.rule, "labels": row.labels, "state": row.state, "summary": row.summary, "via": via})
        return {**row._mapping, "acknowledged_by": by, "acknowledged_at": now}


def add_silence(
    engine: Engine,
    matchers: Mapping[str, str],
    *,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str = "",
    via: str = "cli",
) -> int:
    if not matchers:
        raise ControlTowerError("a silence needs at least one matcher (label=value)")
    if ends_at <= starts_at:
        raise ControlTowerError("a silence must end after it starts")
    with engine.begin() as conn:
        silence_id = int(
            conn.execute(
                alert_silences.insert()
                .values(matchers=dict(matchers), starts_at=starts_at, ends_at=ends_at,
                        created_by=created_by, comment=comment)
                .returning(alert_silences.c.id)
            ).scalar_one()
        )
        audit(conn, starts_at, created_by, "silence", f"silence:{silence_id}",
              {"matchers": dict(matchers), "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
               "comment": comment, "via": via})
        return silence_id


def list_silences(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(alert_silences).where(alert_silences.c.ends_at > now).order_by(alert_silences.c.ends_at)
        )
        return [dict(r._mapping) for r in rows]


def list_audit(engine: Engine, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alert_audit).order_by(alert_audit.c.id.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]


def list_deliveries(engine: Engine, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The delivery log: newest outbox rows first (every notification, its receiver and outcome)."""
    t = alert_notifications
    query = sa.select(
        t.c.id, t.c.created_at, t.c.rule, t.c.kind, t.c.receiver, t.c.status, t.c.attempts,
        t.c.last_error, t.c.sent_at, t.c.next_attempt_at, t.c.alert_count, t.c.group_key,
    ).order_by(t.c.id.desc()).limit(limit)
    if status:
        query = query.where(t.c.status == status)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def evaluation_health(engine: Engine, now: datetime, *, interval_seconds: float | None = None) -> dict[str, Any]:
    """Whether alerting runs: the last successful evaluation cycle, failing rules, staleness.

    `{"last_success_at": datetime | None, "interval_seconds": float, "stale": bool,
      "failing_rules": [{"rule", "error", "since", "failures"}], "last_error": str | None,
      "ignored_amounts_total": int}`. `stale` is true when no cycle succeeded within
    `STALE_AFTER_INTERVALS` intervals (or none ever did): alerting has stopped. The interval is
    the one the scheduler recorded, unless given.
    """
    with engine.connect() as conn:
        rows = {r.rule: r for r in conn.execute(sa.select(alert_evaluations))}
    cycle = rows.get("")
    interval = interval_seconds or (cycle.interval_seconds if cycle is not None else None) or DEFAULT_INTERVAL_SECONDS
    last = cycle.last_success_at if cycle is not None else None
    failing = [
        {"rule": r.rule, "error": r.last_error, "since": r.failing_since, "failures": r.consecutive_failures}
        for name, r in sorted(rows.items()) if name and r.consecutive_failures > 0
    ]
    return {
        "last_success_at": last,
        "interval_seconds": float(interval),
        "stale": last is None or (now - last).total_seconds() > STALE_AFTER_INTERVALS * interval,
        "failing_rules": failing,
        "last_error": cycle.last_error if cycle is not None and cycle.consecutive_failures > 0 else None,
        "ignored_amounts_total": sum(int(r.ignored_amounts_total) for r in rows.values()),
    }


INCIDENT_STATES = ("open", "acknowledged", "resolved")


def list_incidents(engine: Engine, states: Sequence[str] = ("open", "acknowledged"), limit: int = 200) -> list[dict[str, Any]]:
    """Incidents in `states`, open before acknowledged before resolved, newest first; each with `alert_count`."""
    count = (sa.select(sa.func.count()).where(incident_alerts.c.incident_id == incidents.c.id)
             .scalar_subquery().label("alert_count"))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(incidents, count)
            .where(incidents.c.state.in_(list(states)))
            .order_by(sa.case({"open": 0, "acknowledged": 1}, value=incidents.c.state, else_=2),
                      incidents.c.opened_at.desc(), incidents.c.id.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]


def get_incident(engine: Engine, incident_id: int) -> dict[str, Any]:
    """One incident with its `alerts` (attachment and current state) and its `timeline`."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise NoSuchIncident(f"no incident {incident_id}")
        a, s = incident_alerts, alert_state
        alerts = conn.execute(
            sa.select(a.c.fingerprint, a.c.rule, a.c.labels, a.c.attached_at, a.c.first, s.c.state, s.c.summary,
                      s.c.severity, s.c.dashboard_url, s.c.firing_since, s.c.resolved_at, s.c.acknowledged_by)
            .select_from(a.outerjoin(s, s.c.fingerprint == a.c.fingerprint))
            .where(a.c.incident_id == incident_id)
            .order_by(a.c.first.desc(), a.c.attached_at, a.c.rule, a.c.fingerprint)
        )
        timeline = conn.execute(
            sa.select(incident_events.c.at, incident_events.c.kind, incident_events.c.text, incident_events.c.detail)
            .where(incident_events.c.incident_id == incident_id).order_by(incident_events.c.id)
        )
        return {**row._mapping, "alerts": [dict(r._mapping) for r in alerts],
                "timeline": [dict(r._mapping) for r in timeline]}


def acknowledge_incident(engine: Engine, incident_id: int, by: str, now: datetime, *, via: str = "cli") -> dict[str, Any]:
    """Acknowledge an open incident and its pending and firing alerts not yet acknowledged.

    No more repeats are sent for it; it still resolves (and says so) when its alerts do.
    Acknowledging an acknowledged incident changes nothing and returns it as it is. Raises
    `NoSuchIncident` for an unknown or resolved incident. One `alert_audit` row for the incident,
    an `alert_events` row per alert it acknowledged, and a timeline entry.
    """
    by = by.strip()
    if not by:
        raise ControlTowerError("by: missing (who acknowledges)")
    with engine.begin() as conn:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id).with_for_update()).first()
        if row is None or row.state == "resolved":
            raise NoSuchIncident(f"no open incident {incident_id}")
        if row.state == "acknowledged":
            return dict(row._mapping)
        fps = [f for (f,) in conn.execute(sa.select(incident_alerts.c.fingerprint)
                                          .where(incident_alerts.c.incident_id == incident_id))]
        alerts = conn.execute(
            sa.select(alert_state)
            .where(alert_state.c.fingerprint.in_(fps), alert_state.c.state.in_(ACTIVE),
                   alert_state.c.acknowledged_at.is_(None))
            .order_by(alert_state.c.fingerprint)
            .with_for_update()
        ).all()
        if alerts:
            conn.execute(alert_state.update().where(alert_state.c.fingerprint.in_([a.fingerprint for a in alerts]))
                         .values(acknowledged_by=by, acknowledged_at=now))
            conn.execute(alert_events.insert(), [
                {"at": now, "fingerprint": a.fingerprint, "rule": a.rule, "from_state": a.state, "to_state": a.state,
                 "value": a.last_value, "labels": a.labels, "summary": f"acknowledged by {by} (incident {incident_id})"}
                for a in alerts
            ])
        conn.execute(incidents.update().where(incidents.c.id == incident_id)
                     .values(state="acknowledged", acknowledged_by=by, acknowledged_at=now, updated_at=now))
        conn.execute(incident_events.insert().values(
            incident_id=incident_id, at=now, kind="acknowledged", text=f"acknowledged by {by}",
            detail={"via": via, "alerts": [a.fingerprint for a in alerts]}))
        audit(conn, now, by, "acknowledge_incident", f"incident:{incident_id}",
              {"key": row.key, "title": row.title, "alerts": [a.fingerprint for a in alerts], "via": via})
        return {**row._mapping, "state": "acknowledged", "acknowledged_by": by, "acknowledged_at": now}
