"""What each receiver type is sent, rendered from the receiver-neutral snapshot the evaluator stored.

Pure functions (no I/O), used by `alerts.notify` at delivery:

- webhook: Prometheus Alertmanager's webhook payload, version 4 (every alert of the group in
  `alerts`, `groupKey` by `alertname`; an incident's body adds `title`, `dedup_key`, `incident`)
- slack: incoming-webhook JSON with `text` and Block Kit `blocks`
- pagerduty: Events API v2 (`trigger`/`resolve`, `dedup_key` = the fingerprint, or the incident's)
- email: a plain-text message per group

Teams, Jira Service Management and ticket bodies live in `alerts.teams`, `alerts.jsm` and
`alerts.ticketing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from alerts.rules import Receiver

PD_SEVERITY = {"page": "critical", "ticket": "warning", "info": "info"}


def _group_key(group_labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def alerts_of(notification: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The alerts one outbox row carries (rows written before grouping carry one, unwrapped)."""
    alerts = notification.get("alerts")
    return list(alerts) if alerts else [notification]


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    first = dict(maps[0]) if maps else {}
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_payload(receiver: str, notification: Mapping[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one group of alerts of one rule."""
    alerts = alerts_of(notification)
    items = []
    for alert in alerts:
        annotations = {k: v for k, v in dict(alert["annotations"]).items() if v is not None}
        items.append({
            "status": alert["status"],
            "labels": dict(alert["labels"]),
            "annotations": annotations,
            "startsAt": alert["startsAt"],
            "endsAt": alert["endsAt"],
            "generatorURL": alert.get("generatorURL") or "",
            "fingerprint": alert["fingerprint"],
        })
    group_labels = dict(notification.get("groupLabels") or {"alertname": notification["rule"]})
    status = "firing" if any(a["status"] == "firing" for a in items) else "resolved"
    body: dict[str, Any] = {
        "receiver": receiver,
        "status": status,
        "alerts": items,
        "groupLabels": group_labels,
        "commonLabels": _common([a["labels"] for a in items]),
        "commonAnnotations": _common([a["annotations"] for a in items]),
        "externalURL": notification.get("externalURL") or "",
        "version": "4",
        "groupKey": notification.get("groupKey") or _group_key(group_labels),
        "truncatedAlerts": 0,
    }
    if notification.get("incident"):  # additive: Alertmanager consumers ignore fields they do not know
        body.update(title=headline(notification), dedup_key=notification.get("dedup_key"),
                    incident=dict(notification["incident"]))
    return body


def _more(notification: Mapping[str, Any]) -> str:
    incident = notification.get("incident") or {}
    rest = int(incident.get("alert_count") or len(alerts_of(notification))) - 1
    return f" (+{rest} more alert{'s' if rest != 1 else ''})" if rest > 0 else ""


def headline(alert: Mapping[str, Any]) -> str:
    if alert.get("incident"):  # one incident: its title (firing-time text when resolved) and the count of the rest
        tag = "RESOLVED" if alert["status"] == "resolved" else "FIRING"
        return f"[{tag}] {alert.get('title') or alert['incident'].get('title')}{_more(alert)}"
    tag = {"firing": "FIRING", "repeat": "FIRING", "resolved": "RESOLVED"}.get(alert.get("kind", ""), alert["status"].upper())
    alerts = alert.get("alerts") or ()
    if len(alerts) > 1:
        firing = sum(1 for a in alerts if a["status"] == "firing")
        tag = f"FIRING:{firing}" if firing else f"RESOLVED:{len(alerts)}"
        if alert.get("kind") == "digest":
            tag = f"DIGEST {tag}"
    return f"[{tag}] {alert['rule']}"


def group_summary(notification: Mapping[str, Any]) -> str:
    alerts = alerts_of(notification)
    if notification.get("incident"):  # the first alert's details; the title counts the rest
        return str(alerts[0].get("summary") or notification["rule"])
    if len(alerts) == 1:
        return str(alerts[0].get("summary") or notification["rule"])
    return "\n".join(f"{'resolved' if a['status'] == 'resolved' else 'firing'}: {a.get('summary') or a['rule']}"
                     for a in alerts)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    labels = dict(alert["labels"])
    annotations = dict(alert["annotations"])
    summary = group_summary(alert) if len(alerts_of(alert)) > 1 or alert.get("incident") else str(
        alert.get("summary") or annotations.get("summary") or alert["rule"])
    icon = ":large_green_circle:" if alert["status"] == "resolved" else (
        ":red_circle:" if alert["severity"] == "page" else ":large_orange_circle:"
    )
    title = headline(alert)
    text = f"{icon} {title}: {summary}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{_slack_escape(title)}*\n{_slack_escape(summary)}"}},
    ]
    if annotations.get("description"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(annotations["description"])}})
    facts = [f"*severity:* {alert['severity']}", f"*sla:* {labels.get('sla', '')}", f"*channel:* {labels.get('channel', '')}"]
    if annotations.get("orders_at_risk"):
        facts.append(f"*orders at risk:* {annotations['orders_at_risk']}")
    if annotations.get("order_value_at_risk"):
        facts.append(f"*order value at risk:* {annotations['order_value_at_risk']}")
    links = []
    if alert.get("dashboard_url"):
        links.append(f"<{alert['dashboard_url']}|Offending transactions>")
    if annotations.get("runbook_url"):
        links.append(f"<{annotations['runbook_url']}|Runbook>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts + links)}]})
    return {"text": text, "blocks": blocks}


def pagerduty_payload(routing_key: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """PagerDuty Events API v2 event: trigger while firing, resolve when resolved."""
    fp = alert["fingerprint"]
    dedup = str(alert.get("dedup_key") or fp)  # an incident's key: one PagerDuty incident for all its alerts
    if alert["status"] == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup}
    labels = dict(alert["labels"])
    annotations = dict(alert["annotations"])
    links = []
    if alert.get("dashboard_url"):
        links.append({"href": alert["dashboard_url"], "text": "Offending transactions"})
    if annotations.get("runbook_url"):
        links.append({"href": annotations["runbook_url"], "text": "Runbook"})
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": str((headline(alert) if alert.get("incident") else alert.get("summary")) or alert["rule"])[:1024],
            "source": f"controltower/{labels.get('sla', '')}/{labels.get('channel', '')}",
            "severity": PD_SEVERITY.get(alert["severity"], "warning"),
            "timestamp": alert["startsAt"],
            "component": labels.get("sla"),
            "group": labels.get("channel"),
            "class": alert["rule"],
            "custom_details": {
                "labels": labels,
                "annotations": annotations,
                "value": alert.get("value"),
                "fingerprint": fp,
                **({"incident": dict(alert["incident"])} if alert.get("incident") else {}),
            },
        },
        "links": links,
        "client": "Control Tower",
    }
    if alert.get("externalURL"):
        body["client_url"] = alert["externalURL"]
    return body


def email_message(receiver: Receiver, alert: Mapping[str, Any]) -> EmailMessage:
    labels = dict(alert["labels"])
    annotations = dict(alert["annotations"])
    summary = str(alert.get("summary") or alert["rule"])
    if alert.get("incident"):
        summary = group_summary(alert)
    elif len(alerts_of(alert)) > 1:
        summary = f"{len(alerts_of(alert))} alerts"
    msg = EmailMessage()
    msg["Subject"] = f"{headline(alert)}: {summary}"[:250]
    msg["From"] = receiver.sender or ""
    msg["To"] = ", ".join(receiver.to)
    lines = [summary, ""]
    if alert.get("incident"):
        lines = [headline(alert), "", summary, ""]
    elif len(alerts_of(alert)) > 1:
        lines += [group_summary(alert), ""]
    if annotations.get("description"):
        lines += [annotations["description"], ""]
    lines += [
        f"status:    {alert['status']}",
        f"severity:  {alert['severity']}",
        f"value:     {alert.get('value')}",
        f"since:     {alert['startsAt']}",
    ]
    if alert["status"] == "resolved":
        lines.append(f"resolved:  {alert['endsAt']}")
    lines += ["", "labels:"] + [f"  {k}={v}" for k, v in sorted(labels.items())]
    if alert.get("dashboard_url"):
        lines += ["", f"offending transactions: {alert['dashboard_url']}"]
    if annotations.get("runbook_url"):
        lines.append(f"runbook: {annotations['runbook_url']}")
    lines += ["", f"fingerprint: {alert['fingerprint']}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg
