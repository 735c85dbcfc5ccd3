"""What an alert is called and what its notification says: labels, fingerprint, annotations, payload.

Pure functions over a rule, its SLA row and the series' stored state; the evaluator
(`alerts.evaluate`) calls them and the outbox stores their result. The payload is
receiver-neutral (rendered per receiver type at delivery, `alerts.notify`). No I/O here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from alerts.rules import Rule
from alerts.templates import render, template_fields
from controltower.vocab import ZERO_TIME, rfc3339


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable 16-hex-digit id of a label set (Alertmanager's fingerprints have the same length)."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def annotations(rule: Rule, row: Mapping[str, Any] | None, dashboard_url: str, previous: Mapping[str, str]) -> dict[str, str]:
    """The rule's templates rendered over `row`; a vanished row keeps the last rendered text."""
    if row is None:
        return dict(previous)
    values = template_fields(row, rule, dashboard_url)
    out = {key: render(text, values) for key, text in rule.annotations.items() if key != "runbook_url"}
    if rule.runbook_url:
        out["runbook_url"] = rule.runbook_url
    return out


def no_data_annotations(rule: Rule, labels: Mapping[str, str], previous: Mapping[str, str]) -> dict[str, str]:
    out = dict(previous)
    out["summary"] = (
        f"{labels['sla']} on {labels['channel']}: no data ({rule.name} found no SLA row for this channel)"
    )
    out["no_data"] = "true"
    return out


def payload(state: Mapping[str, Any], kind: str, external_url: str) -> dict[str, Any]:
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
        "startsAt": rfc3339(state["firing_since"] or state["active_since"]) or ZERO_TIME,
        "endsAt": (rfc3339(state["resolved_at"]) or ZERO_TIME) if resolved else ZERO_TIME,
        "generatorURL": state["dashboard_url"],
        "dashboard_url": state["dashboard_url"],
        "externalURL": external_url,
        "acknowledged_by": state.get("acknowledged_by"),
        **({"impact": dict(state["impact"])} if state.get("impact") else {}),
    }


def with_impact(annotations: Mapping[str, str], impact: Mapping[str, Any]) -> dict[str, str]:
    """Impact as annotations too: Alertmanager-compatible receivers only read labels and annotations."""
    out = dict(annotations)
    out["orders_at_risk"] = str(impact["orders_at_risk"])
    if "order_value_at_risk" in impact:
        out["order_value_at_risk"] = f"{impact['order_value_at_risk']:.2f}"
    return out


def dedup_key(notification: Mapping[str, Any]) -> str:
    """The stable key receivers deduplicate one paged thing by (PagerDuty `dedup_key`, a Jira
    Service Management alias, a ticket's label): the notification's own `dedup_key` when it
    names one (an incident), else its first alert's fingerprint. Stable across re-sends, so a
    notification delivered twice (a leader crash between send and mark-as-sent) pages once."""
    key = notification.get("dedup_key")
    return str(key) if key else str(notification["fingerprint"])
