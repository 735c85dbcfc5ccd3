"""Deterministic retail business over simulated time: orders, inventory feeds, settlements.

Everything is anchored to absolute simulated time: the arrivals of one channel in one UTC hour
come from `Random(f"{seed}:{channel}:{hour}")` and an order's life from a generator seeded by
its correlation id. So the same seed over the same window gives the same events with the same
ids, and overlapping runs regenerate identical events that the store counts as duplicates
instead of storing twice. Faults (a `simulator.faults.FaultPlan`) bend the timeline.

`ids` picks who speaks (simulator.identities): `shared`, one correlation id per order with
every key; `real`, each system its own ids and only the keys it knows, plus ERP duplicates and
orphans. Both modes run the same orders on the same timeline (real-ID draws use generators of
their own).

Times inside the model are epoch seconds rounded to milliseconds; records carry RFC 3339.
`Simulation` yields `SimEvent`s (simulator.records) in simulated-time order from a heap;
`simulator.truth.GroundTruth` watches what was emitted and says what the product should find.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from simulator.identities import IDS_MODES, OrderIdentities, carrier_view, guid
from simulator.records import (
    Order,
    SimEvent,
    customer,
    drift,
    erp_document,
    iso,
    make_record,
    new_order,
    tracking,
)

__all__ = ["CHANNELS", "Order", "SimEvent", "Simulation", "iso", "lognormal"]

if TYPE_CHECKING:
    from simulator.faults import FaultPlan


@dataclass(frozen=True)
class ChannelProfile:
    """Per-channel volume and who speaks for it (`system` of its first hop)."""

    orders_per_hour: float
    system: str


CHANNELS: dict[str, ChannelProfile] = {
    "amazon": ChannelProfile(40.0, "marketplace"),
    "shopify": ChannelProfile(25.0, "marketplace"),
    "ebay": ChannelProfile(8.0, "marketplace"),
    "walmart": ChannelProfile(15.0, "marketplace"),
    "pos": ChannelProfile(30.0, "pos"),
}
MARKETPLACES = ("amazon", "shopify", "ebay", "walmart")
LOCATIONS = ("wh-east", "3pl-west")
CARRIERS = ("ups", "fedex", "usps")
# Volume multiplier per UTC hour, shaped for US shoppers (UTC-5): quiet at night, peaks at
# midday and in the evening; the mean is about 1 so `orders_per_hour` is the daily average.
DAILY_CURVE = (
    1.3, 1.2, 1.0, 0.7, 0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6,
    0.9, 1.1, 1.3, 1.4, 1.5, 1.5, 1.4, 1.3, 1.3, 1.4, 1.5, 1.4,
)
INVENTORY_INTERVAL_S = 900.0
SETTLEMENT_HOUR_UTC = 6
PEAK_FACTOR = 10.0
CANCEL_SHARE = 0.02
RETURN_SHARE = 0.05
SPLIT_SHARE = 0.12
POISON_SHARE = 0.1
DRIFT_SHARE = 0.2
# real-ID mode only (drawn from generators of their own, so the shared timeline stays as it is)
ERP_DUPLICATE_SHARE = 0.01  # orders the ERP posts twice, under two sales documents
ORPHAN_SHARE = 0.01  # per order volume: carrier scans of unknown parcels; ERP orders no channel sent
ORPHAN_INDEX = 9  # the "channel index" in an orphan's order number and document: never a channel's
SKUS = tuple(f"SKU-{n}" for n in range(10000, 10200))
_DAY = 86400.0


def lognormal(rng: random.Random, median_s: float, sigma: float) -> float:
    """A long-tailed step duration: most near the median, a few far beyond it."""
    return median_s * math.exp(rng.gauss(0.0, sigma))


class Simulation:
    """Yields the events of a run in simulated-time order, from `start` on, forever."""

    def __init__(
        self, *, seed: int, start: float, faults: FaultPlan, rate_scale: float = 1.0, ids: str = "shared"
    ) -> None:
        if rate_scale < 0:
            raise ValueError(f"rate_scale {rate_scale} is negative")
        if ids not in IDS_MODES:
            raise ValueError(f"ids {ids!r} is not one of {', '.join(IDS_MODES)}")
        self.ids = ids
        self.seed = seed
        self.start = round(start, 3)
        self.faults = faults
        self.rate_scale = rate_scale
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        hour = math.floor(self.start / 3600)
        self._push_raw(self.start, ("tick", hour))

    # -- the heap ---------------------------------------------------------------------------
    def _push_raw(self, at: float, item: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), item))

    def peek(self) -> float:
        """Simulated time of the next item (events are never earlier than this)."""
        return self._heap[0][0]

    def take_before(self, until: float) -> list[SimEvent]:
        """Every event with simulated time < `until`, in order; later ones stay queued."""
        out: list[SimEvent] = []
        while self._heap and self._heap[0][0] < until:
            at, _, item = heapq.heappop(self._heap)
            if item[0] == "tick":
                self._expand_hour(item[1])
            else:
                out.extend(self._emissions(at, item[1], item[2]))
        return out

    def hours(self, until: float) -> Iterator[list[SimEvent]]:
        """The events before `until` in chunks of at most one simulated hour (for progress)."""
        while self._heap and self.peek() < until:
            yield self.take_before(min(until, math.floor(self.peek() / 3600) * 3600 + 3600))

    # -- generation -------------------------------------------------------------------------
    def _expand_hour(self, hour: int) -> None:
        self._push_raw(hour * 3600.0 + 3600.0, ("tick", hour + 1))
        for channel in CHANNELS:
            self._orders_in_hour(channel, hour)
        self._inventory_in_hour(hour)
        if self.ids == "real":
            self._orphans_in_hour(hour)
        if hour % 24 == SETTLEMENT_HOUR_UTC:
            self._settlements(hour)

    def push(self, at: float, record: dict[str, Any], business: str | None = None) -> None:
        """Queue a record unless it falls before the run (or never happens: inf). `business`:
        the order it belongs to, for the ground truth (the record may not say)."""
        at = round(at, 3)
        if self.start <= at < math.inf:
            record["occurred_at"] = iso(at)
            self._push_raw(at, ("record", record, business))

    def _orders_in_hour(self, channel: str, hour: int) -> None:
        """Arrivals by thinning a Poisson process: candidates at the hour's highest rate."""
        rng = random.Random(f"{self.seed}:{channel}:{hour}")
        begin = hour * 3600.0
        base = CHANNELS[channel].orders_per_hour * DAILY_CURVE[hour % 24] * self.rate_scale
        top = base * (PEAK_FACTOR if self.faults.overlaps("peak", begin, begin + 3600) else 1.0)
        if top <= 0:
            return
        at, k = begin, 0
        while True:
            at += rng.expovariate(top) * 3600.0
            if at >= begin + 3600:
                return
            k += 1
            rate = base * (PEAK_FACTOR if self.faults.active("peak", at) else 1.0)
            order = new_order(rng, channel, list(CHANNELS).index(channel), hour, k, round(at, 3))
            if rng.random() * top < rate and at >= self.start:
                self._plan_order(order)

    def _plan_order(self, order: Order) -> None:
        rng = random.Random(f"{self.seed}:{order.correlation_id}")
        life = _Life(self, order, rng)
        sku, quantity = rng.choice(SKUS), rng.choice((1, 1, 1, 2, 2, 3, 4))
        location = rng.choice(LOCATIONS)
        t0 = order.received_at
        ship_by = datetime.fromtimestamp(t0, UTC).date() + timedelta(days=rng.choice((1, 2)))
        life.add("order", "received", CHANNELS[order.channel].system, t0, None, attributes={
            "sku": sku, "quantity": quantity, "expected_ship_date": ship_by.isoformat(),
        }, payload=customer(rng, sku, quantity))
        t = life.add("order", "validated", "middleware", t0 + lognormal(rng, 5, 0.6), t0)
        if order.channel != "pos":
            ack = t + lognormal(rng, 40, 0.9)
            if self.faults.active("slow_ack", ack, order.channel):
                ack += lognormal(rng, 7200, 0.5)
            t = life.add("order", "acknowledged", "middleware", ack, t)
        posted = self.faults.defer("erp_outage", t + lognormal(rng, 180, 1.0), rng)
        if self.faults.active("poison", t0) and rng.random() < POISON_SHARE:
            life.add("order", "erp_posted", "erp", posted, t, who="erp", status="dead_letter",
                     error=("ERP_POISON", "sales order rejected: ship-to address fails validation"))
            return
        rng.randrange(10**8)  # was the document number's draw: the rest of the timeline stays
        t = life.add("order", "erp_posted", "erp", posted, t, who="erp",
                     attributes={"erp_document": erp_document(order.seq)})
        life.maybe_post_twice(t)
        if order.channel == "pos":
            return
        if rng.random() < CANCEL_SHARE:
            asked = life.add("cancellation", "requested", CHANNELS[order.channel].system,
                             t + lognormal(rng, 1800, 0.8), t)
            life.add("cancellation", "confirmed", "middleware", asked + lognormal(rng, 300, 0.6), asked)
            return
        self._fulfil(life, rng, location, sku, quantity, t)

    def _fulfil(self, life: _Life, rng: random.Random, location: str, sku: str, quantity: int, posted: float) -> None:
        where = {"location": location, "sku": sku}
        released = self.faults.defer("erp_outage", posted + lognormal(rng, 1200, 0.8), rng)
        life.add("fulfilment", "released", "erp", released, posted, who="erp", attributes=where)
        picked = released + lognormal(rng, 7200, 0.7)
        if self.faults.active("warehouse_backlog", picked):
            picked += lognormal(rng, 6 * 3600, 0.5)
        life.add("fulfilment", "picked", "wms", picked, released, who="wms", attributes=where)
        parts = (quantity - 1, 1) if quantity >= 2 and rng.random() < SPLIT_SHARE else (quantity,)
        delivered = picked
        for n, part in enumerate(parts, start=1):
            carrier = rng.choice(CARRIERS)
            keys = {**where, "quantity": part, "carrier": carrier, "tracking_number": tracking(rng, carrier)}
            shipped = life.add("fulfilment", "shipped", "wms", picked + lognormal(rng, 3600, 0.6), picked, n=n, who="wms", attributes=keys)
            confirmed = self.faults.defer("carrier_outage", shipped + lognormal(rng, 900, 0.8), rng)
            life.add("shipment", "shipment_confirmed", "middleware", confirmed, shipped, n=n, who="confirm", attributes=keys)
            # the carrier's first (origin) scan, then delivery: Walmart alarms on a scan > 48 h late
            scanned = life.add("shipment", "first_scan", "carrier", confirmed + lognormal(rng, 6 * 3600, 0.6), confirmed, n=n, who="carrier", attributes=keys)
            delivered = life.add("shipment", "delivered", "carrier", scanned + lognormal(rng, 1.5 * _DAY, 0.4), scanned, n=n, who="carrier", attributes=keys)
        if rng.random() < RETURN_SHARE:
            back = life.add("return", "received", "wms", delivered + lognormal(rng, 7 * _DAY, 0.5), delivered, who="return", attributes=where)
            seen = life.add("return", "inspected", "wms", back + lognormal(rng, _DAY, 0.5), back, who="return", attributes=where)
            life.add("return", "refund_posted", "erp", seen + lognormal(rng, 4 * 3600, 0.7), seen, who="refund")

    def _inventory_in_hour(self, hour: int) -> None:
        """Each channel × location feed publishes every ~15 minutes unless a stall holds it."""
        for channel in MARKETPLACES:
            for location in LOCATIONS:
                rng = random.Random(f"{self.seed}:inv:{channel}:{location}:{hour}")
                for slot in range(int(3600 // INVENTORY_INTERVAL_S)):
                    at = round(hour * 3600.0 + slot * INVENTORY_INTERVAL_S + rng.uniform(0, 180), 3)
                    skus = rng.randint(len(SKUS) - 20, len(SKUS))
                    if self.faults.active("inventory_stall", at, channel, location):
                        continue
                    feed = f"inv-{channel}-{location}-{int(at)}"
                    self.push(at, make_record(feed, None, channel, "inventory", "published", "middleware", at, None, 1, {
                        "location": location, "sku_count": skus, "feed_id": feed,
                    }))

    def _settlements(self, hour: int) -> None:
        """One settlement report per marketplace per day, parsed and settled hours later."""
        day = datetime.fromtimestamp(hour * 3600.0, UTC).date().isoformat()
        for channel in MARKETPLACES:
            rng = random.Random(f"{self.seed}:stl:{channel}:{day}")
            cid = f"stl-{channel}-{day}"
            keys = {"settlement_id": f"{rng.randrange(10**10, 10**11)}",
                    "order_count": round(CHANNELS[channel].orders_per_hour * 24 * self.rate_scale)}
            received = hour * 3600.0 + rng.uniform(0, 3600)
            settled = received + lognormal(rng, 3 * 3600, 0.5)
            self.push(received, make_record(cid, None, channel, "settlement", "received", "marketplace", received, None, 1, dict(keys)))
            self.push(settled, make_record(cid, None, channel, "settlement", "settled", "erp", settled, received, 1, dict(keys)))

    def _orphans_in_hour(self, hour: int) -> None:
        """Real-ID mode: records whose keys link to no channel order. A carrier scans a parcel
        nobody shipped (no channel: the carrier does not know one); the ERP posts an order no
        channel sent (a manual entry, a replayed IDoc). Numbers never collide with real ones."""
        rng = random.Random(f"{self.seed}:orphans:{hour}")
        volume = sum(p.orders_per_hour for p in CHANNELS.values()) * DAILY_CURVE[hour % 24] * self.rate_scale
        for what in ("scan", "posting"):
            at, k = hour * 3600.0, 0
            rate = volume * ORPHAN_SHARE
            while rate > 0:
                at += rng.expovariate(rate) * 3600.0
                if at >= hour * 3600.0 + 3600:
                    break
                k += 1
                if what == "scan":
                    carrier = rng.choice(CARRIERS)
                    cid = f"{carrier}-{rng.getrandbits(64):016x}"
                    self.push(at, make_record(cid, None, None, "shipment", "first_scan", "carrier", at, None, 1, {
                        "carrier": carrier, "tracking_number": tracking(rng, carrier)}))
                else:
                    channel = rng.choice(list(CHANNELS))
                    ghost = new_order(rng, channel, ORPHAN_INDEX, hour, k, round(at, 3))
                    posted = self.faults.defer("erp_outage", at, rng)  # a down ERP posts nothing
                    self.push(posted, make_record(guid(rng), ghost.order_id, channel, "order", "erp_posted", "erp", posted, None, 1, {
                        "erp_document": erp_document(ghost.seq)}))

    # -- faults on emission -----------------------------------------------------------------
    def _emissions(self, at: float, record: dict[str, Any], business: str | None) -> list[SimEvent]:
        """The record as sent: maybe drifted (malformed) or repeated by a duplicate storm."""
        rng = random.Random(f"{self.seed}:emit:{record['event_id']}")
        channel = record.get("channel")
        if self.faults.active("schema_drift", at, channel) and rng.random() < DRIFT_SHARE:
            return [SimEvent(at, drift(record, rng), malformed=True, plain=False, business=business)]
        if self.faults.active("duplicate_storm", at):
            copies = rng.choice((2, 3))
            return [SimEvent(at, record, plain=False, business=business)] + [
                SimEvent(at, dict(record), duplicate=True, plain=False, business=business) for _ in range(copies - 1)
            ]
        return [SimEvent(at, record, plain=record.get("status", "ok") == "ok", business=business)]


class _Life:
    """Writes one order's milestones; each latency is measured from the step it follows.

    Each step names who records it (`who`, a role of simulator.identities); in shared-ID mode
    every step goes under the order's one correlation id with all its keys, in real-ID mode
    under that system's own id with only the keys it knows. Real-ID draws come from a
    generator of their own, so both modes share the same timeline."""

    def __init__(self, sim: Simulation, order: Order, rng: random.Random) -> None:
        self.sim, self.order, self.rng = sim, order, rng
        self.ids: OrderIdentities | None = None
        if sim.ids == "real":
            self.id_rng = random.Random(f"{sim.seed}:{order.correlation_id}:ids")
            self.ids = OrderIdentities(order, self.id_rng)

    def maybe_post_twice(self, posted: float) -> None:
        """Real-ID mode: now and then the ERP posts the order again, under a second document."""
        if self.ids is None or self.id_rng.random() >= ERP_DUPLICATE_SHARE:
            return
        again = self.sim.faults.defer("erp_outage", posted + lognormal(self.id_rng, 900, 0.8), self.id_rng)
        self.add("order", "erp_posted", "erp", again, posted, n=1, who="erp_duplicate")

    def add(
        self,
        flow: str,
        stage: str,
        system: str,
        at: float,
        after: float | None,
        *,
        n: int = 1,
        attributes: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        status: str = "ok",
        error: tuple[str, str] | None = None,
        who: str = "channel",
    ) -> float:
        o = self.order
        if self.ids is None:
            keys = {"external_order_id": o.external_order_id, **(attributes or {})}
            if o.marketplace_order_id:
                keys["marketplace_order_id"] = o.marketplace_order_id
            record = make_record(o.correlation_id, o.order_id, o.channel, flow, stage, system, at, after, n, keys)
        else:
            attributes = attributes or {}
            speaker = self.ids.speaker(who, n, attributes)
            known = carrier_view(attributes) if who == "carrier" else attributes
            keys = {**known, **speaker.keys}
            record = make_record(speaker.cid, speaker.order_id, speaker.channel, flow, stage, system, at, after, n, keys)
        record["status"] = status
        if error:
            record["error_code"], record["error_message"] = error
        if payload:
            record["payload"] = payload
        self.sim.push(at, record, o.correlation_id)
        return round(at, 3)
