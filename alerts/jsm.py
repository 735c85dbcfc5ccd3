"""Jira Service Management alerts (the Operations integration API, Opsgenie's successor).

Firing: `POST {url}/v2/alerts` with `Authorization: GenieKey <key>` and the alert
(`message` <= 130 characters, `alias` <= 512, `description` <= 15000, `priority` P1..P5 from
the severity, `tags` (<= 20 of <= 50 characters), `details` a flat string map (<= 8000
characters in all), `entity` <= 512, `source` <= 100). JSM deduplicates by alias: a repeat or a
re-send of the same alias raises its count, never a second alert. Resolved:
`POST {url}/v2/alerts/{alias}/close?identifierType=alias` with `source` and a `note`. JSM
answers 202 with `{"result", "took", "requestId"}` and processes the request asynchronously.

The alias is `alerts.content.dedup_key`: the incident's key when the notification carries one,
else one JSM alert per alert of the group, by its fingerprint. Payload rendering only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

PRIORITY = {"page": "P1", "ticket": "P3", "info": "P5"}
SOURCE = "controltower"
MAX_DETAILS = 8000


def _cut(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _details(alert: Mapping[str, Any]) -> dict[str, str]:
    """Labels, annotations and links as one flat string map, cut to JSM's size limit."""
    out: dict[str, str] = {}
    candidates: list[tuple[str, Any]] = [
        *sorted(dict(alert.get("labels") or {}).items()),
        *sorted(dict(alert.get("annotations") or {}).items()),
        ("value", alert.get("value")), ("fingerprint", alert.get("fingerprint")),
        ("dashboard_url", alert.get("dashboard_url")), ("startsAt", alert.get("startsAt")),
    ]
    used = 0
    for key, value in candidates:
        if value is None or value == "" or key in out:
            continue
        text = _cut(value, 1000)
        if used + len(key) + len(text) > MAX_DETAILS:
            break
        out[str(key)] = text
        used += len(key) + len(text)
    return out


def description(alert: Mapping[str, Any], summary: str) -> str:
    annotations = dict(alert.get("annotations") or {})
    parts = [summary, annotations.get("description") or ""]
    if alert.get("dashboard_url"):
        parts.append(f"Offending transactions: {alert['dashboard_url']}")
    if annotations.get("runbook_url"):
        parts.append(f"Runbook: {annotations['runbook_url']}")
    return "\n\n".join(p for p in parts if p)


def create_body(alias: str, alert: Mapping[str, Any], *, message: str, summary: str, count: int) -> dict[str, Any]:
    labels = dict(alert.get("labels") or {})
    tags = [SOURCE, str(alert.get("severity", "")), labels.get("sla", ""), labels.get("channel", "")]
    body = {
        "message": _cut(message, 130),
        "alias": alias[:512],
        "description": _cut(description(alert, summary), 15000),
        "priority": PRIORITY.get(str(alert.get("severity")), "P3"),
        "tags": [_cut(t, 50) for t in tags if t][:20],
        "details": {**_details(alert), "alerts": str(count)},
        "entity": _cut(f"{labels.get('sla', '')}/{labels.get('channel', '')}", 512),
        "source": SOURCE,
    }
    return body


def close_path(alias: str) -> str:
    return f"/v2/alerts/{quote(alias[:512], safe='')}/close?identifierType=alias"


def close_body(alert: Mapping[str, Any]) -> dict[str, Any]:
    ended = alert.get("endsAt") or ""
    return {"source": SOURCE, "user": SOURCE, "note": _cut(f"Resolved at {ended}: {alert.get('summary') or ''}", 25000)}
