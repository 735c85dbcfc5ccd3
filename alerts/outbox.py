"""The notification outbox as evaluation fills it: grouping, routing, throttling and digests.

Evaluation hands every notification it decides on to an `Outbox`; at the end of the same
transaction `flush` writes `alert_notifications` rows:

- grouping: alerts of one rule notified in the same evaluation travel together, one row per
  receiver carrying them all (`payload.alerts`, like Alertmanager grouping by `alertname`);
- routing: each alert goes to the receivers of the first route whose matchers equal its
  labels, else to its rule's receivers;
- throttling: a rule with `max_notifications_per_hour` sends at most that many notifications
  in any hour; firing and repeat notifications past it are deferred (their alerts stay
  un-notified and are retried on the next evaluation), resolved ones are never held back;
- digests: a rule with `digest_interval` sends its first notification at once, then one
  summary per interval while any of its alerts fires (plus those resolved since the last);
- time intervals: an alert whose route is muted now (`muted`) is held like a throttled one by
  the evaluator and left out of digests.
- incidents: with incident grouping on, the alerts of the other rules notify per incident
  (`alerts.incidents_store`), which hands finished rows to `add_rows`; `note_sending` keeps the
  per-rule throttle counting them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alerts.rules import Route, Rule, muted, route
from controltower.schema.alerts import alert_notifications

KIND_ORDER = ("firing", "repeat", "digest", "resolved")


def group_key(rule: str) -> str:
    escaped = rule.replace("\\", "\\\\").replace('"', '\\"')
    return '{}:{alertname="' + escaped + '"}'


@dataclass
class RuleHistory:
    """What the outbox already holds for one rule: notifications in the last hour, the latest."""

    last_hour: int = 0
    last_sent: datetime | None = None


@dataclass
class Outbox:
    conn: Connection
    now: datetime
    routes: tuple[Route, ...] = ()
    history: dict[str, RuleHistory] = field(default_factory=dict)
    # (rule, receiver) -> [(kind, alert snapshot)]
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    rules_sending: set[str] = field(default_factory=set)
    # rows built elsewhere (an incident's notifications, `alerts.incidents_store`), by rule
    extra: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def open(cls, conn: Connection, now: datetime, rules: Iterable[Rule], routes: tuple[Route, ...]) -> Outbox:
        box = cls(conn, now, tuple(routes))
        watched = [r for r in rules if r.max_notifications_per_hour or r.digest_interval_seconds]
        if watched:
            longest = max([3600.0, *(r.digest_interval_seconds or 0 for r in watched)])
            t = alert_notifications
            hour_ago = now - timedelta(hours=1)
            rows = conn.execute(
                sa.select(
                    t.c.rule,
                    sa.func.count(sa.distinct(t.c.created_at)).filter(t.c.created_at > hour_ago, t.c.kind != "resolved"),
                    sa.func.max(t.c.created_at),
                )
                .where(t.c.rule.in_([r.name for r in watched]), t.c.created_at > now - timedelta(seconds=longest))
                .group_by(t.c.rule)
            )
            for name, last_hour, last_sent in rows:
                box.history[name] = RuleHistory(int(last_hour or 0), last_sent)
        return box

    def receivers(self, rule: Rule, labels: Mapping[str, str]) -> tuple[str, ...]:
        return route(self.routes, rule, labels)

    def muted(self, labels: Mapping[str, str]) -> bool:
        """The route these labels take is in a mute time interval (or outside its active ones) now."""
        return muted(self.routes, labels, self.now)

    def allows(self, rule: Rule, kind: str) -> bool:
        """Whether the throttle lets a notification of `kind` for `rule` out in this evaluation."""
        if kind == "resolved" or not rule.max_notifications_per_hour or rule.name in self.rules_sending:
            return True  # one evaluation's alerts of one rule are one (grouped) notification
        used = self.history.get(rule.name, RuleHistory()).last_hour
        return used < rule.max_notifications_per_hour

    def digest_due(self, rule: Rule) -> bool:
        last = self.history.get(rule.name, RuleHistory()).last_sent
        return last is None or self.now - last >= timedelta(seconds=rule.digest_interval_seconds or 0)

    def add(self, rule: Rule, kind: str, alert: dict[str, Any], receivers: Iterable[str]) -> None:
        self.add_named(rule.name, kind, alert, receivers)

    def add_named(self, rule: str, kind: str, alert: dict[str, Any], receivers: Iterable[str]) -> None:
        if kind != "resolved":  # resolved notices pass the throttle without opening it for others
            self.rules_sending.add(rule)
        for name in receivers:
            self.groups[(rule, name)].append((kind, alert))

    def note_sending(self, rule: Rule, kind: str) -> None:
        """A notification of `rule` goes out in this evaluation by another path (an incident):
        the throttle counts this evaluation as one of the rule's notifications."""
        if kind != "resolved":
            self.rules_sending.add(rule.name)

    def add_rows(self, rule: str, rows: Iterable[dict[str, Any]]) -> None:
        """Queue finished outbox rows (an incident's notifications), written by `flush` like the others."""
        self.extra += [(rule, row) for row in rows]

    def add_digest(
        self,
        rule: Rule,
        states: Iterable[Mapping[str, Any]],
        snapshot: Callable[[Mapping[str, Any], str], dict[str, Any]],
        silenced: Callable[[Mapping[str, str]], bool],
    ) -> int:
        """Queue one summary of `rule`'s firing alerts (and those resolved since the last one)."""
        if not self.digest_due(rule) or not self.allows(rule, "digest"):
            return 0
        since = self.history.get(rule.name, RuleHistory()).last_sent or (
            self.now - timedelta(seconds=rule.digest_interval_seconds or 0)
        )
        picked = []
        for state in states:
            if silenced(state["labels"]) or self.muted(state["labels"]):
                continue
            if state["state"] == "firing" and not state.get("acknowledged_at"):
                picked.append((state, "firing"))
            elif (state["state"] == "resolved" and state.get("last_notified_at") is not None
                  and state.get("resolved_at") is not None and state["resolved_at"] > since):
                picked.append((state, "resolved"))
        if not picked:
            return 0
        picked.sort(key=lambda sk: (sk[1] != "firing", sorted(sk[0]["labels"].items())))
        for state, kind in picked:
            self.add(rule, "digest", snapshot(state, kind), self.receivers(rule, state["labels"]))
        return len(picked)

    def discard(self, rule: str) -> None:
        """Forget what `rule` queued in this evaluation (its evaluation failed)."""
        for key in [k for k in self.groups if k[0] == rule]:
            del self.groups[key]
        self.extra = [(r, row) for r, row in self.extra if r != rule]
        self.rules_sending.discard(rule)

    def flush(self, external_url: str, *, only: str | None = None) -> int:
        """Write one outbox row per (rule, receiver) group (of rule `only`, if given); return how many rows."""
        rows = []
        for (rule_name, receiver), items in sorted(self.groups.items()):
            if only is not None and rule_name != only:
                continue
            kinds = {k for k, _ in items}
            kind = next(k for k in KIND_ORDER if k in kinds)
            alerts = sorted((a for _, a in items), key=lambda a: (a["status"] != "firing", sorted(a["labels"].items())))
            status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
            key = group_key(rule_name)
            payload = {
                **alerts[0], "kind": kind, "status": status, "alerts": alerts, "groupKey": key,
                "groupLabels": {"alertname": rule_name}, "externalURL": external_url,
            }
            rows.append({
                "fingerprint": alerts[0]["fingerprint"], "rule": rule_name, "receiver": receiver, "kind": kind,
                "payload": payload, "status": "pending", "attempts": 0, "created_at": self.now,
                "next_attempt_at": self.now, "group_key": key, "alert_count": len(alerts),
            })
        rows += [row for rule_name, row in self.extra if only is None or rule_name == only]
        if rows:
            self.conn.execute(alert_notifications.insert(), rows)
        return len(rows)
