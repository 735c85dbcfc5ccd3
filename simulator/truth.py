"""What an emitted stream implies the product should find (the simulator's ground truth).

`GroundTruth` is fed every emitted `SimEvent` and says which orders are unposted, how long
acknowledgements and ERP postings took, which inventory feeds stalled, which business
transactions are orphans or duplicate orders, and how many records were malformed or
duplicated, so tests and benchmarks compare the product's answers with known ones.

Everything is per *business transaction*, as the simulator knows it (`SimEvent.business_key`:
the channel's correlation id of the order; an event of no order is its own business), not
as the records say it: in real-ID mode an order's hops travel under several correlation ids
and the product has to join them. The business is named by its channel correlation id,
which is also the product's *canonical member* (the member with the earliest first event:
the channel's `order.received` opens every order).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from controltower.identity import DEFAULT_IDENTITY_KEYS, refusal
from simulator.model import INVENTORY_INTERVAL_S, LOCATIONS, MARKETPLACES
from simulator.records import SimEvent, iso

# milestones that say a business transaction started where it should (design: "origin")
ORIGINS = frozenset({"order.received", "return.requested"})
ORPHAN_GRACE_S = 900.0  # controltower.settings orphan_grace_seconds' default
UNKNOWN_CHANNEL = "unknown"


@dataclass
class _Business:
    """What the stream said about one business transaction (well-formed records only)."""

    first_at: float
    system: str | None = None  # the system of its earliest event
    channel: str | None = None  # the channel of its earliest event that has one
    channel_at: float = math.inf
    origin: bool = False
    identity: bool = False  # at least one linkable identity key
    erp_documents: set[str] = field(default_factory=set)
    cids: set[str] = field(default_factory=set)

    def see(self, event: SimEvent) -> None:
        r = event.record
        self.cids.add(r["correlation_id"])
        if self.system is None or event.at < self.first_at:  # events come in time order
            self.first_at, self.system = event.at, r.get("system")
        channel = r.get("channel")
        if channel and event.at < self.channel_at:
            self.channel, self.channel_at = channel, event.at
        if r.get("status") == "ok" and event.milestone in ORIGINS:
            self.origin = True
        keys = {"order_id": r.get("order_id"), **(r.get("attributes") or {})}
        if any(k in keys and keys[k] is not None and refusal(keys[k]) is None for k in DEFAULT_IDENTITY_KEYS):
            self.identity = True
        document = keys.get("erp_document")
        if document is not None:
            self.erp_documents.add(str(document))


@dataclass
class GroundTruth:
    """What the emitted stream implies the product should find; fed every emitted event."""

    received: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    posted: dict[str, float] = field(default_factory=dict)
    ack_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    feeds: dict[tuple[str, str], float] = field(default_factory=dict)
    events: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    businesses: dict[str, _Business] = field(default_factory=dict)
    malformed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    records: int = 0

    def observe(self, event: SimEvent) -> None:
        self.records += 1
        if event.malformed:
            self.malformed += 1
            return
        if event.duplicate:
            self.duplicates += 1
            return
        r = event.record
        business = event.business_key
        seen = self.businesses.get(business)
        if seen is None:
            seen = self.businesses[business] = _Business(event.at)
        seen.see(event)
        self.events[r.get("channel") or UNKNOWN_CHANNEL][r["flow"]] += 1
        if r["status"] == "dead_letter":
            self.dead_letters += 1
        if r["status"] != "ok":
            return
        milestone = event.milestone
        if milestone == "order.received":
            self.received[business] = (r.get("order_id", ""), r["channel"], event.at)
        elif milestone == "order.erp_posted":
            self.posted[business] = min(event.at, self.posted.get(business, math.inf))
        elif milestone == "order.acknowledged" and business in self.received:
            self.ack_ms[r["channel"]].append((event.at - self.received[business][2]) * 1000.0)
        elif milestone == "inventory.published":
            self.feeds[(r["channel"], r["attributes"]["location"])] = event.at

    def unposted(self) -> list[str]:
        """Orders received (well-formed, ok) that no system posted (no ok ERP posting by any
        member of their business transaction)."""
        return sorted(set(self.received) - set(self.posted))

    def erp_posting_ms(self) -> dict[str, float]:
        """Per posted order: from the channel's order.received to the first ERP posting, in
        ms, across the correlation ids of the two systems."""
        return {
            b: (self.posted[b] - at) * 1000.0
            for b, (_, _, at) in self.received.items()
            if b in self.posted
        }

    def orphans(self, end: float, grace: float = ORPHAN_GRACE_S) -> list[str]:
        """Business transactions older than `grace` at `end` with an identity key and no
        origin milestone (an ERP posting for an order no channel sent, a parcel nobody shipped)."""
        return sorted(
            b for b, s in self.businesses.items()
            if s.identity and not s.origin and s.first_at < end - grace
        )

    def duplicate_orders(self) -> list[str]:
        """Orders (business transactions that reached order.received) under two or more ERP documents."""
        return sorted(b for b in self.received if len(self.businesses[b].erp_documents) >= 2)

    def stalled_feeds(self, end: float) -> list[tuple[str, str, float | None]]:
        """Feeds silent for more than two publishing intervals at the end of the run."""
        out: list[tuple[str, str, float | None]] = []
        for channel in MARKETPLACES:
            for location in LOCATIONS:
                last = self.feeds.get((channel, location))
                if last is None or end - last > 2 * INVENTORY_INTERVAL_S:
                    out.append((channel, location, last))
        return out

    def to_json(self, *, start: float, end: float, seed: int, faults: list[dict[str, Any]]) -> dict[str, Any]:
        unposted = self.unposted()
        erp_ms = self.erp_posting_ms()
        by_channel: dict[str, list[float]] = defaultdict(list)
        for b, ms in erp_ms.items():
            by_channel[self.received[b][1]].append(ms)
        orphans = self.orphans(end)
        orphan_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for b in orphans:
            s = self.businesses[b]
            orphan_counts[s.system or UNKNOWN_CHANNEL][s.channel or UNKNOWN_CHANNEL] += 1
        duplicates = self.duplicate_orders()
        orders = defaultdict(int)
        for _, channel, _ in self.received.values():
            orders[channel] += 1
        dup_by_channel = defaultdict(int)
        for b in duplicates:
            dup_by_channel[self.received[b][1]] += 1
        return {
            "seed": seed,
            "start": iso(start),
            "end": iso(end),
            "faults": faults,
            "unposted_count": len(unposted),
            "unposted_orders": [
                {"correlation_id": b, "order_id": self.received[b][0], "channel": self.received[b][1],
                 "received_at": iso(self.received[b][2]), "correlation_ids": sorted(self.businesses[b].cids)}
                for b in unposted
            ],
            "ack_latency_ms": {ch: _summary(v) for ch, v in sorted(self.ack_ms.items())},
            "erp_posting_ms": {ch: _summary(v) for ch, v in sorted(by_channel.items())},
            "erp_posting_samples": {
                b: {"channel": self.received[b][1], "latency_ms": round(ms, 1)} for b, ms in sorted(erp_ms.items())
            },
            "business_count": len(self.businesses),
            "orders_received": dict(sorted(orders.items())),
            "orphan_count": len(orphans),
            "orphans_by_system": {sys: dict(sorted(chs.items())) for sys, chs in sorted(orphan_counts.items())},
            "orphans": [
                {"correlation_id": b, "system": self.businesses[b].system, "channel": self.businesses[b].channel,
                 "first_event_at": iso(self.businesses[b].first_at)}
                for b in orphans
            ],
            "duplicate_order_count": len(duplicates),
            "duplicate_orders": [
                {"correlation_id": b, "order_id": self.received[b][0], "channel": self.received[b][1],
                 "erp_documents": sorted(self.businesses[b].erp_documents)}
                for b in duplicates
            ],
            "duplicate_order_rate": {
                ch: round(dup_by_channel[ch] / n, 6) for ch, n in sorted(orders.items()) if n
            },
            "stalled_feeds": [
                {"channel": c, "location": loc, "last_published_at": None if last is None else iso(last)}
                for c, loc, last in self.stalled_feeds(end)
            ],
            "events": {ch: dict(sorted(flows.items())) for ch, flows in sorted(self.events.items())},
            "events_total": sum(sum(f.values()) for f in self.events.values()),
            "records_sent": self.records,
            "malformed_records": self.malformed,
            "duplicate_records": self.duplicates,
            "dead_letters": self.dead_letters,
        }


def _summary(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], 1)

    return {"count": len(ordered), "p50": rank(0.5), "p95": rank(0.95)}
