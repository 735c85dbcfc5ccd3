"""`controltower alerts test RECEIVER`: a sample alert, where routing sends it, and sending it.

Builds the receiver-neutral notification of a sample alert (the same shape evaluation stores in
the outbox), says which route its labels match, which receivers that gives and whether a time
interval mutes it now, and sends it straight through one receiver (not the outbox), so a new
receiver or route is checked in seconds. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from alerts.content import deep_link, fingerprint
from alerts.rules import RuleSet, route_for
from controltower.vocab import ZERO_TIME, rfc3339

SAMPLE_LABELS = {"alertname": "ControlTowerTest", "sla": "erp_posting", "channel": "amazon", "severity": "page"}


def sample(labels: Mapping[str, str], now: datetime, dashboard_url: str, *, resolved: bool = False) -> dict[str, Any]:
    """The notification of a sample alert with `labels`, firing or resolved at `now`."""
    labels = {**SAMPLE_LABELS, **labels}
    sla, channel = labels.get("sla", ""), labels.get("channel", "")
    summary = f"Control Tower test notification ({sla} on {channel}): nothing is wrong"
    alert = {
        "kind": "resolved" if resolved else "firing",
        "status": "resolved" if resolved else "firing",
        "rule": labels["alertname"],
        "severity": labels.get("severity", "page"),
        "fingerprint": fingerprint(labels),
        "labels": labels,
        "annotations": {"summary": summary,
                        "description": "Sent by `controltower alerts test` to check a receiver and its route."},
        "summary": summary,
        "value": None,
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now) if resolved else ZERO_TIME,
        "generatorURL": deep_link(dashboard_url, sla, channel),
        "dashboard_url": deep_link(dashboard_url, sla, channel),
        "externalURL": dashboard_url,
    }
    return {**alert, "alerts": [dict(alert)], "groupLabels": {"alertname": alert["rule"]},
            "groupKey": '{}:{alertname="' + alert["rule"] + '"}'}


def routing(ruleset: RuleSet, labels: Mapping[str, str], now: datetime) -> list[str]:
    """Lines saying which route the labels match, its receivers and whether it is muted now."""
    chosen = route_for(ruleset.routes, labels)
    if chosen is None:
        names = ", ".join(ruleset.defaults) or "none"
        return [f"route: none matches; a rule without receivers sends to default_receivers: {names}"]
    index = ruleset.routes.index(chosen)
    match = ", ".join(f"{k}={v}" for k, v in chosen.match.items())
    lines = [f"route: #{index + 1} (match {match}) -> {', '.join(chosen.receivers)}"]
    why = chosen.muted_by(now)
    lines.append(f"muted now: {why}" if why else "muted now: no")
    return lines
