"""Notification delivery: the outbox (`alert_notifications`) sent to webhook, Slack, PagerDuty, email.

`deliver_pending` sends every due outbox row once, marks it sent, or schedules a retry with
exponential backoff (`attempts`, `next_attempt_at`) until `max_attempts`, then marks it failed.
A row is locked (`FOR UPDATE SKIP LOCKED`) while it is sent, so two deliverers never send the
same row. Payloads are rendered here from the receiver-neutral snapshot the evaluator stored:

- webhook: Prometheus Alertmanager's webhook payload, version 4 (one alert per notification)
- slack: incoming-webhook JSON with `text` and Block Kit `blocks`
- pagerduty: Events API v2 (`trigger`/`resolve`, `dedup_key` = the alert's fingerprint)
- email: plain text over SMTP
- log: one log line

Secrets (Slack URLs, routing keys, SMTP passwords) come from environment variables named in the
rules file and are scrubbed from logs and from the stored `last_error`.
"""

from __future__ import annotations

import logging
import os
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alerts.rules import Receiver
from controltower.schema.alerts import alert_notifications

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0
PD_SEVERITY = {"page": "critical", "ticket": "warning", "info": "info"}
USER_AGENT = "controltower-alerts"


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempts: int, base: float = BASE_BACKOFF_SECONDS, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2 base, 4 base, ... capped."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


# -- payloads -----------------------------------------------------------------------------------

def _group_key(group_labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def webhook_payload(receiver: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one alert."""
    labels = dict(alert["labels"])
    annotations = {k: v for k, v in dict(alert["annotations"]).items() if v is not None}
    group_labels = {k: labels[k] for k in ("alertname", "sla", "channel") if k in labels}
    status = alert["status"]
    return {
        "receiver": receiver,
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": alert["startsAt"],
                "endsAt": alert["endsAt"],
                "generatorURL": alert.get("generatorURL") or "",
                "fingerprint": alert["fingerprint"],
            }
        ],
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": alert.get("externalURL") or "",
        "version": "4",
        "groupKey": _group_key(group_labels),
        "truncatedAlerts": 0,
    }


def _title(alert: Mapping[str, Any]) -> str:
    tag = {"firing": "FIRING", "repeat": "FIRING", "resolved": "RESOLVED"}.get(alert.get("kind", ""), alert["status"].upper())
    return f"[{tag}] {alert['rule']}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    labels = dict(alert["labels"])
    annotations = dict(alert["annotations"])
    summary = str(alert.get("summary") or annotations.get("summary") or alert["rule"])
    icon = ":large_green_circle:" if alert["status"] == "resolved" else (
        ":red_circle:" if alert["severity"] == "page" else ":large_orange_circle:"
    )
    title = _title(alert)
    text = f"{icon} {title}: {summary}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{_slack_escape(title)}*\n{_slack_escape(summary)}"}},
    ]
    if annotations.get("description"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(annotations["description"])}})
    facts = [f"*severity:* {alert['severity']}", f"*sla:* {labels.get('sla', '')}", f"*channel:* {labels.get('channel', '')}"]
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
    if alert["status"] == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": fp}
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
        "dedup_key": fp,
        "payload": {
            "summary": str(alert.get("summary") or alert["rule"])[:1024],
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
    msg = EmailMessage()
    msg["Subject"] = f"{_title(alert)}: {summary}"[:250]
    msg["From"] = receiver.sender or ""
    msg["To"] = ", ".join(receiver.to)
    lines = [summary, ""]
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


# -- sending ------------------------------------------------------------------------------------

def _env(name: str | None, environ: Mapping[str, str], what: str) -> str:
    value = environ.get(name or "")
    if not value:
        raise DeliveryError(f"{what}: environment variable {name} is not set")
    return value


def _post(client: httpx.Client, url: str, body: dict[str, Any], timeout: float) -> None:
    try:
        response = client.post(url, json=body, timeout=timeout, headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    if response.is_success:
        return
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 425, 429)
    raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}", permanent=permanent)


def send(
    receiver: Receiver,
    alert: Mapping[str, Any],
    *,
    client: httpx.Client,
    environ: Mapping[str, str],
) -> None:
    """Send one notification through `receiver`; raise DeliveryError when it was not accepted."""
    kind = receiver.type
    if kind == "webhook":
        url = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        _post(client, url, webhook_payload(receiver.name, alert), receiver.timeout_seconds)
    elif kind == "slack":
        url = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        _post(client, url, slack_payload(alert), receiver.timeout_seconds)
    elif kind == "pagerduty":
        key = _env(receiver.routing_key_env, environ, f"receiver {receiver.name}")
        _post(client, receiver.url or "", pagerduty_payload(key, alert), receiver.timeout_seconds)
    elif kind == "email":
        msg = email_message(receiver, alert)
        try:
            with smtplib.SMTP(receiver.smtp_host, receiver.smtp_port, timeout=receiver.timeout_seconds) as smtp:
                if receiver.starttls:
                    smtp.starttls()
                if receiver.username:
                    smtp.login(receiver.username, _env(receiver.password_env, environ, f"receiver {receiver.name}"))
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP refused recipients {sorted(exc.recipients)}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}") from None
    elif kind == "log":
        log.warning("%s: %s (%s)", _title(alert), alert.get("summary"), alert.get("dashboard_url"))
    else:  # pragma: no cover - rules validation admits only the types above
        raise DeliveryError(f"receiver type {kind!r} is not supported", permanent=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:1000]


def deliver_pending(
    engine: Engine,
    receivers: Mapping[str, Receiver],
    now: datetime,
    *,
    client: httpx.Client | None = None,
    environ: Mapping[str, str] | None = None,
    batch: int = 200,
    max_attempts: int = MAX_ATTEMPTS,
    base_backoff: float = BASE_BACKOFF_SECONDS,
) -> DeliveryReport:
    """Send every outbox row due at `now`; return how many were sent, retried and given up on."""
    env = os.environ if environ is None else environ
    report = DeliveryReport()
    t = alert_notifications
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(t.c.id)
            .where(t.c.status == "pending", t.c.next_attempt_at <= now)
            .order_by(t.c.next_attempt_at, t.c.id)
            .limit(batch)
        ).scalars().all()
    if not due:
        return report
    own_client = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        for row_id in due:
            with engine.begin() as conn:
                row = conn.execute(
                    sa.select(t)
                    .where(t.c.id == row_id, t.c.status == "pending", t.c.next_attempt_at <= now)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    continue  # another deliverer has it, or it was handled meanwhile
                attempts = row.attempts + 1
                receiver = receivers.get(row.receiver)
                try:
                    if receiver is None:
                        raise DeliveryError(f"receiver {row.receiver!r} is not configured any more", permanent=True)
                    send(receiver, row.payload, client=http, environ=env)
                except DeliveryError as exc:
                    message = _scrub(str(exc), receiver.secrets(env) if receiver else [])
                    give_up = exc.permanent or attempts >= max_attempts
                    values: dict[str, Any] = {"attempts": attempts, "last_error": message}
                    if give_up:
                        values["status"] = "failed"
                        report.failed += 1
                    else:
                        values["next_attempt_at"] = now + timedelta(seconds=backoff(attempts, base_backoff))
                        report.retried += 1
                    report.errors.append(f"{row.receiver}: {message}")
                    log.warning(
                        "notification %s to %s (%s) attempt %d %s: %s", row.id, row.receiver, row.rule,
                        attempts, "failed for good" if give_up else "failed, will retry", message,
                    )
                    conn.execute(t.update().where(t.c.id == row.id).values(**values))
                    continue
                conn.execute(
                    t.update().where(t.c.id == row.id)
                    .values(status="sent", attempts=attempts, sent_at=now, last_error=None)
                )
                report.sent += 1
                log.info("notification %s (%s %s) sent to %s", row.id, row.rule, row.kind, row.receiver)
    finally:
        if own_client:
            http.close()
    return report
