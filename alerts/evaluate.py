"""Rule evaluation: the I/O shell around the pure state machine (`alerts.state`).

One cycle reads the SLA table (plus derived volumes), the stored series and the active silences
once, then evaluates each rule in isolation: for every matching `sla_status` row (and every
stored series whose row vanished, by the rule's `no_data` policy) it takes the next state from
`alerts.state.transition`, renders the text (`alerts.content`) and lets the outbox route,
throttle or digest the notifications (`alerts.outbox`). A rule that fails (a query, a template,
a value) loses only its own results: its queries run on savepoints, its buffered results are
dropped, it is logged and recorded with its error, and the other rules go on. With incident grouping (`incidents=` the rules file's
`IncidentPolicy`), the notifications of every rule without a digest are handed to the incident
book (`alerts.incidents_store`), which pages once per incident; should that step fail, they go
out per rule as without incidents, so no page is lost. The results are
written in one batch (state, history in `alert_events`, outbox rows); should that fail, rule by
rule on savepoints, so only the culprit is lost. The cycle's success time, the per-rule errors
and the impact amounts ignored (`alerts.health`) and a due watchdog notification
(`alerts.watchdog`) land in the same transaction, so a process that dies between evaluating and
sending loses nothing and sends nothing twice. Evaluations are serialized by a transaction-level
advisory lock, so two running at once (a leader and a standby during a takeover, or one by hand)
evaluate one after the other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from alerts import content, derived, health, watchdog
from alerts.content import fingerprint, series_labels, silenced_by
from alerts.incidents import IncidentPolicy
from alerts.incidents_store import IncidentBook, Offer
from alerts.outbox import Outbox
from alerts.rules import Route, Rule, Watchdog
from alerts.state import AlertState, observe, transition
from controltower.alertops import ACTIVE, acknowledge, add_silence, list_alerts, list_silences
from controltower.schema.alerts import alert_events, alert_silences, alert_state
from controltower.schema.metrics import sla_status
from controltower.vocab import rfc3339

__all__ = [
    "ACTIVE", "Transition", "acknowledge", "add_silence", "evaluate", "fingerprint", "list_alerts",
    "list_silences", "rfc3339",
]

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8501"
_STATE_COLUMNS = tuple(c.name for c in alert_state.columns)


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
    deferred: str | None = None  # "throttled" | "digest" | "muted": decided on, held back (muted: by a route's time interval)


def active_silences(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(alert_silences).where(alert_silences.c.starts_at <= now, alert_silences.c.ends_at > now)
    )
    return [dict(r._mapping) for r in rows]


def _new_series(fp: str, rule: Rule) -> dict[str, Any]:
    return {"fingerprint": fp, "rule": rule.name, "annotations": {}, **AlertState().as_dict()}


class _RuleRun:
    """One rule's evaluation in one cycle: its series' steps, buffered until `write`."""

    def __init__(self, conn: Connection, now: datetime, dashboard_url: str, silences: list[dict[str, Any]],
                 outbox: Outbox, rows: Mapping[tuple[str, str, str], Mapping[str, Any]], rule: Rule,
                 grouped: bool = False) -> None:
        self.conn, self.now, self.dashboard_url, self.silences = conn, now, dashboard_url, silences
        self.outbox, self.rows, self.rule = outbox, rows, rule
        self.grouped = grouped and not rule.digest_interval_seconds  # notifies per incident
        self.offers: dict[str, Offer] = {}  # fingerprint -> notification, for the incident book
        self.transitions: list[Transition] = []
        self.final: dict[str, dict[str, Any]] = {}  # fingerprint -> state after this evaluation
        self.upserts: list[dict[str, Any]] = []
        self.touched: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.ignored_amounts = 0

    def snapshot(self, state: Mapping[str, Any], kind: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
        """The receiver-neutral notification of one alert, with its impact when the rule asks for it."""
        alert = content.payload(state, kind, self.dashboard_url)
        if self.rule.impact and kind != "resolved" and row is not None:
            with self.conn.begin_nested():  # a failing query must not abort the cycle's transaction
                impact = derived.impact(self.conn, row, self.now, milestone=self.rule.impact_milestone,
                                        amounts=self.rule.impact_amounts)
            self.ignored_amounts += impact.pop("amounts_ignored", 0)
            alert["impact"] = impact
            alert["annotations"] = content.with_impact(alert["annotations"], impact)
        return alert

    def step(self, labels: dict[str, str], row: Mapping[str, Any] | None, old: dict[str, Any] | None) -> None:
        rule, now = self.rule, self.now
        fp = fingerprint(labels)
        holds = observe(rule, row)
        if old is None and not holds and rule.no_data in ("ok", "keep"):
            return  # never store inactive series that never fired (no_data breach/alert must remember them)
        state: dict[str, Any] = dict(old) if old else _new_series(fp, rule)
        prev = state["state"]
        muted = self.outbox.muted(labels)  # route in a mute time interval: held like a throttled one
        nxt, notes = transition(
            AlertState.of(state), holds, now, rule,
            silenced=silenced_by(labels, self.silences) is not None,
            throttled=muted or (not rule.digest_interval_seconds and not self.outbox.allows(rule, "firing")),
        )
        notify = notes[0].kind if notes else None
        silenced = bool(notes and notes[0].silenced)
        deferred: str | None = None
        receivers: tuple[str, ...] = ()
        if notes and (notes[0].held or (muted and notify == "resolved")):
            deferred = "muted" if muted else "throttled"  # held: still due next evaluation; resolved: dropped
        elif notify and not silenced and rule.digest_interval_seconds:
            deferred = "digest"  # covered by the rule's next digest (`Outbox.add_digest`)
        state.update(nxt.as_dict())
        state.update(
            labels=labels, severity=rule.severity, last_evaluated_at=now,
            dashboard_url=content.deep_link(self.dashboard_url, labels["sla"], labels["channel"]),
        )
        if row is not None:
            state["last_value"] = rule.numeric(row)
        state.setdefault("last_value", None)
        previous = state.get("annotations") or {}
        if row is None and rule.no_data == "alert":
            state["annotations"] = content.no_data_annotations(rule, labels, previous)
        else:
            state["annotations"] = content.annotations(rule, row, self.dashboard_url, previous)
        state["summary"] = state["annotations"].get("summary", rule.name)
        if notify and not silenced and deferred is None:
            receivers = self.outbox.receivers(rule, labels)
            if self.grouped:
                self.offers[fp] = Offer(rule, notify, self.snapshot(state, notify, row), receivers)
                self.outbox.note_sending(rule, notify)
            else:
                self.outbox.add(rule, notify, self.snapshot(state, notify, row), receivers)
        self._record(fp, labels, state, old, prev, notify, receivers, silenced, deferred)

    def _record(self, fp: str, labels: dict[str, str], state: dict[str, Any], old: Mapping[str, Any] | None,
                prev: str, notify: str | None, receivers: tuple[str, ...], silenced: bool, deferred: str | None) -> None:
        values = {c: state.get(c) for c in _STATE_COLUMNS}
        if old is not None and all(values[c] == old.get(c) for c in _STATE_COLUMNS if c != "last_evaluated_at"):
            self.touched.append(fp)  # nothing but the evaluation time changed: one UPDATE for all of them
        else:
            self.upserts.append(values)
        self.final[fp] = state
        changed = state["state"] != prev
        if changed:
            self.events.append({
                "at": self.now, "fingerprint": fp, "rule": self.rule.name, "from_state": prev,
                "to_state": state["state"], "value": state["last_value"], "labels": labels, "summary": state["summary"],
            })
        if changed or notify:
            self.transitions.append(Transition(
                self.rule.name, fp, labels, prev, state["state"], state["last_value"],
                notify if deferred is None else None, receivers, silenced, deferred,
            ))
            if notify:
                what = deferred or ("silenced" if silenced else f"-> {', '.join(receivers) or 'no receivers'}")
                log.info("alert %s %s %s %s", self.rule.name, fp, notify, what)

    def digest(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """One summary of this rule's alerts when its digest interval has passed (see `alerts.outbox`)."""
        if not self.rule.digest_interval_seconds:
            return
        merged = {**states, **self.final}
        mine = [s for s in merged.values() if s["rule"] == self.rule.name]

        def snapshot(state: Mapping[str, Any], kind: str) -> dict[str, Any]:
            key = (state["labels"]["sla"], state["labels"]["channel"], state["labels"]["window"])
            return self.snapshot(state, kind, self.rows.get(key))

        self.outbox.add_digest(self.rule, mine, snapshot, lambda labels: silenced_by(labels, self.silences) is not None)


def _write(conn: Connection, now: datetime, runs: Sequence[_RuleRun]) -> None:
    """Write the state changes and history of `runs` in a few set-based statements."""
    upserts = [u for run in runs for u in run.upserts]
    touched = [fp for run in runs for fp in run.touched]
    events = [e for run in runs for e in run.events]
    if upserts:
        stmt = insert(alert_state)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[alert_state.c.fingerprint],
                set_={c: stmt.excluded[c] for c in _STATE_COLUMNS if c != "fingerprint"},
            ),
            upserts,
        )
    if touched:
        conn.execute(alert_state.update().where(alert_state.c.fingerprint.in_(touched)).values(last_evaluated_at=now))
    if events:
        conn.execute(alert_events.insert(), events)


def _uses_volume(rules: Sequence[Rule]) -> bool:
    return any(r.uses("volume_ratio") or any("{volume_" in t for t in r.annotations.values()) for r in rules)


def _read(conn: Connection, rules: Sequence[Rule], now: datetime) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The SLA rows (with derived volumes) and the stored series of these rules, locked."""
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
            .where(sa.or_(alert_state.c.rule.in_([r.name for r in rules]), alert_state.c.state.in_(ACTIVE)))
            .with_for_update()
        )
    }
    return rows, states


def _evaluate_rule(run: _RuleRun, rows: Sequence[Mapping[str, Any]], states: Mapping[str, dict[str, Any]]) -> None:
    rule = run.rule
    seen: set[str] = set()
    for row in rows:
        if not rule.matches(row):
            continue
        labels = series_labels(rule, row)
        fp = fingerprint(labels)
        if fp in seen:
            continue
        seen.add(fp)
        run.step(labels, row, states.get(fp))
    # Series that left the SLA table: the rule's no_data policy.
    for fp, old in states.items():
        if fp in seen or old["rule"] != rule.name:
            continue
        if rule.no_data == "keep" or (old["state"] not in ACTIVE and rule.no_data == "ok"):
            continue
        run.step(dict(old["labels"]), None, old)
    run.digest(states)


def evaluate(
    engine: Engine,
    rules: Sequence[Rule],
    now: datetime,
    *,
    dashboard_url: str = DEFAULT_DASHBOARD_URL,
    routes: Sequence[Route] = (),
    watchdog_rule: Watchdog | None = None,
    interval_seconds: float | None = None,
    incidents: IncidentPolicy | None = None,
) -> list[Transition]:
    """Evaluate every rule against the SLA table at `now`, each in isolation; return what changed.

    `incidents`: the rules file's incident policy; None (or `group_by: none`) notifies per rule."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    by_name = {r.name: r for r in rules}
    transitions: list[Transition] = []
    try:
        with engine.begin() as conn:
            # One evaluation at a time (a takeover's overlap, `alerts evaluate` by hand): the next
            # one starts from this one's committed state instead of racing it into the open-key
            # index of incidents (and out to per-rule pages) or re-sending what it just sent.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('controltower.alerts.evaluate'))"))
            rows, states = _read(conn, rules, now)
            silences = active_silences(conn, now)
            box = Outbox.open(conn, now, rules, tuple(routes))
            grouped = incidents is not None and incidents.enabled
            # grouping off: incidents left open (the policy changed) still resolve, nothing joins them
            book = IncidentBook.open(conn, now, grouping=grouped)
            by_key = {(r["sla"], r["channel"], r["window"]): r for r in rows}
            failures: dict[str, str] = {}
            runs: list[_RuleRun] = []
            for rule in rules:
                run = _RuleRun(conn, now, dashboard_url, silences, box, by_key, rule, grouped)
                try:
                    _evaluate_rule(run, rows, states)
                except Exception as exc:  # noqa: BLE001 - the rule is the isolation boundary: the others go on
                    log.exception("alert rule %s failed; the other rules go on", rule.name)
                    failures[rule.name] = health.describe(exc)
                    box.discard(rule.name)
                    continue
                runs.append(run)
            for fp, old in list(states.items()):
                if old["rule"] not in by_name and old["state"] in ACTIVE:
                    states[fp] = _retire(conn, old, now)  # before the incidents: theirs may resolve now
            if book.by_key or grouped:
                _settle(conn, book, runs, states, box, dashboard_url, by_name, silences)
            runs = _persist(conn, now, runs, box, dashboard_url, failures)
            transitions = [t for run in runs for t in run.transitions]
            ignored = {run.rule.name: run.ignored_amounts for run in runs}
            health.record_cycle(conn, now, [r.name for r in rules], failures, ignored, interval_seconds)
            if watchdog_rule is not None:
                watchdog.send_if_due(conn, watchdog_rule, now, dashboard_url, failing=sorted(failures))
    except sa.exc.SQLAlchemyError as exc:
        health.record_cycle_failure(engine, now, health.describe(exc), interval_seconds)
        raise
    return transitions


def _settle(conn: Connection, book: IncidentBook, runs: Sequence[_RuleRun], states: Mapping[str, dict[str, Any]],
            box: Outbox, dashboard_url: str, by_name: Mapping[str, Rule], silences: list[dict[str, Any]]) -> None:
    """Hand the grouped rules' results to the incident book; if that fails, notify per rule instead."""
    grouped = [run for run in runs if run.grouped]
    offers = {fp: offer for run in grouped for fp, offer in run.offers.items()}
    try:
        with conn.begin_nested():
            book.settle(
                [(run.rule, run.final) for run in grouped], states, [e for run in runs for e in run.events],
                offers, box, dashboard_url, by_name, lambda labels: silenced_by(labels, silences) is not None,
                others=[run.final for run in runs if not run.grouped],
            )
    except Exception:  # noqa: BLE001 - incidents are a grouping of pages: failing, they must not cost the pages
        log.exception("incident grouping failed; this evaluation notifies per rule")
        box.extra.clear()
        for offer in offers.values():
            box.add(offer.rule, offer.kind, offer.alert, offer.receivers)


def _persist(conn: Connection, now: datetime, runs: list[_RuleRun], box: Outbox, dashboard_url: str,
             failures: dict[str, str]) -> list[_RuleRun]:
    """Write every rule's results at once; if that fails, rule by rule, so only the culprit is lost."""
    try:
        with conn.begin_nested():
            _write(conn, now, runs)
            box.flush(dashboard_url)
        return runs
    except sa.exc.SQLAlchemyError:
        log.warning("writing the alert evaluation failed; writing rule by rule to isolate the failure")
    kept = []
    for run in runs:
        try:
            with conn.begin_nested():
                _write(conn, now, [run])
                box.flush(dashboard_url, only=run.rule.name)
        except sa.exc.SQLAlchemyError as exc:
            log.exception("alert rule %s could not be written; the other rules go on", run.rule.name)
            failures[run.rule.name] = health.describe(exc)
            continue
        kept.append(run)
    return kept


def _retire(conn: Connection, old: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A rule removed from the file: its active series end quietly (no notification of their own;
    an incident they were in resolves as usual and says so). Returns the series as ended."""
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
    return {**old, "state": to_state, "resolved_at": now if to_state == "resolved" else None, "last_evaluated_at": now}
