"""Who says what about one order: the correlation ID and keys each system really uses.

Two modes (`IDS_MODES`): `shared` sends every hop of an order under one correlation id with
every key (the simple world); `real` gives each system its own correlation id and only the
keys it would know, so the product must join them into one business transaction:

| speaker (role)   | correlation id             | knows                                              |
| ---------------- | -------------------------- | -------------------------------------------------- |
| `channel`        | the connector's trace id   | order_id, external/marketplace order id, channel   |
| `erp`            | an SAP-like message GUID   | order_id, external_order_id, erp_document, channel |
| `erp_duplicate`  | another GUID               | the same order under a second erp_document         |
| `wms`            | `WMS-…`                    | erp_document, shipment_id, tracking; a 3PL no channel |
| `carrier`        | `<carrier>-…`, per parcel  | the tracking number only; no channel               |
| `confirm`        | a new trace id, per parcel | order_id, external_order_id, tracking_number       |
| `return`         | `WMS-…` (returns desk)     | order_id, rma                                      |
| `refund`         | a GUID                     | order_id, rma, return_id                           |

Pure: every draw comes from the order's own identity generator (never the timeline's), so a
real-ID run has the same orders at the same times as a shared one.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from simulator.records import Order, digits, erp_document

IDS_MODES = ("shared", "real")
MAX_PARTS = 2  # a split order ships in at most two parcels
THIRD_PARTY = "3pl-west"  # a 3PL does not know the channel an order came from
# what a carrier's scan carries of the shipment's attributes
CARRIER_KNOWS = frozenset({"tracking_number", "carrier"})


@dataclass(frozen=True)
class Speaker:
    """One system's view of an order: its correlation id, order id, channel and keys."""

    cid: str
    order_id: str | None
    channel: str | None
    keys: dict[str, Any]


def trace_id(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


def guid(rng: random.Random) -> str:
    """An SAP PI/PO message id: 32 upper-case hex digits."""
    return trace_id(rng).upper()


def wms_id(rng: random.Random) -> str:
    return f"WMS-{rng.getrandbits(64):016X}"


class OrderIdentities:
    """The identities one order is known by in each system (real-ID mode)."""

    def __init__(self, order: Order, rng: random.Random) -> None:
        self.order = order
        self.erp_document = erp_document(order.seq)
        self.duplicate_document = erp_document(order.seq, prefix="46")
        self.rma = f"RMA-{self.erp_document[2:]}"
        self.return_id = f"R{digits(rng, 9)}"
        self.erp_cid, self.erp_duplicate_cid, self.refund_cid = guid(rng), guid(rng), guid(rng)
        self.wms_cid, self.return_cid = wms_id(rng), wms_id(rng)
        self.parcels = [(trace_id(rng), f"{rng.getrandbits(64):016x}") for _ in range(MAX_PARTS)]

    def shipment_id(self, n: int) -> str:
        return f"SHP-{self.erp_document[2:]}-{n}"

    def speaker(self, role: str, n: int, attributes: dict[str, Any]) -> Speaker:
        """The view of `role` for parcel `n` (1-based) of a step with these `attributes`."""
        o = self.order
        known = {"external_order_id": o.external_order_id}
        if o.marketplace_order_id:
            known["marketplace_order_id"] = o.marketplace_order_id
        warehouse_channel = None if attributes.get("location") == THIRD_PARTY else o.channel
        if role == "channel":
            return Speaker(o.correlation_id, o.order_id, o.channel, known)
        if role == "erp":
            return Speaker(self.erp_cid, o.order_id, o.channel,
                           {"external_order_id": o.external_order_id, "erp_document": self.erp_document})
        if role == "erp_duplicate":
            return Speaker(self.erp_duplicate_cid, o.order_id, o.channel,
                           {"external_order_id": o.external_order_id, "erp_document": self.duplicate_document})
        if role == "wms":
            keys = {"erp_document": self.erp_document}
            if "tracking_number" in attributes:  # a parcel leaves: the 945 names the shipment
                keys["shipment_id"] = self.shipment_id(n)
            return Speaker(self.wms_cid, None, warehouse_channel, keys)
        if role == "carrier":
            _, event = self.parcels[n - 1]
            return Speaker(f"{attributes.get('carrier', 'carrier')}-{event}", None, None, {})
        if role == "confirm":
            confirm, _ = self.parcels[n - 1]
            return Speaker(confirm, o.order_id, o.channel, {"external_order_id": o.external_order_id})
        if role == "return":
            return Speaker(self.return_cid, o.order_id, warehouse_channel, {"rma": self.rma})
        if role == "refund":
            return Speaker(self.refund_cid, o.order_id, o.channel, {"rma": self.rma, "return_id": self.return_id})
        raise ValueError(f"unknown speaker {role!r}")


def carrier_view(attributes: dict[str, Any]) -> dict[str, Any]:
    """What a carrier's scan says of a shipment: its tracking number (and carrier), no more."""
    return {k: v for k, v in attributes.items() if k in CARRIER_KNOWS}
