"""Alert rules: the YAML model, validated with `file:line` errors.

A rule is a condition on fields of `sla_status` rows (`field`, `op`, `value`, plus any `and:`
conditions) matched by SLA, channel and window; it fires once the condition has held for `for`
and keeps firing for `keep_firing_for` after it clears. `no_data` says what a series whose row
vanished means; `routes` pick receivers by label; `max_notifications_per_hour` and
`digest_interval` keep a noisy rule quiet. Receivers are modelled in `alerts.receivers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alerts import receivers as rv
from alerts.conditions import HEALTH_RANK, Condition, parse_condition, short
from alerts.derived import DEFAULT_IMPACT_AMOUNTS, DEFAULT_IMPACT_MILESTONE
from alerts.incidents import IncidentPolicy, parse_policy
from alerts.receivers import LABEL, NAME, PAGERDUTY_URL, RECEIVER_TYPES, Receiver
from alerts.templates import check_template, render, template_fields
from alerts.timeintervals import TimeInterval, contains, interval_names, parse_time_intervals
from controltower.yamlfile import Located, load

__all__ = [
    "PAGERDUTY_URL", "RECEIVER_TYPES", "Receiver", "Route", "Rule", "RuleSet", "TimeInterval", "Watchdog", "load_rules",
    "muted", "parse", "render", "route_for", "template_fields",
]

DEFAULT_FILE = Path(__file__).with_name("alerts.yaml")

SEVERITIES = ("page", "ticket", "info")
NO_DATA = ("ok", "breach", "keep", "alert")

_RULE_KEYS = {
    "name", "sla", "channel", "window", "field", "op", "value", "for", "severity", "labels",
    "annotations", "runbook_url", "repeat_interval", "receivers", "description",
    "and", "keep_firing_for", "no_data", "impact", "max_notifications_per_hour", "digest_interval",
}
_NAME = NAME
_LABEL = LABEL


@dataclass(frozen=True)
class Rule:
    name: str
    sla: str
    field: str
    op: str
    value: float | str
    channel: str | None = None
    window: str = "1h"
    for_seconds: float = 0.0
    severity: str = "ticket"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runbook_url: str | None = None
    repeat_interval_seconds: float | None = None
    receivers: tuple[str, ...] = ()
    where: str = ""
    also: tuple[Condition, ...] = ()  # the `and:` conditions
    keep_firing_for_seconds: float = 0.0
    no_data: str = "ok"
    impact: bool = False
    impact_milestone: str = DEFAULT_IMPACT_MILESTONE  # whose event carries the order value
    impact_amounts: tuple[str, ...] = DEFAULT_IMPACT_AMOUNTS  # its attributes, first present wins
    max_notifications_per_hour: int | None = None
    digest_interval_seconds: float | None = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return (
            (self.sla == "*" or row["sla"] == self.sla)
            and (self.channel is None or row["channel"] == self.channel)
            and row["window"] == self.window
        )

    def observed(self, row: Mapping[str, Any]) -> Any:
        return row.get(self.field)

    def holds(self, row: Mapping[str, Any]) -> bool:
        """Every condition on `row`; a missing (NULL) value never holds."""
        return Condition(self.field, self.op, self.value).holds(row) and all(c.holds(row) for c in self.also)

    def uses(self, name: str) -> bool:
        return self.field == name or any(c.field == name for c in self.also)

    def numeric(self, row: Mapping[str, Any]) -> float | None:
        """The observed value as a number for storage (health as its rank)."""
        observed = row.get(self.field)
        if observed is None:
            return None
        if self.field == "health":
            rank = HEALTH_RANK.get(str(observed))
            return float(rank) if rank is not None else None
        return float(observed)


@dataclass(frozen=True)
class Route:
    """Alerts whose labels equal every `match` value go to `receivers` (first matching route wins).

    While one of `mute` contains the time, or `active` is given and none contains it, the route
    is muted: its alerts change state but their notifications wait (firing, repeat) or are
    dropped (resolved), as Alertmanager's mute_time_intervals / active_time_intervals.
    """

    match: dict[str, str]
    receivers: tuple[str, ...]
    mute: tuple[TimeInterval, ...] = ()
    active: tuple[TimeInterval, ...] = ()

    def applies(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items())

    def muted_by(self, now: datetime) -> str | None:
        """Why the route sends nothing at `now` (the interval), or None when it sends."""
        for interval in self.mute:
            if contains(interval, now):
                return f"mute_time_intervals {interval.name}"
        if self.active and not any(contains(i, now) for i in self.active):
            return f"outside active_time_intervals {', '.join(i.name for i in self.active)}"
        return None


@dataclass(frozen=True)
class Watchdog:
    """An always-firing notification sent every `interval_seconds` by every successful evaluation
    cycle (Alertmanager's Watchdog): a receiver that stops getting it knows alerting has stopped."""

    interval_seconds: float
    receivers: tuple[str, ...]
    name: str = "Watchdog"


@dataclass(frozen=True)
class RuleSet:
    source: str
    rules: tuple[Rule, ...]
    receivers: dict[str, Receiver]
    routes: tuple[Route, ...] = ()
    watchdog: Watchdog | None = None
    defaults: tuple[str, ...] = ()  # default_receivers
    time_intervals: dict[str, TimeInterval] = field(default_factory=dict)
    incidents: IncidentPolicy = IncidentPolicy()  # top-level `incidents:` (alerts.incidents)


def route_for(routes: tuple[Route, ...] | list[Route], labels: Mapping[str, str]) -> Route | None:
    """The first route whose matchers all equal the labels."""
    return next((r for r in routes if r.applies(labels)), None)


def muted(routes: tuple[Route, ...] | list[Route], labels: Mapping[str, str], now: datetime) -> bool:
    """Whether the route these labels take is muted at `now` (no route: never muted)."""
    chosen = route_for(routes, labels)
    return chosen is not None and chosen.muted_by(now) is not None


def route(routes: tuple[Route, ...] | list[Route], rule: Rule, labels: Mapping[str, str]) -> tuple[str, ...]:
    """Receivers of one alert: the first route whose matchers all equal its labels, else the rule's."""
    for candidate in routes:
        if candidate.applies(labels):
            return candidate.receivers
    return rule.receivers


_MILESTONE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+\Z")


def _impact(doc: Located, raw: Any, *path: Any) -> dict[str, Any]:
    """`impact: true|false` or `impact: {milestone: order.received, amounts: [order_total, amount]}`."""
    if isinstance(raw, bool):
        return {"impact": raw}
    if not isinstance(raw, dict):
        raise doc.error(f"impact: expected true, false or {{milestone, amounts}}, got {short(raw)}", *path)
    for key in raw:
        if key not in ("milestone", "amounts"):
            raise doc.error(f"unknown field {key!r} in impact (milestone, amounts)", *path, key)
    out: dict[str, Any] = {"impact": True}
    if "milestone" in raw:
        milestone = raw["milestone"]
        if not isinstance(milestone, str) or not _MILESTONE.match(milestone):
            raise doc.error(f"impact.milestone {short(milestone)}: expected flow.stage, e.g. order.received",
                            *path, "milestone")
        out["impact_milestone"] = milestone
    if "amounts" in raw:
        amounts = raw["amounts"]
        amounts = (amounts,) if isinstance(amounts, str) else amounts
        if (not isinstance(amounts, list | tuple) or not amounts
                or not all(isinstance(a, str) and _LABEL.match(a) for a in amounts)):
            raise doc.error("impact.amounts: expected a list of attribute names, e.g. [order_total]", *path, "amounts")
        out["impact_amounts"] = tuple(amounts)
    return out


def _options(doc: Located, raw: Mapping[str, Any], *path: Any) -> dict[str, Any]:
    """The noise and no-data options of one rule."""
    out: dict[str, Any] = {}
    if "and" in raw:
        extra = raw["and"]
        if not isinstance(extra, list | tuple) or not extra:
            raise doc.error("and: expected a list of conditions ({field, op, value})", *path, "and")
        out["also"] = tuple(parse_condition(doc, c, *path, "and", j) for j, c in enumerate(extra))
    if "keep_firing_for" in raw:
        out["keep_firing_for_seconds"] = rv.duration(doc, raw["keep_firing_for"], *path, "keep_firing_for")
    if "no_data" in raw:
        policy = raw["no_data"]
        if not isinstance(policy, str) or policy not in NO_DATA:
            raise doc.error(f"no_data {short(policy)} is not one of {', '.join(NO_DATA)}", *path, "no_data")
        out["no_data"] = policy
    if "impact" in raw:
        out.update(_impact(doc, raw["impact"], *path, "impact"))
    if "max_notifications_per_hour" in raw:
        cap = raw["max_notifications_per_hour"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise doc.error(
                f"max_notifications_per_hour: expected a whole number of at least 1, got {short(cap)}",
                *path, "max_notifications_per_hour",
            )
        out["max_notifications_per_hour"] = cap
    if "digest_interval" in raw:
        every = rv.duration(doc, raw["digest_interval"], *path, "digest_interval")
        if every <= 0:
            raise doc.error("digest_interval must be more than 0", *path, "digest_interval")
        out["digest_interval_seconds"] = every
    return out


def _rule(doc: Located, i: int, raw: Any, receivers: dict[str, Receiver], defaults: tuple[str, ...]) -> Rule:
    path = ("rules", i)
    if not isinstance(raw, dict):
        raise doc.error("each rule must be a mapping", *path)
    for key in raw:
        if key not in _RULE_KEYS:
            raise doc.error(f"unknown field {key!r} (allowed: {', '.join(sorted(_RULE_KEYS))})", *path, key)
    for key in ("name", "sla", "field", "op", "value"):
        if key not in raw:
            raise doc.error(f"rule is missing {key!r}", *path)
    name = rv.text(doc, raw["name"], *path, "name")
    if not _NAME.match(name):
        raise doc.error(f"name {name!r}: use letters, digits, _ . : -", *path, "name")
    first = parse_condition(doc, {k: raw[k] for k in ("field", "op", "value")}, *path)
    fld, op, value = first.field, first.op, first.value
    severity = raw.get("severity", "ticket")
    if not isinstance(severity, str) or severity not in SEVERITIES:
        raise doc.error(f"severity {short(severity)} is not one of {', '.join(SEVERITIES)}", *path, "severity")
    channel = raw.get("channel")
    if channel is not None:
        channel = rv.text(doc, channel, *path, "channel")
    window = rv.text(doc, raw.get("window", "1h"), *path, "window")
    for_seconds = rv.duration(doc, raw["for"], *path, "for") if "for" in raw else 0.0
    repeat = rv.duration(doc, raw["repeat_interval"], *path, "repeat_interval") if "repeat_interval" in raw else None
    if repeat is not None and repeat <= 0:
        raise doc.error("repeat_interval must be more than 0 (leave it out to never repeat)", *path, "repeat_interval")
    labels = rv.str_map(doc, raw.get("labels"), *path, "labels")
    for reserved in ("alertname", "sla", "channel", "window", "severity"):
        if reserved in labels:
            raise doc.error(f"labels: {reserved!r} is set by the evaluator", *path, "labels", reserved)
    annotations = rv.str_map(doc, raw.get("annotations"), *path, "annotations")
    for key, template in annotations.items():
        check_template(doc, template, *path, "annotations", key)
    if "description" in raw:
        annotations.setdefault("description", check_template(doc, raw["description"], *path, "description"))
    annotations.setdefault("summary", f"{{sla}} on {{channel}}: {fld} {op} {value} (now {{{fld}}})")
    runbook = raw.get("runbook_url")
    if runbook is not None:
        runbook = rv.text(doc, runbook, *path, "runbook_url")
        annotations["runbook_url"] = runbook
    names = raw.get("receivers")
    names = defaults if names is None else rv.receiver_names(doc, names, receivers, *path, "receivers")
    return Rule(
        name=name, sla=rv.text(doc, raw["sla"], *path, "sla"), field=fld, op=op, value=value,
        channel=channel, window=window, for_seconds=for_seconds, severity=severity, labels=labels,
        annotations=annotations, runbook_url=runbook, repeat_interval_seconds=repeat,
        receivers=tuple(names), where=doc.where(*path), **_options(doc, raw, *path),
    )


_ROUTE_KEYS = ("match", "receivers", "mute_time_intervals", "active_time_intervals")


def _routes(doc: Located, raw: Any, receivers: dict[str, Receiver],
            intervals: dict[str, TimeInterval]) -> tuple[Route, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise doc.error("routes: expected a list of {match: {label: value}, receivers: [...]}", "routes")
    out = []
    for j, item in enumerate(raw):
        path = ("routes", j)
        if not isinstance(item, dict):
            raise doc.error("each route must be a mapping with match and receivers", *path)
        for key in item:
            if key not in _ROUTE_KEYS:
                raise doc.error(f"unknown field {key!r} in a route ({', '.join(_ROUTE_KEYS)})", *path, key)
        if "match" not in item or "receivers" not in item:
            raise doc.error("a route needs match: {label: value} and receivers: [...]", *path)
        match = rv.str_map(doc, item["match"], *path, "match")
        if not match:
            raise doc.error("match: give at least one label: value", *path, "match")
        timing = {
            attr: interval_names(doc, item[key], intervals, *path, key)
            for attr, key in (("mute", "mute_time_intervals"), ("active", "active_time_intervals")) if key in item
        }
        out.append(Route(match, rv.receiver_names(doc, item["receivers"], receivers, *path, "receivers"), **timing))
    return tuple(out)


_TOP_KEYS = ("rules", "receivers", "default_receivers", "routes", "watchdog", "time_intervals", "incidents")


def _watchdog(doc: Located, raw: Any, receivers: dict[str, Receiver], defaults: tuple[str, ...]) -> Watchdog | None:
    """`watchdog: {interval: 1h, receivers: [...]}`; absent: no watchdog (receivers default to default_receivers)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise doc.error("watchdog: expected a mapping with interval (and optionally receivers)", "watchdog")
    for key in raw:
        if key not in ("interval", "receivers"):
            raise doc.error(f"unknown field {key!r} in watchdog (interval, receivers)", "watchdog", key)
    if "interval" not in raw:
        raise doc.error("watchdog: missing interval (e.g. 1h)", "watchdog")
    every = rv.duration(doc, raw["interval"], "watchdog", "interval")
    if every <= 0:
        raise doc.error("watchdog: interval must be more than 0", "watchdog", "interval")
    names = raw.get("receivers")
    names = defaults if names is None else rv.receiver_names(doc, names, receivers, "watchdog", "receivers")
    if not names:
        raise doc.error("watchdog: no receivers (give receivers: or default_receivers:)", "watchdog")
    return Watchdog(every, tuple(names))


def parse(doc: Located) -> RuleSet:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error(
            "expected a mapping with rules: (and optionally receivers:, default_receivers:, routes:, watchdog:,"
            " time_intervals:, incidents:)"
        )
    for key in data:
        if key not in _TOP_KEYS:
            raise doc.error(f"unknown top-level key {key!r} ({', '.join(_TOP_KEYS)})", key)
    raw_receivers = data.get("receivers") or {}
    if not isinstance(raw_receivers, dict):
        raise doc.error("receivers: expected a mapping of receiver names", "receivers")
    receivers = {name: rv.parse_receiver(doc, name, raw) for name, raw in raw_receivers.items()}
    defaults = data.get("default_receivers") or ()
    if isinstance(defaults, str):
        defaults = (defaults,)
    if not isinstance(defaults, list | tuple):
        raise doc.error("default_receivers: expected a list of receiver names", "default_receivers")
    for j, rname in enumerate(defaults):
        if not isinstance(rname, str) or rname not in receivers:
            raise doc.error(f"unknown receiver {rname!r}", "default_receivers", j)
    intervals = parse_time_intervals(doc, data.get("time_intervals"), "time_intervals")
    routes = _routes(doc, data.get("routes"), receivers, intervals)
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list | tuple):
        raise doc.error("rules: expected a list of rules", "rules")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(raw_rules):
        rule = _rule(doc, i, raw, receivers, defaults)
        if rule.name in seen:
            raise doc.error(f"duplicate rule name {rule.name!r} (first at {seen[rule.name]})", "rules", i, "name")
        seen[rule.name] = rule.where
        rules.append(rule)
    watchdog = _watchdog(doc, data.get("watchdog"), receivers, tuple(defaults))
    if watchdog is not None and watchdog.name in seen:
        raise doc.error(f"rule name {watchdog.name!r} is the watchdog's: rename the rule", "watchdog")
    return RuleSet(doc.source, tuple(rules), receivers, routes, watchdog, tuple(defaults), intervals,
                   parse_policy(doc, data.get("incidents")))


def load_rules(path: Path | str | None = None) -> RuleSet:
    """Load and validate a rules file (the shipped defaults when `path` is None)."""
    return parse(load(path if path is not None else DEFAULT_FILE))
