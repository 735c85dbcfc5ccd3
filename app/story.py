"""The transaction story: one business transaction told in plain words support can read out.

Pure: the `controltower.transactions.get` shape in, one sentence of plain text out (the caller
escapes it for wherever it is shown). Times are shown in the zone passed in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from controltower.vocab import label

_DONE = {
    "order.received": "received from {channel}",
    "order.acknowledged": "acknowledged",
    "order.erp_posted": "posted to the ERP",
    "fulfilment.released": "released to the warehouse",
    "fulfilment.shipped": "shipped",
    "shipment.shipment_confirmed": "shipment confirmed to {channel}",
    "shipment.delivered": "delivered",
}
_STEP = {
    "order.received": "receiving the order",
    "order.acknowledged": "acknowledgement to {channel}",
    "order.erp_posted": "posting to the ERP",
    "fulfilment.released": "release to the warehouse",
    "fulfilment.shipped": "shipping",
    "shipment.shipment_confirmed": "confirmation to {channel}",
    "shipment.delivered": "delivery",
}
_FAILED = ("error", "retry", "dead_letter")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _parse(moment: Any) -> datetime:
    return pd.Timestamp(moment).tz_convert(UTC).to_pydatetime() if pd.Timestamp(moment).tzinfo else (
        pd.Timestamp(moment).tz_localize(UTC).to_pydatetime())


def transaction_story(tx: dict[str, Any], *, tz: Any = UTC) -> str:
    """A plain-language account of one transaction (the `controltower.transactions.get` shape)
    that support can read to a customer: milestones with times, failed attempts per step, and the
    step it waits on with its deadline. Times in `tz`, with the date when it differs from the first. Pure."""
    channel = label(tx.get("channel")) or "the channel"
    reached = sorted(((m, _parse(at).astimezone(tz)) for m, at in (tx.get("milestones") or {}).items()),
                     key=lambda item: item[1])
    first_day = reached[0][1].date() if reached else None

    def when(moment: datetime) -> str:
        moment = moment.astimezone(tz)
        if first_day is not None and moment.date() != first_day:
            return f"{moment:%d %b %H:%M}".lstrip("0")
        return f"{moment:%H:%M}"

    def phrase(table: dict[str, str], milestone: str) -> str:
        text = table.get(milestone) or label(milestone.split(".")[-1]).lower()
        return text.format(channel=channel)

    steps = [f"{phrase(_DONE, m)} {when(at)}" for m, at in reached]
    story = ", ".join(steps) if steps else f"No milestone reached yet for this {channel} order"

    failures: dict[str, list[str]] = {}
    for event in sorted(tx.get("events") or [], key=lambda e: str(e.get("occurred_at"))):
        if event.get("status") in _FAILED:
            failures.setdefault(f"{event.get('flow')}.{event.get('stage')}", []).append(event["status"])
    clauses = []
    for milestone, statuses in failures.items():
        clause = f"{phrase(_STEP, milestone)} failed {_times(len(statuses))}"
        if "dead_letter" in statuses:
            clause += " (parked in the dead-letter queue)"
        elif milestone in dict(reached):
            clause += ", then succeeded"
        clauses.append(clause)
    if clauses:
        story += "; " + "; ".join(clauses)

    waiting = [v for v in tx.get("sla") or [] if v.get("state") in ("overdue", "pending") and v.get("due_at")]
    if waiting:
        blocking = min(waiting, key=lambda v: (v["state"] != "overdue", str(v["due_at"])))
        due = when(_parse(blocking["due_at"]))
        name = label(blocking["sla"])
        name = name if name[:3].isupper() else name[:1].lower() + name[1:]
        deadline = f"overdue since {due}" if blocking["state"] == "overdue" else f"due by {due}"
        story += f" — blocking step: {name}, {deadline}"
    story = story[:1].upper() + story[1:]
    return story + "."

