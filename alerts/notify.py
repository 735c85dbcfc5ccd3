"""Notification delivery: the outbox (`alert_notifications`) sent to webhook, Slack, PagerDuty, email.

`deliver_pending` sends every due outbox row once, marks it sent, or schedules a retry with
exponential backoff (`attempts`, `next_attempt_at`) until `max_attempts`, then marks it failed.
A row is claimed with `SELECT … FOR UPDATE SKIP LOCKED` and stays locked while it is sent, so
two deliverers (two scheduler processes) never send the same row. Payloads are rendered (`alerts.payloads`,
`alerts.teams`, `alerts.jsm`, `alerts.ticketing`) from the receiver-neutral snapshot the evaluator stored:

- webhook: Prometheus Alertmanager's webhook payload, version 4 (every alert of the group in
  `alerts`, `groupKey` by `alertname`)
- slack: incoming-webhook JSON with `text` and Block Kit `blocks` (one section per alert)
- pagerduty: Events API v2, one event per alert (`trigger`/`resolve`, `dedup_key` = fingerprint),
  or one per incident (`dedup_key` = the incident's, "incident-<id>")
- email: plain text over SMTP, one message per group
- log: one log line per alert
- teams: a Workflows webhook with one Adaptive Card per group (`alerts.teams`)
- jsm: Jira Service Management alerts, created and closed by alias (`alerts.jsm`)
- ticket: a Jira issue opened on firing and closed on resolve, once per dedup key (`alerts.ticketing`)

An incident's notification (`payload.incident`, see `alerts.incidents_store`) is titled by the
incident ("[FIRING] ERP posting is breaching on all 5 channels since 09:12 UTC → … (+4 more
alerts)"), carries the first alert's details and counts the rest; the webhook body adds `title`,
`dedup_key` and `incident` to Alertmanager's version 4 shape.

Each receiver's notifications go out in the order they were created: a row is sent only when no
older row for the same receiver is still pending, so a receiver that is down gets its backlog
in order once it is back.

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
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from alerts import jsm, teams, ticketing
from alerts.content import dedup_key
from alerts.payloads import (
    alerts_of,
    email_message,
    group_summary,
    headline,
    pagerduty_payload,
    slack_payload,
    webhook_payload,
)
from alerts.rules import Receiver
from alerts.ticketing import TicketStore
from alerts.transport import USER_AGENT, DeliveryError, call
from controltower.schema.alerts import alert_notifications

__all__ = [
    "USER_AGENT", "DeliveryError", "DeliveryReport", "TicketStore", "alerts_of", "backoff", "deliver_pending",
    "email_message", "pagerduty_payload", "send", "slack_payload", "webhook_payload",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0


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

def _env(name: str | None, environ: Mapping[str, str], what: str) -> str:
    value = environ.get(name or "")
    if not value:
        raise DeliveryError(f"{what}: environment variable {name} is not set")
    return value


def _post(client: httpx.Client, url: str, body: dict[str, Any], timeout: float,
          headers: Mapping[str, str] | None = None) -> None:
    call(client, "POST", url, body=body, headers=headers, timeout=timeout)


def paged_units(notification: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """What a receiver that deduplicates pages by key gets: the notification once under its own
    `dedup_key` (an incident), else each alert of the group under its fingerprint."""
    if notification.get("dedup_key"):
        return [(dedup_key(notification), notification)]
    return [(dedup_key(a), a) for a in alerts_of(notification)]


def _summary(alert: Mapping[str, Any]) -> str:
    if len(alerts_of(alert)) > 1:
        return group_summary(alert)
    return str(alert.get("summary") or dict(alert.get("annotations") or {}).get("summary") or alert["rule"])


def send(
    receiver: Receiver,
    alert: Mapping[str, Any],
    *,
    client: httpx.Client,
    environ: Mapping[str, str],
    tickets: TicketStore | None = None,
) -> str:
    """Send one notification through `receiver`; raise DeliveryError when it was not accepted.

    Returns what was done, in a few words. A ticket receiver needs `tickets` (the delivery
    transaction's `alert_tickets`)."""
    kind = receiver.type
    if kind == "teams":
        url = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        card = teams.card(headline(alert), _summary(alert), alert, len(alerts_of(alert)))
        teams.check_answer(call(client, "POST", url, body=card, timeout=receiver.timeout_seconds).text)
    elif kind == "jsm":
        key = _env(receiver.api_key_env, environ, f"receiver {receiver.name}")
        headers = {"Authorization": f"GenieKey {key}"}
        count = len(alerts_of(alert))
        for alias, one in paged_units(alert):
            if one["status"] == "resolved":
                _post(client, f"{receiver.url}{jsm.close_path(alias)}", jsm.close_body(one),
                      receiver.timeout_seconds, headers)
            else:
                body = jsm.create_body(alias, one, message=f"{headline(one)}: {_summary(one)}",
                                       summary=_summary(one), count=count)
                _post(client, f"{receiver.url}/v2/alerts", body, receiver.timeout_seconds, headers)
    elif kind == "ticket":
        if tickets is None:
            raise DeliveryError(f"receiver {receiver.name}: a ticket receiver needs the database", permanent=True)
        base = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        auth = (_env(receiver.user_env, environ, f"receiver {receiver.name}"),
                _env(receiver.token_env, environ, f"receiver {receiver.name}"))
        jira = ticketing.Jira(receiver, base, auth, client)
        done = [ticketing.deliver(jira, tickets, key, one, headline(one), _summary(one))
                for key, one in paged_units(alert)]
        return "; ".join(done)
    elif kind == "webhook":
        url = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        _post(client, url, webhook_payload(receiver.name, alert), receiver.timeout_seconds)
    elif kind == "slack":
        url = receiver.url or _env(receiver.url_env, environ, f"receiver {receiver.name}")
        _post(client, url, slack_payload(alert), receiver.timeout_seconds)
    elif kind == "pagerduty":
        key = _env(receiver.routing_key_env, environ, f"receiver {receiver.name}")
        # one event per incident (its dedup_key), else per alert (its fingerprint): a retry is harmless
        for one in [alert] if alert.get("incident") else alerts_of(alert):
            _post(client, receiver.url or "", pagerduty_payload(key, one), receiver.timeout_seconds)
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
        if alert.get("incident"):  # one line per incident: its title, then the first alert's own summary
            first = alerts_of(alert)[0]
            log.warning("%s: %s (%s)", headline(alert), first.get("summary"), first.get("dashboard_url"))
            return "sent"
        for one in alerts_of(alert):
            log.warning("%s: %s (%s)", headline(one), one.get("summary"), one.get("dashboard_url"))
    else:  # pragma: no cover - rules validation admits only the types above
        raise DeliveryError(f"receiver type {kind!r} is not supported", permanent=True)
    return "sent"


def _send_guarded(receiver: Receiver, payload: Mapping[str, Any], client: httpx.Client,
                  environ: Mapping[str, str], tickets: TicketStore) -> str:
    """`send`, where anything but a database error is this receiver's failure (a DeliveryError to
    retry), never an exception that stops delivery to every other receiver."""
    try:
        return send(receiver, payload, client=client, environ=environ, tickets=tickets)
    except (DeliveryError, sa.exc.DBAPIError):
        raise
    except Exception as exc:
        raise DeliveryError(f"unexpected {type(exc).__name__} while sending: {str(exc)[:200]}") from None


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:1000]


_CLAIM = """
    SELECT n.id FROM alert_notifications n
    WHERE n.status = 'pending' AND n.next_attempt_at <= :now AND n.id > :after
      AND NOT EXISTS (
          SELECT 1 FROM alert_notifications o
          WHERE o.receiver = n.receiver AND o.status = 'pending' AND o.id < n.id
      )
      AND n.receiver <> ALL(CAST(:blocked AS text[]))
    ORDER BY n.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""


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
    """Send every outbox row due at `now`; return how many were sent, retried and given up on.

    Rows are claimed one at a time, oldest first, each in its own transaction that holds the
    row lock while it is sent. A row waits while an older row for the same receiver is pending
    (in backoff, or being sent by another deliverer): each receiver gets its notifications in
    order, and a receiver that fails is left alone for the rest of this pass.
    """
    env = os.environ if environ is None else environ
    report = DeliveryReport()
    t = alert_notifications
    claim = sa.text(_CLAIM)
    blocked: list[str] = []
    after = 0
    own_client = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        for _ in range(batch):
            with engine.begin() as conn:
                row_id = conn.execute(claim, {"now": now, "after": after, "blocked": blocked}).scalar()
                if row_id is None:
                    break
                after = row_id
                row = conn.execute(sa.select(t).where(t.c.id == row_id)).one()
                attempts = row.attempts + 1
                receiver = receivers.get(row.receiver)
                try:
                    if receiver is None:
                        raise DeliveryError(f"receiver {row.receiver!r} is not configured any more", permanent=True)
                    with conn.begin_nested():  # a receiver's failure undoes its ticket rows, not the claim
                        _send_guarded(receiver, row.payload, http, env, TicketStore(conn, now))
                except DeliveryError as exc:
                    message = _scrub(str(exc), receiver.secrets(env) if receiver else [])
                    give_up = exc.permanent or attempts >= max_attempts
                    values: dict[str, Any] = {"attempts": attempts, "last_error": message}
                    if give_up:
                        values["status"] = "failed"
                        report.failed += 1
                    else:
                        wait = max(backoff(attempts, base_backoff), exc.retry_after or 0.0)  # Retry-After
                        values["next_attempt_at"] = now + timedelta(seconds=wait)
                        report.retried += 1
                        blocked.append(row.receiver)  # keep its later notifications behind this one
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
