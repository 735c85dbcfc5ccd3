"""Rule evaluation: the alert state machine over the SLA table, with an outbox for notifications.

Each rule and matching `sla_status` row is one series (fingerprint = hash of its labels):

    inactive --condition--> pending --held for `for`--> firing --condition false--> resolved
                  (pending --condition false--> inactive; `for: 0` goes straight to firing)

State changes, their history (`alert_events`) and the notifications they cause
(`alert_notifications`, delivered later by `alerts.notify`) are written in one transaction, so a
process that dies between evaluating and sending loses nothing and sends nothing twice.
Silenced alerts change state but enqueue nothing; an acknowledged alert is not repeated until it
resolves; a firing alert is re-notified every `repeat_interval`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from alerts.rules import Rule, render, template_fields
from controltower.errors import ControlTowerError
from controltower.schema.alerts import (
    alert_events,
    alert_notifications,
    alert_silences,
    alert_state,
)
from controltower.schema.metrics import sla_status

log = logging.getLogger(__name__)

ACTIVE = ("pending", "firing")
ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8501"


@dataclass(frozen=True)
class Transition:
    """One thing evaluation did to a series: a state change and/or a notification enqueued."""

    rule: str
    fingerprint: str
    labels: dict[str, str]
    from_state: str
    to_state: str
    value: float | None
    notification: str | None = None  # firing | repeat | resolved, when one was enqueued
    receivers: tuple[str, ...] = ()
    silenced: bool = False


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable 16-hex-digit id of a label set (Alertmanager's fingerprints have the same length)."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rfc3339(when: datetime | None) -> str:
    if when is None:
        return ZERO_TIME
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deep_link(dashboard_url: str, sla: str, channel: str) -> str:
    return f"{dashboard_url.rstrip('/')}/breaches?{urlencode({'sla': sla, 'channel': channel})}"


def series_labels(rule: Rule, row: Mapping[str, Any]) -> dict[str, str]:
    return {
        "alertname": rule.name,
        "sla": str(row["sla"]),
        "channel": str(row["channel"]),
        "window": str(row["window"]),
        "severity": rule.severity,
        **rule.labels,
    }


def silenced_by(labels: Mapping[str, str], silences: Iterable[Mapping[str, Any]]) -> int | None:
    """Id of the first silence whose matchers all equal the alert's labels."""
    for silence in silences:
        matchers = silence["matchers"] or {}
        if matchers and all(labels.get(k) == str(v) for k, v in matchers.items()):
            return int(silence["id"])
    return None


def active_silences(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(alert_silences).where(alert_silences.c.starts_at <= now, alert_silences.c.ends_at > now)
    )
    return [dict(r._mapping) for r in rows]


def _annotations(rule: Rule, row: Mapping[str, Any] | None, dashboard_url: str, previous: Mapping[str, str]) -> dict[str, str]:
    if row is None:  # the series vanished from the SLA table: keep the last rendered text
        return dict(previous)
    values = template_fields(row, rule, dashboard_url)
    out = {key: render(text, values) for key, text in rule.annotations.items() if key != "runbook_url"}
    if rule.runbook_url:
        out["runbook_url"] = rule.runbook_url
    return out


def _payload(state: Mapping[str, Any], kind: str, external_url: str) -> dict[str, Any]:
    """What a notification carries, independent of the receiver type (rendered at delivery)."""
    resolved = kind == "resolved"
    return {
        "kind": kind,
        "status": "resolved" if resolved else "firing",
        "rule": state["rule"],
        "severity": state["severity"],
        "fingerprint": state["fingerprint"],
        "labels": dict(state["labels"]),
        "annotations": dict(state["annotations"]),
        "summary": state["summary"],
        "value": state["last_value"],
        "startsAt": rfc3339(state["firing_since"] or state["active_since"]),
        "endsAt": rfc3339(state["resolved_at"]) if resolved else ZERO_TIME,
        "generatorURL": state["dashboard_url"],
        "dashboard_url": state["dashboard_url"],
        "externalURL": external_url,
        "acknowledged_by": state.get("acknowledged_by"),
    }


class _Run:
    def __init__(self, conn: Connection, now: datetime, dashboard_url: str, silences: list[dict[str, Any]]) -> None:
        self.conn = conn
        self.now = now
        self.dashboard_url = dashboard_url
        self.silences = silences
        self.transitions: list[Transition] = []

    def step(self, rule: Rule, labels: dict[str, str], row: Mapping[str, Any] | None, old: dict[str, Any] | None) -> None:
        now = self.now
        fp = fingerprint(labels)
        holds = row is not None and rule.holds(row)
        prev = old["state"] if old else "inactive"
        if old is None and not holds:
            return  # never store inactive series that never fired
        state: dict[str, Any] = dict(old) if old else {
            "fingerprint": fp, "rule": rule.name, "state": "inactive", "active_since": None,
            "firing_since": None, "resolved_at": None, "last_notified_at": None,
            "acknowledged_by": None, "acknowledged_at": None, "annotations": {},
        }
        state.update(
            labels=labels, severity=rule.severity, last_evaluated_at=now,
            dashboard_url=deep_link(self.dashboard_url, labels["sla"], labels["channel"]),
        )
        if row is not None:
            state["last_value"] = rule.numeric(row)
        state.setdefault("last_value", None)
        state["annotations"] = _annotations(rule, row, self.dashboard_url, state.get("annotations") or {})
        state["summary"] = state["annotations"].get("summary", rule.name)

        notify: str | None = None
        if holds:
            if prev in ("inactive", "resolved"):
                state.update(
                    state="pending", active_since=now, firing_since=None, resolved_at=None,
                    last_notified_at=None, acknowledged_by=None, acknowledged_at=None,
                )
            if state["state"] == "pending" and now - state["active_since"] >= timedelta(seconds=rule.for_seconds):
                state.update(state="firing", firing_since=now)
            if state["state"] == "firing" and not state["acknowledged_at"]:
                if state["last_notified_at"] is None:
                    notify = "firing"  # newly firing, or a silence that held it back has ended
                elif rule.repeat_interval_seconds and now - state["last_notified_at"] >= timedelta(
                    seconds=rule.repeat_interval_seconds
                ):
                    notify = "repeat"
        else:
            if prev == "pending":
                state.update(state="inactive", active_since=None)
            elif prev == "firing":
                state.update(state="resolved", resolved_at=now)
                if state["last_notified_at"] is not None:
                    notify = "resolved"

        silence = silenced_by(labels, self.silences) if notify else None
        receivers: tuple[str, ...] = ()
        if notify and silence is None and rule.receivers:
            receivers = rule.receivers
            payload = _payload(state, notify, self.dashboard_url)
            self.conn.execute(
                alert_notifications.insert(),
                [
                    {"fingerprint": fp, "rule": rule.name, "receiver": name, "kind": notify,
                     "payload": payload, "status": "pending", "attempts": 0, "created_at": now,
                     "next_attempt_at": now}
                    for name in receivers
                ],
            )
        if notify and silence is None:
            state["last_notified_at"] = now

        columns = {c.name for c in alert_state.columns}
        values = {k: v for k, v in state.items() if k in columns}
        stmt = insert(alert_state).values(**values)
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[alert_state.c.fingerprint],
                set_={k: stmt.excluded[k] for k in values if k != "fingerprint"},
            )
        )
        changed = state["state"] != prev
        if changed:
            self.conn.execute(
                alert_events.insert().values(
                    at=now, fingerprint=fp, rule=rule.name, from_state=prev, to_state=state["state"],
                    value=state["last_value"], labels=labels, summary=state["summary"],
                )
            )
        if changed or notify:
            self.transitions.append(
                Transition(rule.name, fp, labels, prev, state["state"], state["last_value"],
                           notify, receivers, silence is not None)
            )
            if notify:
                log.info("alert %s %s %s%s", rule.name, fp, notify,
                         " (silenced)" if silence is not None else f" -> {', '.join(receivers) or 'no receivers'}")


def evaluate(
    engine: Engine,
    rules: Sequence[Rule],
    now: datetime,
    *,
    dashboard_url: str = DEFAULT_DASHBOARD_URL,
) -> list[Transition]:
    """Evaluate every rule against the SLA table at `now`; return what changed (one transaction)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    by_name = {r.name: r for r in rules}
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(sla_status))]
        states = {
            r.fingerprint: dict(r._mapping)
            for r in conn.execute(
                sa.select(alert_state)
                .where(sa.or_(alert_state.c.rule.in_(list(by_name)), alert_state.c.state.in_(ACTIVE)))
                .with_for_update()
            )
        }
        run = _Run(conn, now, dashboard_url, active_silences(conn, now))
        seen: set[str] = set()
        for rule in rules:
            for row in rows:
                if not rule.matches(row):
                    continue
                labels = series_labels(rule, row)
                fp = fingerprint(labels)
                if fp in seen:
                    continue
                seen.add(fp)
                run.step(rule, labels, row, states.get(fp))
        # Series that left the SLA table (or whose rule changed) stop holding.
        for fp, old in states.items():
            if fp in seen or old["state"] not in ACTIVE:
                continue
            rule = by_name.get(old["rule"])
            if rule is None:
                _retire(conn, old, now)
                continue
            run.step(rule, dict(old["labels"]), None, old)
    return run.transitions


def _retire(conn: Connection, old: Mapping[str, Any], now: datetime) -> None:
    """A rule removed from the file: its active series end quietly (no notification)."""
    to_state = "resolved" if old["state"] == "firing" else "inactive"
    conn.execute(
        alert_state.update()
        .where(alert_state.c.fingerprint == old["fingerprint"])
        .values(state=to_state, resolved_at=now if to_state == "resolved" else None, last_evaluated_at=now)
    )
    conn.execute(
        alert_events.insert().values(
            at=now, fingerprint=old["fingerprint"], rule=old["rule"], from_state=old["state"],
            to_state=to_state, value=old["last_value"], labels=old["labels"], summary="rule removed",
        )
    )


# -- operations used by the CLI and HTTP API ---------------------------------------------------

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


def acknowledge(engine: Engine, fingerprint_or_prefix: str, by: str, now: datetime) -> dict[str, Any]:
    """Acknowledge one pending or firing alert (an unambiguous fingerprint prefix is enough)."""
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
            raise ControlTowerError(f"no pending or firing alert with fingerprint {prefix!r}")
        if len(rows) > 1:
            raise ControlTowerError(f"fingerprint prefix {prefix!r} matches {len(rows)} alerts; give more digits")
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
        return {**row._mapping, "acknowledged_by": by, "acknowledged_at": now}


def add_silence(
    engine: Engine,
    matchers: Mapping[str, str],
    *,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str = "",
) -> int:
    if not matchers:
        raise ControlTowerError("a silence needs at least one matcher (label=value)")
    if ends_at <= starts_at:
        raise ControlTowerError("a silence must end after it starts")
    with engine.begin() as conn:
        return int(
            conn.execute(
                alert_silences.insert()
                .values(matchers=dict(matchers), starts_at=starts_at, ends_at=ends_at,
                        created_by=created_by, comment=comment)
                .returning(alert_silences.c.id)
            ).scalar_one()
        )


def list_silences(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(alert_silences).where(alert_silences.c.ends_at > now).order_by(alert_silences.c.ends_at)
        )
        return [dict(r._mapping) for r in rows]
