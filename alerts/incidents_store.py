"""Incidents, the I/O part: attach firing alerts, keep the timeline, page once per incident.

An `IncidentBook` is opened by the evaluator in its transaction (reading `hop_health` and the
incidents not resolved, locked) and settled after every rule ran, before the outbox is flushed,
so incident rows, alert state and outbox rows commit together. For the rules it groups (all but
those with a `digest_interval`, which keep their digests):

- every firing alert not yet in an open incident joins the open incident of its key
  (`alerts.incidents.HopMap.cause_of`), or opens one (the first alert, `first = true`, gives the
  notification its details; when several open one together, the one whose own SLA judges the
  cause hop and is most severe goes first, then one whose rule counts the orders at risk
  (`impact`), then by firing time, rule name and channel). It stays there until the incident resolves;
- notifications are per incident: the state machine's firing notifications of its alerts
  (already past silences and the rule's throttle: a silenced or held alert offers nothing) page
  only receivers (by routing) not yet notified for this incident, in one outbox row per
  receiver: the first alert's details, `alerts` = the incident's alerts notified now,
  `incident` = {id, key, title, cause, state, alert_count, channels, opened_at, impact},
  `dedup_key` = "incident-<id>", `summary`/`title` = the incident's title, `groupKey` = its key.
  Repeats follow the first alert's rule's `repeat_interval` while the incident is open and not
  acknowledged; the alerts' own repeat notifications are dropped. An alert joining an
  acknowledged incident still pages receivers not notified for it yet (another team's route: the
  acknowledgement was not theirs); repeats skip alerts whose route is muted now;
- the incident resolves when none of its alerts is pending or firing; receivers that were paged
  get one resolved notification whose text is the one sent when firing plus the resolution time
  (`incidents.resolved_text`), listing the alerts that were notified (not the silenced ones). An incident whose alerts were all silenced paged nobody, and
  sends nothing when it resolves.

Acknowledging an incident is a core operation (`controltower.alertops.acknowledge_incident`).
This module does not decide alert states nor send anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts import content
from alerts.incidents import (
    SEVERITY_RANK,
    Cause,
    Hop,
    HopMap,
    resolved_text,
    sum_impact,
    title,
    worst,
)
from alerts.outbox import Outbox
from alerts.rules import Rule
from controltower.schema.alerts import alert_state, incident_alerts, incident_events, incidents
from controltower.schema.metrics import hop_health
from controltower.vocab import rfc3339

log = logging.getLogger(__name__)

ACTIVE = ("pending", "firing")


@dataclass(frozen=True)
class Offer:
    """A notification the state machine decided on for one alert of a grouped rule."""

    rule: Rule
    kind: str  # firing | repeat | resolved
    alert: dict[str, Any]
    receivers: tuple[str, ...]


@dataclass
class Incident:
    """One incident not resolved at the start of this evaluation (or opened in it)."""

    row: dict[str, Any]
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # fingerprint -> rule, labels, first
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cause: Cause | None = None

    @property
    def id(self) -> int:
        return int(self.row["id"])

    def first(self) -> str | None:
        return next((fp for fp, a in self.alerts.items() if a["first"]), None)


class IncidentBook:
    def __init__(self, conn: Connection, now: datetime, hops: HopMap, grouping: bool = True) -> None:
        self.conn, self.now, self.hops = conn, now, hops
        self.grouping = grouping  # False (`group_by: none`): open incidents only resolve
        self.by_key: dict[str, Incident] = {}
        self.by_fp: dict[str, Incident] = {}

    @classmethod
    def open(cls, conn: Connection, now: datetime, *, grouping: bool = True) -> IncidentBook:
        h = hop_health
        hops = HopMap(
            Hop(r.channel, r.hop, int(r.position), r.health, r.sla, r.cause)
            for r in conn.execute(sa.select(h.c.channel, h.c.hop, h.c.position, h.c.health, h.c.sla, h.c.cause))
        )
        book = cls(conn, now, hops, grouping)
        rows = conn.execute(sa.select(incidents).where(incidents.c.state != "resolved").with_for_update())
        for row in rows:
            inc = Incident(dict(row._mapping))
            book.by_key[inc.row["key"]] = inc
        if book.by_key:
            ids = [inc.id for inc in book.by_key.values()]
            by_id = {inc.id: inc for inc in book.by_key.values()}
            for a in conn.execute(sa.select(incident_alerts).where(incident_alerts.c.incident_id.in_(ids))):
                inc = by_id[a.incident_id]
                inc.alerts[a.fingerprint] = {"rule": a.rule, "labels": dict(a.labels), "first": a.first}
                book.by_fp[a.fingerprint] = inc
        return book

    # -- settling one evaluation ------------------------------------------------------------------

    def settle(
        self,
        finals: Sequence[tuple[Rule, Mapping[str, Mapping[str, Any]]]],
        states: Mapping[str, Mapping[str, Any]],
        changes: Iterable[Mapping[str, Any]],
        offers: Mapping[str, Offer],
        box: Outbox,
        dashboard_url: str,
        rules: Mapping[str, Rule],
        silenced: Callable[[Mapping[str, str]], bool],
        others: Sequence[Mapping[str, Mapping[str, Any]]] = (),
    ) -> None:
        """Apply one evaluation's results: `finals` the grouped rules' series after it, `states`
        every stored series before it, `changes` its state changes, `offers` the notifications
        the state machine decided on (by fingerprint), `others` the other rules' series after it
        (they join no incident, but one may hold them from before grouping was switched off)."""
        current: dict[str, Mapping[str, Any]] = dict(states)
        for final in [*others, *(final for _, final in finals)]:
            current.update(final)
        self._load_missing(current)
        joining = [(rule, fp, s) for rule, final in finals for fp, s in final.items()
                   if self.grouping and s["state"] == "firing" and fp not in self.by_fp]
        for change in changes:
            inc = self.by_fp.get(change["fingerprint"])
            if inc is not None and change["to_state"] in ("resolved", "inactive") and change["from_state"] == "firing":
                inc.events.append(("alert resolved", f"alert resolved: {_name(change)}", {"fingerprint": change["fingerprint"]}))
            elif inc is not None and change["to_state"] == "firing":
                inc.events.append(("alert firing", f"alert firing again: {_name(change)}", {"fingerprint": change["fingerprint"]}))
        for rule, fp, state in sorted(joining, key=lambda j: self._precedence(j[0], j[2])):
            self._attach(rule, fp, state)
        for inc in list(self.by_key.values()):
            self._impact(inc, offers)
            alive = [fp for fp in inc.alerts if (current.get(fp) or {}).get("state") in ACTIVE]
            if not alive:
                self._resolve(inc, current, box, dashboard_url)
            elif self.grouping:
                self._notify(inc, current, offers, box, dashboard_url, rules, silenced)
            self._save(inc)

    def _load_missing(self, current: dict[str, Mapping[str, Any]]) -> None:
        """Attached alerts this evaluation did not read (their rule left the file or was renamed):
        their stored state, so the incident still resolves and its resolved notice lists them."""
        missing = sorted({fp for inc in self.by_key.values() for fp in inc.alerts if fp not in current})
        if missing:
            for row in self.conn.execute(sa.select(alert_state).where(alert_state.c.fingerprint.in_(missing))):
                current[row.fingerprint] = dict(row._mapping)

    def _precedence(self, rule: Rule, state: Mapping[str, Any]) -> tuple[Any, ...]:
        labels = state["labels"]
        cause = self.hops.cause_of(labels)
        return (labels.get("sla") != cause.sla, SEVERITY_RANK.get(rule.severity, 9), not rule.impact,
                state.get("firing_since") or self.now, rule.name, labels.get("channel", ""))

    def _attach(self, rule: Rule, fp: str, state: Mapping[str, Any]) -> None:
        labels = dict(state["labels"])
        cause = self.hops.cause_of(labels)
        inc = self.by_key.get(cause.key)
        first = inc is None
        if inc is None:
            text = title(cause, self.hops, [labels.get("channel", "")], self.now)
            row = self.conn.execute(
                incidents.insert().values(
                    key=cause.key, state="open", title=text, cause=cause.cause, severity=rule.severity,
                    opened_at=self.now, repeat_interval_seconds=rule.repeat_interval_seconds, updated_at=self.now,
                ).returning(*incidents.c)
            ).one()
            inc = Incident(dict(row._mapping), cause=cause)
            inc.events.append(("opened", f"opened: {text}", {"key": cause.key}))
            self.by_key[cause.key] = inc
            log.info("incident %s opened: %s", inc.id, text)
        self.conn.execute(incident_alerts.insert().values(
            incident_id=inc.id, fingerprint=fp, rule=rule.name, labels=labels, attached_at=self.now, first=first))
        inc.alerts[fp] = {"rule": rule.name, "labels": labels, "first": first}
        inc.events.append(("alert attached", f"alert attached: {rule.name} on {labels.get('channel', '')}: "
                           f"{state.get('summary') or ''}", {"fingerprint": fp, "rule": rule.name}))
        self.by_fp[fp] = inc

    def _notify(self, inc: Incident, current: Mapping[str, Mapping[str, Any]], offers: Mapping[str, Offer],
                box: Outbox, dashboard_url: str, rules: Mapping[str, Rule],
                silenced: Callable[[Mapping[str, str]], bool]) -> None:
        paging = [(fp, offers[fp]) for fp in inc.alerts if fp in offers and offers[fp].kind == "firing"]
        notified = list(inc.row["notified_receivers"] or [])
        wanted: list[str] = []
        for _, offer in paging:
            wanted += [r for r in offer.receivers if r not in wanted]
        fresh = [r for r in wanted if r not in notified]
        first = inc.first()
        if fresh:
            paging.sort(key=lambda fo: fo[0] != first)
            self._queue(inc, "firing", [o.alert for _, o in paging], fresh, box, dashboard_url)
            return
        if inc.row["state"] != "open":
            return  # acknowledged: no repeats until it resolves (a receiver never told is still paged, above)
        every = inc.row["repeat_interval_seconds"]
        last = inc.row["last_notified_at"]
        if not (notified and every and last is not None and self.now - last >= timedelta(seconds=every)):
            return
        firing = [fp for fp in inc.alerts if (current.get(fp) or {}).get("state") == "firing"
                  and not silenced(inc.alerts[fp]["labels"]) and not box.muted(inc.alerts[fp]["labels"])]
        firing.sort(key=lambda fp: fp != first)
        if firing:
            self._queue(inc, "repeat", [content.payload(current[fp], "repeat", dashboard_url) for fp in firing],
                        notified, box, dashboard_url)

    def _resolve(self, inc: Incident, current: Mapping[str, Mapping[str, Any]], box: Outbox, dashboard_url: str) -> None:
        inc.row.update(state="resolved", resolved_at=self.now)
        inc.events.append(("resolved", f"resolved: none of its {len(inc.alerts)} alerts fires any more", {}))
        log.info("incident %s resolved", inc.id)
        notified = list(inc.row["notified_receivers"] or [])
        if not notified:
            return
        first = inc.first()
        done = sorted((fp for fp in inc.alerts if fp in current), key=lambda fp: fp != first)
        # the alerts that were notified (a silenced or held one never was): what the page told of
        done = [fp for fp in done if current[fp].get("last_notified_at") is not None] or done
        snapshots = []
        for fp in done:
            state = dict(current[fp])
            state.setdefault("resolved_at", self.now)
            if state.get("resolved_at") is None:
                state["resolved_at"] = self.now  # pending -> inactive: ended now
            snapshots.append(content.payload(state, "resolved", dashboard_url))
        if snapshots:
            self._queue(inc, "resolved", snapshots, notified, box, dashboard_url)

    def _queue(self, inc: Incident, kind: str, alerts: list[dict[str, Any]], receivers: Sequence[str],
               box: Outbox, dashboard_url: str) -> None:
        if kind == "firing" and not inc.row.get("summary"):
            inc.row["summary"] = self._title(inc)  # the text the resolved notification repeats
        text = (resolved_text(inc.row["summary"] or inc.row["title"], self.now) if kind == "resolved"
                else self._title(inc))
        payload = {
            **alerts[0], "kind": kind, "status": "resolved" if kind == "resolved" else "firing", "alerts": alerts,
            "groupKey": inc.row["key"], "groupLabels": {"incident": inc.row["key"]}, "externalURL": dashboard_url,
            "dedup_key": f"incident-{inc.id}", "title": text, "summary": text,
            "incident": self._incident_json(inc, text),
        }
        box.add_rows(str(alerts[0]["rule"]), [
            {"fingerprint": alerts[0]["fingerprint"], "rule": alerts[0]["rule"], "receiver": r, "kind": kind,
             "payload": payload, "status": "pending", "attempts": 0, "created_at": self.now,
             "next_attempt_at": self.now, "group_key": inc.row["key"], "alert_count": len(alerts)}
            for r in receivers
        ])
        if kind != "resolved":
            inc.row["last_notified_at"] = self.now
            inc.row["notified_receivers"] = list(dict.fromkeys([*(inc.row["notified_receivers"] or []), *receivers]))
        inc.events.append(("notified", f"{kind} notification to {', '.join(receivers)}",
                           {"kind": kind, "receivers": list(receivers), "alerts": len(alerts)}))

    def _title(self, inc: Incident) -> str:
        if inc.row["state"] == "resolved":
            return str(inc.row["title"])
        cause = inc.cause or self._cause_of(inc)
        channels = [a["labels"].get("channel", "") for a in inc.alerts.values()]
        return title(cause, self.hops, channels, inc.row["opened_at"])

    def _cause_of(self, inc: Incident) -> Cause:
        key = str(inc.row["key"])
        kind, _, name = key.partition(":")
        if kind == "hop":
            hop = name
            return Cause(key, hop, inc.row["cause"], next((h.sla or "" for h in self.hops.hops if h.hop == hop), ""))
        return Cause(key, None, inc.row["cause"], name)

    def _incident_json(self, inc: Incident, text: str) -> dict[str, Any]:
        return {
            "id": inc.id, "key": inc.row["key"], "title": text, "cause": inc.row["cause"], "state": inc.row["state"],
            "alert_count": len(inc.alerts), "channels": _channels(inc),
            "opened_at": rfc3339(inc.row["opened_at"]), "resolved_at": rfc3339(inc.row.get("resolved_at")),
            "impact": {k: v for k, v in (inc.row.get("impact") or {}).items() if k != "by_alert"},
        }

    @staticmethod
    def _impact(inc: Incident, offers: Mapping[str, Offer]) -> None:
        """Impact summed over its alerts, each as of its latest notification that carried one."""
        by_alert = dict((inc.row.get("impact") or {}).get("by_alert") or {})
        for fp in inc.alerts:
            offer = offers.get(fp)
            if offer is not None and offer.alert.get("impact"):
                by_alert[fp] = offer.alert["impact"]
        inc.row["impact"] = {**sum_impact(by_alert.values()), "by_alert": by_alert}

    def _save(self, inc: Incident) -> None:
        values = {
            "state": inc.row["state"], "resolved_at": inc.row.get("resolved_at"), "title": self._title(inc),
            "severity": worst(a["labels"].get("severity", "info") for a in inc.alerts.values()),
            "summary": inc.row.get("summary"), "last_notified_at": inc.row["last_notified_at"],
            "notified_receivers": list(inc.row["notified_receivers"] or []), "channels": _channels(inc),
            "impact": inc.row["impact"], "updated_at": self.now,
        }
        if all(inc.row.get(k) == v for k, v in values.items() if k not in ("updated_at", "impact")) and not inc.events:
            return
        self.conn.execute(incidents.update().where(incidents.c.id == inc.id).values(**values))
        inc.row.update(values)
        if inc.events:
            self.conn.execute(incident_events.insert(), [
                {"incident_id": inc.id, "at": self.now, "kind": kind, "text": text, "detail": detail}
                for kind, text, detail in inc.events
            ])
            inc.events.clear()


def _channels(inc: Incident) -> list[str]:
    return sorted({a["labels"].get("channel", "") for a in inc.alerts.values()})


def _name(change: Mapping[str, Any]) -> str:
    return f"{change['rule']} on {dict(change['labels']).get('channel', '')}"
