"""The transaction story: one business transaction told in plain words support can read out.

Pure: the `controltower.transactions.get` shape in, one sentence of plain text out (the caller
escapes it for wherever it is shown). Times are shown in the zone passed in. A business
transaction stitched from several systems' correlation ids names each system and the ID it
used: "Amazon received order 112-… at 09:12; the ERP posted it as 4500001 at 09:14; the
warehouse shipped it as SHP-88 with tracking 1Z… at 14:05". Who a system is, which ID kinds it
speaks and how each milestone and ID reads are tables below, so a new system or key needs no code.
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

# -- a business transaction across systems ------------------------------------------------------
# What a system did at a milestone; `{it}` is the order ("order 112-…" at first mention, then "it").
_DID = {
    "order.received": "received {it}",
    "order.validated": "validated {it}",
    "order.acknowledged": "acknowledged {it}",
    "order.erp_posted": "posted {it}",
    "fulfilment.released": "released {it}",
    "fulfilment.picked": "picked {it}",
    "fulfilment.shipped": "shipped {it}",
    "shipment.shipment_confirmed": "confirmed {it} as shipped to {channel}",
    "shipment.first_scan": "scanned {it}",
    "shipment.delivered": "delivered {it}",
    "cancellation.requested": "cancelled {it}",
    "cancellation.confirmed": "confirmed the cancellation of {it}",
    "return.requested": "opened a return for {it}",
    "return.received": "received the return of {it}",
    "return.inspected": "inspected the return of {it}",
    "return.refund_posted": "refunded {it}",
}
# Who a system (an event's `system`) is in a sentence; others by their label.
_WHO = {
    "marketplace": "{channel}",
    "erp": "the ERP",
    "wms": "the warehouse",
    "3pl": "the 3PL",
    "carrier": "the carrier",
    "middleware": "the middleware",
    "oms": "the order management system",
    "pos": "the till",
}
# The ID kinds a system speaks ("the ID it used"), as groups of alternatives: each group names its
# first kind the member carries. A flow's own IDs (a return's) come first whatever the system.
_ORDER_KINDS = ("marketplace_order_id", "external_order_id", "order_id")
_SYSTEM_IDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "marketplace": (_ORDER_KINDS,),
    "pos": (_ORDER_KINDS,),
    "erp": (("erp_document",),),
    "wms": (("shipment_id",), ("tracking_number",)),
    "3pl": (("shipment_id",), ("tracking_number",)),
    "carrier": (("tracking_number", "shipment_id"),),
}
_FLOW_IDS: dict[str, tuple[tuple[str, ...], ...]] = {"return": (("return_id", "rma"),)}
# Any other system: the identity keys it brought that the story has not named yet, in this order.
_FALLBACK_IDS = (_ORDER_KINDS, ("erp_document",), ("shipment_id",), ("tracking_number",), ("return_id",), ("rma",))
# How an ID reads after the verb ("posted it as 4500001", "shipped it with tracking 1Z…").
_ID_PHRASE = {"tracking_number": "with tracking {}", "return_id": "as return {}", "rma": "under RMA {}"}
_MAX_VALUES = 3


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
    reached = sorted(((m, _parse(at).astimezone(tz)) for m, at in (tx.get("milestones") or {}).items()
                      if not m.endswith(".replayed")),  # told by the replay clause below
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

    # several systems' ids, or one system's without a channel (a carrier's scan): say who did what
    if tx.get("reached_by") and (len(tx.get("correlation_ids") or ()) > 1 or not tx.get("channel")):
        story = _across_systems(tx, reached, channel)
    else:
        steps = [f"{phrase(_DONE, m)} {when(at)}" for m, at in reached]
        story = ", ".join(steps) if steps else f"No milestone reached yet for this {channel} order"
    if not reached and not tx.get("channel"):
        story = "No milestone reached yet for this order"

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
    replays = replay_clauses(tx, when)
    if replays:
        story += "; " + "; ".join(replays)

    waiting = [v for v in tx.get("sla") or [] if v.get("state") in ("overdue", "pending") and v.get("due_at")]
    if waiting:
        blocking = min(waiting, key=lambda v: (v["state"] != "overdue", str(v["due_at"])))
        due = when(_parse(blocking["due_at"]))
        name = label(blocking["sla"])
        name = name if name[:3].isupper() else name[:1].lower() + name[1:]
        calendar = blocking.get("calendar")
        if isinstance(calendar, dict) and calendar.get("due"):  # a business-day deadline, in its own time zone
            due = str(calendar["due"])
        deadline = f"overdue since {due}" if blocking["state"] == "overdue" else f"due by {due}"
        story += f" — blocking step: {name}, {deadline}"
    story = story[:1].upper() + story[1:]
    return story + "."


def _values(values: list[Any]) -> str:
    shown = [str(v) for v in values[:_MAX_VALUES]]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return text + (" …" if len(values) > _MAX_VALUES else "")


def ids_used(member: dict[str, Any], system: str | None, flow: str | None,
             named: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> list[tuple[str, list[Any]]]:
    """The IDs a member used, as (kind, values): the kinds its system speaks (`_SYSTEM_IDS`, a
    flow's own first), else the identity keys it carries that are not `named` yet. Pure."""
    keys = member.get("keys") or {}
    groups = _FLOW_IDS.get(flow or "", ()) + _SYSTEM_IDS.get(system or "", ())
    out = []
    for group in groups:
        kind = next((k for k in group if keys.get(k)), None)
        if kind:
            out.append((kind, list(keys[kind])))
    if out:
        return out
    for group in _FALLBACK_IDS:
        for kind in group:
            fresh = [v for v in keys.get(kind) or [] if (kind, str(v)) not in named]
            if fresh:
                out.append((kind, fresh))
                break
    return out


def _across_systems(tx: dict[str, Any], reached: list[tuple[str, datetime]], channel: str) -> str:
    """Milestones in time order, one clause per run of milestones one member's system reached:
    who it was, what it did and the ID it used (at its first clause), at what time (with the
    date whenever it changes)."""
    members = {m.get("correlation_id"): m for m in tx.get("members") or []}
    reached_by = tx.get("reached_by") or {}
    named: set[tuple[str, str]] = set()
    clauses: list[tuple[tuple[Any, Any], list[str]]] = []
    told: set[Any] = set()  # members whose IDs were named
    day = reached[0][1].date() if reached else None
    for milestone, at in reached:
        by = reached_by.get(milestone) or {}
        cid, system = by.get("correlation_id"), by.get("system")
        template = _DID.get(milestone) or "recorded " + label(milestone.split(".")[-1]).lower() + " for {it}"
        at_text = f"at {at:%H:%M}" if at.date() == day else f"on {at:%d %b}".replace(" 0", " ") + f" at {at:%H:%M}"
        day = at.date()
        if clauses and clauses[-1][0] == (cid, system):
            clauses[-1][1].append(f"{template.format(it='it', channel=channel)} {at_text}")
            continue
        member = members.get(cid) or {}
        ids = ids_used(member, system, milestone.split(".")[0], named) if cid not in told else []
        it = "it"
        if not told:  # the first clause introduces the order, by its number where it has one
            order = next(((k, v) for k, v in ids if k in _ORDER_KINDS), None)
            it = f"order {_values(order[1])}" if order else f"the {tx.get('flow') or 'order'}"
            ids = [(k, v) for k, v in ids if k not in _ORDER_KINDS] if order else ids
        told.add(cid)
        named.update((k, str(v)) for k, values in (member.get("keys") or {}).items() for v in values)
        used = "".join(" " + _ID_PHRASE.get(k, "as {}").format(_values(v)) for k, v in ids)
        who = _WHO.get(system or "", label(system) or "an unnamed system").format(channel=channel)
        clauses.append(((cid, system), [f"{who} {template.format(it=it, channel=channel)}{used} {at_text}"]))
    if not clauses:
        return f"No milestone reached yet for this {channel} order"
    story = "; ".join(", ".join(acts[:-1]) + " and " + acts[-1] if len(acts) > 1 else acts[0] for _, acts in clauses)
    documents = list(dict.fromkeys(str(v) for m in members.values() for v in (m.get("keys") or {}).get("erp_document", [])))
    if len(documents) > 1:  # one order, several ERP documents: support must see both
        story += f"; the ERP holds it under {len(documents)} documents, {_values(documents)}"
    return story


def replay_clauses(tx: dict[str, Any], when: Any) -> list[str]:
    """"replayed by dana at 10:42, posted at 10:43" per replay lineage event (stage `replayed`,
    source `replay`: written by the replay executor, never by a sender): who asked, when it was sent, and when the milestone the
    replay produces (`attributes.replay_produces`) was reached at or after it. Pure."""
    milestones = {m: _parse(at) for m, at in (tx.get("milestones") or {}).items()}
    out = []
    for event in sorted(tx.get("events") or [], key=lambda e: str(e.get("occurred_at"))):
        attributes = event.get("attributes") or {}
        if event.get("stage") != "replayed" or not attributes.get("replay_of") or event.get("source") != "replay":
            continue  # only the executor's own lineage events (source "replay"): a sender cannot forge one
        at = _parse(event["occurred_at"])
        clause = f"replayed by {attributes.get('replay_by') or 'someone'} at {when(at)}"
        produces = str(attributes.get("replay_produces") or "")
        if produces:
            verb = (_DID.get(produces) or "reached " + label(produces.split(".")[-1]).lower()).replace(" {it}", "")
            done = milestones.get(produces)
            clause += f", {verb} at {when(done)}" if done is not None and done >= at else f", not {verb} yet"
        out.append(clause)
    return out
