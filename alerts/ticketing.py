"""Ticket receivers (`type: ticket`): open a ticket on firing, close it on resolve, once per dedup key.

The first template is Jira Cloud (REST v3, basic auth with an account's email and API token):

- firing: `POST /rest/api/3/issue` with project.key, issuetype.name, summary, an Atlassian
  Document Format description and labels `controltower`, `ct-<dedup key>`;
- resolved: a comment with the resolution time (`POST /rest/api/3/issue/{key}/comment`), then
  `POST /rest/api/3/issue/{key}/transitions` with the configured `close_transition` (an id, or a
  name looked up through `GET .../transitions`; default "Done").

Idempotent by `alerts.content.dedup_key`: `alert_tickets` maps (receiver, dedup key) to the
ticket and whether it is open. A repeat or re-send of firing finds the open ticket and sends
nothing; a crash between creating the ticket and storing the mapping is covered by looking the
ticket up by its label (`POST /rest/api/3/search/jql`) before creating one. The mapping is written
on the deliverer's connection, in the transaction that marks the notification sent.

People change tickets too: a ticket closed or deleted by hand is closed in the mapping on resolve
(`GET /rest/api/3/issue/{key}?fields=status` first: 404 is gone, status category `done` needs no
transition), and a new firing episode does not trust an open mapping older than the episode
(its resolve may have been lost): it looks the ticket up by label again.

Jira's answers are checked before use: an issue key must look like one (`OPS-123`) before it
goes into a path or the mapping; any other shape is a DeliveryError, never a crash. Text sent
to Jira loses control characters, and the summary is one line of at most 255 characters.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from alerts.receivers import Receiver
from alerts.transport import DeliveryError, call, json_of
from controltower.schema.alerts import alert_tickets

log = logging.getLogger(__name__)

DEFAULT_CLOSE = "Done"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
ISSUE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}-[0-9]{1,18}\Z")


@dataclass
class TicketStore:
    """The `alert_tickets` rows of one delivery transaction."""

    conn: Connection
    now: datetime

    def get(self, receiver: str, key: str) -> Mapping[str, Any] | None:
        t = alert_tickets
        row = self.conn.execute(sa.select(t).where(t.c.receiver == receiver, t.c.dedup_key == key)).first()
        return None if row is None else dict(row._mapping)

    def opened(self, receiver: str, key: str, ticket_key: str, ticket_id: str | None) -> None:
        stmt = insert(alert_tickets).values(
            receiver=receiver, dedup_key=key, ticket_key=ticket_key, ticket_id=ticket_id, state="open",
            opened_at=self.now, closed_at=None,
        )
        self.conn.execute(stmt.on_conflict_do_update(
            index_elements=["receiver", "dedup_key"],
            set_={c: stmt.excluded[c] for c in ("ticket_key", "ticket_id", "state", "opened_at", "closed_at")},
        ))

    def closed(self, receiver: str, key: str) -> None:
        t = alert_tickets
        self.conn.execute(t.update().where(t.c.receiver == receiver, t.c.dedup_key == key)
                          .values(state="closed", closed_at=self.now))


def label(key: str) -> str:
    """The ticket's label for a dedup key: the key itself when it is label-safe (a fingerprint),
    else its safe characters and a hash of the whole key, so two keys never share a label and no
    quote or space reaches the JQL search (Jira labels take no spaces, at most 255 characters)."""
    safe = _LABEL_UNSAFE.sub("_", key)
    if safe == key and len(key) <= 250:
        return "ct-" + key
    return f"ct-{safe[:200]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def clean(text: Any) -> str:
    """Text without control characters (tabs and newlines kept) or Unicode line separators."""
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") else ("" if c < " " else " ")
        for c in str(text)
    )


def issue_key(raw: Any, what: str) -> str:
    if not isinstance(raw, str | int) or not ISSUE_KEY.match(str(raw)):
        raise DeliveryError(f"{what}: {str(raw)[:60]!r} is not a Jira issue key")
    return str(raw)


def _text(text: str, href: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": clean(text)}
    if href:
        node["marks"] = [{"type": "link", "attrs": {"href": href}}]
    return node


def adf(*paragraphs: list[dict[str, Any]]) -> dict[str, Any]:
    """An Atlassian Document Format doc, one paragraph per list of text nodes (empty ones left out)."""
    content = [{"type": "paragraph", "content": [n for n in p if n["text"]]} for p in paragraphs]
    return {"type": "doc", "version": 1, "content": [p for p in content if p["content"]]}


def issue_body(receiver: Receiver, key: str, alert: Mapping[str, Any], title: str, summary: str) -> dict[str, Any]:
    labels = dict(alert.get("labels") or {})
    annotations = dict(alert.get("annotations") or {})
    facts = (f"severity {alert.get('severity', '')}, SLA {labels.get('sla', '')}, channel {labels.get('channel', '')}, "
             f"since {alert.get('startsAt', '')}")
    if annotations.get("orders_at_risk"):
        facts += f", orders at risk {annotations['orders_at_risk']}"
    if annotations.get("order_value_at_risk"):
        facts += f", value at risk {annotations['order_value_at_risk']}"
    paragraphs = [[_text(summary)], [_text(annotations.get("description") or "")], [_text(facts)]]
    if alert.get("dashboard_url"):
        paragraphs.append([_text("Offending transactions", alert["dashboard_url"])])
    if annotations.get("runbook_url"):
        paragraphs.append([_text("Runbook", annotations["runbook_url"])])
    paragraphs.append([_text(f"Control Tower dedup key: {key}")])
    one_line = " ".join(clean(f"{title}: {summary}").split())
    return {"fields": {
        "project": {"key": receiver.project},
        "issuetype": {"name": receiver.issue_type},
        "summary": one_line[:255],
        "description": adf(*paragraphs),
        "labels": ["controltower", label(key)],
    }}


@dataclass
class Jira:
    """Jira Cloud REST v3 calls of one receiver."""

    receiver: Receiver
    base: str
    auth: tuple[str, str]
    client: httpx.Client

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return call(self.client, method, self.base.rstrip("/") + path, body=body, auth=self.auth,
                    headers={"Accept": "application/json"}, timeout=self.receiver.timeout_seconds)

    def find_open(self, key: str) -> str | None:
        jql = f'labels = "{label(key)}" AND statusCategory != Done ORDER BY created DESC'
        found = json_of(self._call("POST", "/rest/api/3/search/jql",
                                   {"jql": jql, "fields": ["status"], "maxResults": 1}), "search")
        issues = found.get("issues") if isinstance(found, dict) else None
        if not isinstance(issues, list):
            raise DeliveryError(f"search: no list of issues in the answer {str(found)[:100]!r}")
        if not issues:
            return None
        first = issues[0]
        return issue_key(first.get("key") if isinstance(first, dict) else first, "search")

    def is_done(self, ticket: str) -> bool | None:
        """Whether the ticket's status is in the done category; None when it does not exist (any more)."""
        try:
            found = json_of(self._call("GET", f"/rest/api/3/issue/{ticket}?fields=status"), "issue")
        except DeliveryError as exc:
            if exc.status == 404:
                return None
            raise
        fields = found.get("fields") if isinstance(found, dict) else None
        status = fields.get("status") if isinstance(fields, dict) else None
        category = status.get("statusCategory") if isinstance(status, dict) else None
        return isinstance(category, dict) and category.get("key") == "done"

    def create(self, body: dict[str, Any]) -> tuple[str, str | None]:
        made = json_of(self._call("POST", "/rest/api/3/issue", body), "create issue")
        if not isinstance(made, dict) or not made.get("key"):
            raise DeliveryError(f"create issue: no key in the answer {str(made)[:100]!r}")
        ticket_id = made.get("id")
        return issue_key(made["key"], "create issue"), (str(ticket_id)[:100] if isinstance(ticket_id, str | int) else None)

    def transition_id(self, ticket: str) -> str:
        wanted = self.receiver.close_transition or DEFAULT_CLOSE
        if wanted.isdigit():
            return wanted
        found = json_of(self._call("GET", f"/rest/api/3/issue/{ticket}/transitions"), "transitions")
        options = found.get("transitions", []) if isinstance(found, dict) else []
        options = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
        for option in options:
            if str(option.get("name", "")).casefold() == wanted.casefold() and option.get("id") is not None:
                return str(option["id"])
        names = ", ".join(str(o.get("name")) for o in options) or "none"
        raise DeliveryError(f"{ticket}: no transition named {wanted!r} (available: {names})", permanent=True)

    def close(self, ticket: str, note: str) -> str:
        """Comment and close `ticket`; return what was done (it may be gone or closed by hand)."""
        done = self.is_done(ticket)
        if done is None:
            return f"{ticket} no longer exists"
        self._call("POST", f"/rest/api/3/issue/{ticket}/comment", {"body": adf([_text(note)])})
        if done:
            return f"{ticket} was already closed"
        self._call("POST", f"/rest/api/3/issue/{ticket}/transitions", {"transition": {"id": self.transition_id(ticket)}})
        return f"closed {ticket}"


def _older_episode(known: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    """Whether an open mapping was stored before this firing episode began (its resolve was lost)."""
    try:
        started = datetime.fromisoformat(str(alert.get("startsAt")))
    except ValueError:
        return False
    return started.tzinfo is not None and known["opened_at"] < started


def deliver(jira: Jira, store: TicketStore, key: str, alert: Mapping[str, Any], title: str, summary: str) -> str:
    """Open or close the ticket of one dedup key; return what was done (for logs and `alerts test`)."""
    name = jira.receiver.name
    known = store.get(name, key)
    if alert.get("status") == "resolved":
        ticket = known["ticket_key"] if known and known["state"] == "open" else None
        if known is None:
            ticket = jira.find_open(key)  # opened, then crashed before the mapping was stored
        if ticket is None:
            return "no open ticket to close"
        done = jira.close(ticket, f"Resolved at {alert.get('endsAt') or store.now.isoformat()}: {summary}")
        if known is None:
            store.opened(name, key, ticket, None)
        store.closed(name, key)
        return done
    if known is not None and known["state"] == "open" and not _older_episode(known, alert):
        return f"{known['ticket_key']} already open"
    ticket = jira.find_open(key)
    if ticket is not None:
        store.opened(name, key, ticket, None)
        return f"{ticket} found open"
    ticket, ticket_id = jira.create(issue_body(jira.receiver, key, alert, title, summary))
    store.opened(name, key, ticket, ticket_id)
    log.info("receiver %s opened %s for %s", name, ticket, key)
    return f"opened {ticket}"
