"""Microsoft Teams: a Workflows webhook ("Post to a channel when a webhook request is received")
carrying one Adaptive Card (version 1.4) per notification.

The card: a title TextBlock (red `attention` while firing, green `good` once resolved), the
summary, the description, a FactSet (severity, SLA, channel, orders and value at risk, how many
alerts) and Action.OpenUrl buttons to the offending transactions and the runbook.

TextBlock and Fact values render a subset of Markdown (bold, italic, lists, links) and the
`{{DATE(...)}}` functions; every text that came from a source (summaries, labels, SLA and
channel names) is escaped (`plain`) so it shows as typed and cannot turn into a link or a list.
Only payload rendering and reading the answer live here; sending is `alerts.notify`.

Workflows answer 202 Accepted with no body. The retired Office 365 connectors (and flows that
forward to one) answer 200 with "1" on success, and 200 with a text such as "Webhook message
delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 ..." when Teams
refused the message: `check_answer` reads that as the failure it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from alerts.transport import RETRYABLE_4XX, DeliveryError

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

_INLINE = re.compile(r"([\\`*_\[\]~<>#|])")  # emphasis, links, code, strike, html, headings, tables
_LINE_START = re.compile(r"^(\s*)([-+]|\d+(?=[.)]))", re.MULTILINE)  # list items


# Teams refuses a message above about 28 KB (413): a big group's text is cut well below that
MAX_SUMMARY, MAX_DESCRIPTION = 12_000, 4_000
_FAILED = re.compile(r"(?:delivery failed|returned HTTP error)\D{0,40}?(\d{3})?", re.IGNORECASE)


def check_answer(text: str) -> None:
    """Raise DeliveryError when a 2xx answer's body says the message was not delivered."""
    found = _FAILED.search(text[:2000])
    if found is None:
        return
    status = int(found.group(1)) if found.group(1) else None
    permanent = status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX
    raise DeliveryError(f"Teams answered success but did not deliver: {text[:200]}", permanent=permanent)


def _cut(text: Any, limit: int) -> str:
    """At most `limit` characters, cut at a line end, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    kept = text[:limit].rsplit("\n", 1)[0] if "\n" in text[:limit] else text[:limit]
    return f"{kept}\n… ({text.count(chr(10)) - kept.count(chr(10))} more lines, {len(text) - len(kept)} characters more)"


def plain(value: Any) -> str:
    """Text as Teams shows it verbatim: Markdown characters backslash-escaped, no date functions."""
    text = str(value)
    text = _INLINE.sub(r"\\\1", text)
    text = _LINE_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text)
    return text.replace("{{", "{\\{")


def card(title: str, summary: str, notification: Mapping[str, Any], alert_count: int) -> dict[str, Any]:
    """The Adaptive Card of one notification (`title`, `summary` are raw text; escaped here)."""
    labels = dict(notification.get("labels") or {})
    annotations = dict(notification.get("annotations") or {})
    resolved = notification.get("status") == "resolved"
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": plain(title), "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": "Good" if resolved else "Attention"},
        {"type": "TextBlock", "text": plain(_cut(summary, MAX_SUMMARY)), "wrap": True},
    ]
    if annotations.get("description"):
        body.append({"type": "TextBlock", "text": plain(_cut(annotations["description"], MAX_DESCRIPTION)),
                     "wrap": True, "isSubtle": True})
    facts = [("Severity", notification.get("severity", "")), ("SLA", labels.get("sla", "")),
             ("Channel", labels.get("channel", ""))]
    if annotations.get("orders_at_risk"):
        facts.append(("Orders at risk", annotations["orders_at_risk"]))
    if annotations.get("order_value_at_risk"):
        facts.append(("Value at risk", annotations["order_value_at_risk"]))
    facts.append(("Alerts", str(alert_count)))
    if resolved and notification.get("endsAt"):
        facts.append(("Resolved", notification["endsAt"]))
    body.append({"type": "FactSet", "facts": [{"title": t, "value": plain(v)} for t, v in facts]})
    actions = []
    if notification.get("dashboard_url"):
        actions.append({"type": "Action.OpenUrl", "title": "Offending transactions", "url": notification["dashboard_url"]})
    if annotations.get("runbook_url"):
        actions.append({"type": "Action.OpenUrl", "title": "Runbook", "url": annotations["runbook_url"]})
    content: dict[str, Any] = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": "1.4", "body": body}
    if actions:
        content["actions"] = actions
    return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": content}]}
