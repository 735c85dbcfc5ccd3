"""Rule evaluation: the alert state machine over the SLA table, with an outbox for notifications.

Each rule and matching `sla_status` row is one series (fingerprint = hash of its labels):

    inactive --condition--> pending --held for `for`--> firing --condition false--> resolved
                  (pending --condition false--> inactive; `for: 0` goes straight to firing;
                   firing stays firing until the condition has been false for `keep_firing_for`)

A series whose row left the SLA table follows its rule's `no_data` policy: `ok` (the condition
is false), `breach` (true), `keep` (nothing changes), `alert` (true, with a no-data summary).
Rules may use `volume_ratio`, derived per channel from the minute event rollup.

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

from alerts import derived
from alerts.outbox import Outbox
from alerts.rules import Route, Rule, render, template_fields
from controltower.alertops import (
    ACTIVE,
    acknowledge,
    add_silence,
    list_alerts,
    list_silences,
)
from controltower.schema.alerts import alert_events, alert_silences, alert_state
from controltower.schema.metrics import sla_status

__all__ = ["ACTIVE", "Transition", "acknowledge", "add_silence", "evaluate", "list_alerts", "list_silences"]

log = logging.getLogger(__name__)

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
    deferred: str | None = None  # "throttled" | "digest": decided on, held back by the rule's noise options


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
        **({"impact": dict(state["impact"])} if state.get("impact") else {}),
    }


def _with_impact(annotations: Mapping[str, str], impact: Mapping[str, Any]) -> dict[str, str]:
    """Impact as annotations too: Alertmanager-compatible receivers only read labels and annotations."""
    out = dict(annotations)
    out["orders_at_risk"] = str(impact["orders_at_risk"])
    if "order_value_at_risk" in impact:
        out["order_value_at_risk"] = f"{impact['order_value_at_risk']:.2f}"
    return out



def _no_data_annotations(rule: Rule, labels: Mapping[str, str], previous: Mapping[str, str]) -> dict[str, str]:
    out = dict(previous)
    out["summary"] = (
        f"{labels['sla']} on {labels['channel']}: no data ({rule.name} found no SLA row for this channel)"
    )
    out["no_data"] = "true"
    return out


_STATE_COLUMNS = tuple(c.name for c in alert_state.columns)


class _Run:
    def __init__(
        self, conn: Connection, now: datetime, dashboard_url: str, silences: list[dict[str, Any]], outbox: Outbox
    ) -> None:
        self.conn = conn
        self.now = now
        self.dashboard_url = dashboard_url
        self.silences = silences
        self.outbox = outbox
        self.transitions: list[Transition] = []
        self.final: dict[str, dict[str, Any]] = {}  # fingerprint -> state after this evaluation
        self.rows: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self.upserts: list[dict[str, Any]] = []
        self.touched: list[str] = []
        self.events: list[dict[str, Any]] = []

    def write(self) -> None:
        """Write the evaluation's state changes and history in a few set-based statements."""
        if self.upserts:
            stmt = insert(alert_state)
            self.conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[alert_state.c.fingerprint],
                    set_={c: stmt.excluded[c] for c in _STATE_COLUMNS if c != "fingerprint"},
                ),
                self.upserts,
            )
        if self.touched:
            self.conn.execute(
                alert_state.update()
                .where(alert_state.c.fingerprint.in_(self.touched))
                .values(last_evaluated_at=self.now)
            )
        if self.events:
            self.conn.execute(alert_events.insert(), self.events)

    def snapshot(self, rule: Rule, state: Mapping[str, Any], kind: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
        """The receiver-neutral notification of one alert, with its impact when the rule asks for it."""
        alert = _payload(state, kind, self.dashboard_url)
        if rule.impact and kind != "resolved" and row is not None:
            impact = derived.impact(self.conn, row, self.now)
            alert["impact"] = impact
            alert["annotations"] = _with_impact(alert["annotations"], impact)
        return alert

    def step(self, rule: Rule, labels: dict[str, str], row: Mapping[str, Any] | None, old: dict[str, Any] | None) -> None:
        now = self.now
        fp = fingerprint(labels)
        no_data = row is None and rule.no_data in ("breach", "alert")
        holds = no_data or (row is not None and rule.holds(row))
        prev = old["state"] if old else "inactive"
        if old is None and not holds and rule.no_data in ("ok", "keep"):
            return  # never store inactive series that never fired (no_data breach/alert must remember them)
        state: dict[str, Any] = dict(old) if old else {
            "fingerprint": fp, "rule": rule.name, "state": "inactive", "active_since": None,
            "firing_since": None, "resolved_at": None, "last_notified_at": None,
            "acknowledged_by": None, "acknowledged_at": None, "annotations": {}, "cleared_since": None,
        }
        state.update(
            labels=labels, severity=rule.severity, last_evaluated_at=now,
            dashboard_url=deep_link(self.dashboard_url, labels["sla"], labels["channel"]),
        )
        if row is not None:
            state["last_value"] = rule.numeric(row)
        state.setdefault("last_value", None)
        previous = state.get("annotations") or {}
        if no_data and rule.no_data == "alert":
            state["annotations"] = _no_data_annotations(rule, labels, previous)
        else:
            state["annotations"] = _annotations(rule, row, self.dashboard_url, previous)
        state["summary"] = state["annotations"].get("summary", rule.name)

        notify: str | None = None
        if holds:
            state["cleared_since"] = None
            if prev in ("inactive", "resolved"):
                state.update(
                    state="pending", active_since=now, firing_since=None, resolved_at=None,
                    last_notified_at=None, acknowledged_by=None, acknowledged_at=None,
                )
            if state["state"] == "pending" and now - state["active_since"] >= timedelta(seconds=rule.for_seconds):
                state.update(state="firing", firing_since=now)
            if state["state"] == "firing" and not state["acknowledged_at"]:
                if state["last_notified_at"] is None:
                    notify = "firing"  # newly firing, or a silence or throttle that held it back has ended
                elif rule.repeat_interval_seconds and now - state["last_notified_at"] >= timedelta(
                    seconds=rule.repeat_interval_seconds
                ):
                    notify = "repeat"
        else:
            if prev == "pending":
                state.update(state="inactive", active_since=None)
            elif prev == "firing":
                cleared = state.get("cleared_since") or now
                if now - cleared >= timedelta(seconds=rule.keep_firing_for_seconds):
                    state.update(state="resolved", resolved_at=now, cleared_since=None)
                    if state["last_notified_at"] is not None:
                        notify = "resolved"
                else:
                    state["cleared_since"] = cleared  # keep_firing_for: still firing for a while

        silence = silenced_by(labels, self.silences) if notify else None
        receivers: tuple[str, ...] = ()
        deferred: str | None = None
        if notify and silence is None:
            if rule.digest_interval_seconds:
                deferred = "digest"  # covered by the rule's next digest (`Outbox.add_digest`)
            elif not self.outbox.allows(rule, notify):
                deferred = "throttled"
            else:
                receivers = self.outbox.receivers(rule, labels)
                self.outbox.add(rule, notify, self.snapshot(rule, state, notify, row), receivers)
            if deferred != "throttled":
                state["last_notified_at"] = now

        values = {c: state.get(c) for c in _STATE_COLUMNS}
        if old is not None and all(values[c] == old.get(c) for c in _STATE_COLUMNS if c != "last_evaluated_at"):
            self.touched.append(fp)  # nothing but the evaluation time changed: one UPDATE for all of them
        else:
            self.upserts.append(values)
        self.final[fp] = state
        changed = state["state"] != prev
        if changed:
            self.events.append({
                "at": now, "fingerprint": fp, "rule": rule.name, "from_state": prev, "to_state": state["state"],
                "value": state["last_value"], "labels": labels, "summary": state["summary"],
            })
        if changed or notify:
            self.transitions.append(
                Transition(rule.name, fp, labels, prev, state["state"], state["last_value"],
                           notify if deferred is None else None, receivers, silence is not None, deferred)
            )
            if notify:
                what = deferred or ("silenced" if silence is not None else f"-> {', '.join(receivers) or 'no receivers'}")
                log.info("alert %s %s %s %s", rule.name, fp, notify, what)

    def digests(self, rules: Sequence[Rule], states: Mapping[str, Mapping[str, Any]]) -> None:
        """One summary per digest rule whose interval has passed (see `alerts.outbox`)."""
        merged = {**states, **self.final}
        for rule in rules:
            if not rule.digest_interval_seconds:
                continue
            mine = [s for s in merged.values() if s["rule"] == rule.name]

            def snapshot(state: Mapping[str, Any], kind: str, rule: Rule = rule) -> dict[str, Any]:
                key = (state["labels"]["sla"], state["labels"]["channel"], state["labels"]["window"])
                return self.snapshot(rule, state, kind, self.rows.get(key))

            self.outbox.add_digest(
                rule, mine, snapshot, lambda labels: silenced_by(labels, self.silences) is not None
            )


def _uses_volume(rules: Sequence[Rule]) -> bool:
    return any(r.uses("volume_ratio") or any("{volume_" in t for t in r.annotations.values()) for r in rules)


def evaluate(
    engine: Engine,
    rules: Sequence[Rule],
    now: datetime,
    *,
    dashboard_url: str = DEFAULT_DASHBOARD_URL,
    routes: Sequence[Route] = (),
) -> list[Transition]:
    """Evaluate every rule against the SLA table at `now`; return what changed (one transaction)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    by_name = {r.name: r for r in rules}
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(sla_status))]
        if _uses_volume(rules):
            volumes = derived.volume_by_channel(conn, now)
            empty = {"volume_ratio": None, "volume_last_hour": 0, "volume_usual": None}
            for row in rows:
                row.update(volumes.get(row["channel"], empty))
        states = {
            r.fingerprint: dict(r._mapping)
            for r in conn.execute(
                sa.select(alert_state)
                .where(sa.or_(alert_state.c.rule.in_(list(by_name)), alert_state.c.state.in_(ACTIVE)))
                .with_for_update()
            )
        }
        run = _Run(conn, now, dashboard_url, active_silences(conn, now), Outbox.open(conn, now, rules, tuple(routes)))
        run.rows = {(r["sla"], r["channel"], r["window"]): r for r in rows}
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
        # Series that left the SLA table (or whose rule changed): the rule's no_data policy.
        for fp, old in states.items():
            if fp in seen:
                continue
            rule = by_name.get(old["rule"])
            if rule is None:
                if old["state"] in ACTIVE:
                    _retire(conn, old, now)
                continue
            if rule.no_data == "keep" or (old["state"] not in ACTIVE and rule.no_data == "ok"):
                continue
            run.step(rule, dict(old["labels"]), None, old)
        run.write()
        run.digests(rules, states)
        run.outbox.flush(dashboard_url)
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
