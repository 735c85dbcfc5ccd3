"""What an emitted stream implies the product should find (the simulator's ground truth).

`GroundTruth` is fed every emitted `SimEvent` and says which orders are unposted, how long
acknowledgements took, which inventory feeds stalled and how many records were malformed or
duplicated, so tests and benchmarks compare the product's answers with known ones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simulator.model import INVENTORY_INTERVAL_S, LOCATIONS, MARKETPLACES
from simulator.records import SimEvent, iso


@dataclass
class GroundTruth:
    """What the emitted stream implies the product should find; fed every emitted event."""

    received: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    posted: set[str] = field(default_factory=set)
    ack_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    feeds: dict[tuple[str, str], float] = field(default_factory=dict)
    events: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
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
        self.events[r["channel"]][r["flow"]] += 1
        if r["status"] == "dead_letter":
            self.dead_letters += 1
        if r["status"] != "ok":
            return
        cid, milestone = r["correlation_id"], event.milestone
        if milestone == "order.received":
            self.received[cid] = (r.get("order_id", ""), r["channel"], event.at)
        elif milestone == "order.erp_posted":
            self.posted.add(cid)
        elif milestone == "order.acknowledged" and cid in self.received:
            self.ack_ms[r["channel"]].append((event.at - self.received[cid][2]) * 1000.0)
        elif milestone == "inventory.published":
            self.feeds[(r["channel"], r["attributes"]["location"])] = event.at

    def unposted(self) -> list[str]:
        """Orders received (well-formed, ok) with no successful ERP posting emitted."""
        return sorted(set(self.received) - self.posted)

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
        return {
            "seed": seed,
            "start": iso(start),
            "end": iso(end),
            "faults": faults,
            "unposted_count": len(unposted),
            "unposted_orders": [
                {"correlation_id": cid, "order_id": self.received[cid][0], "channel": self.received[cid][1],
                 "received_at": iso(self.received[cid][2])}
                for cid in unposted
            ],
            "ack_latency_ms": {ch: _summary(v) for ch, v in sorted(self.ack_ms.items())},
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
