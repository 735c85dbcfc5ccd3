"""One simulated record: its canonical shape, the identities each channel really uses, drift.

`SimEvent` is a record at its simulated time with what the run did to it (malformed,
duplicate, plain); `make_record()` builds the canonical body with an event id that is a pure
function of the transaction and milestone (so resends dedupe); `new_order()`, `customer()`
and `tracking()` draw identities and personal data in real formats; `drift()` breaks a record
the way a channel that changed its schema does. Pure: every draw comes from the given `rng`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STORES = (101, 102, 205, 311)
FIRST_NAMES = ("Ava", "Liam", "Mia", "Noah", "Zoe", "Ethan", "Ivy", "Lucas")
LAST_NAMES = ("Garcia", "Smith", "Nguyen", "Patel", "Kowalski", "Okafor", "Rossi", "Jensen")
STREETS = ("Maple Ave", "Oak St", "Pine Rd", "Cedar Ln", "Elm Dr")


def iso(at: float) -> str:
    """RFC 3339 with offset, millisecond precision (what the records carry)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SimEvent:
    """One record to send, at its simulated time.

    `malformed`: deliberately broken (schema drift), must be rejected. `duplicate`: an extra
    copy of a record already emitted. `plain`: untouched by faults, so any transport may carry
    it (a span cannot reproduce the deterministic event id a duplicate needs).
    """

    at: float
    record: dict[str, Any]
    malformed: bool = False
    duplicate: bool = False
    plain: bool = True
    business: str | None = None

    @property
    def business_key(self) -> str:
        """The business transaction this record belongs to, as the simulator knows it: the
        channel's correlation id of its order (or its own correlation id when it has none)."""
        return self.business or str(self.record.get("correlation_id", ""))

    @property
    def milestone(self) -> str:
        return f"{self.record.get('flow')}.{self.record.get('stage')}"


@dataclass(frozen=True)
class Order:
    """The identities one order carries across systems."""

    correlation_id: str
    order_id: str
    channel: str
    external_order_id: str
    marketplace_order_id: str | None
    received_at: float
    # (UTC hour, channel index, arrival number in that hour): what unique numbers derive from
    seq: tuple[int, int, int] = (0, 0, 0)


def make_record(
    cid: str, order_id: str | None, channel: str | None, flow: str, stage: str, system: str,
    at: float, after: float | None, n: int, attributes: dict[str, Any],
) -> dict[str, Any]:
    """A canonical record; `occurred_at` is stamped when it is queued (`Simulation.push`),
    and the event id is a pure function of the transaction and milestone, so resends dedupe.
    A `channel` of None is left out (a carrier does not know it)."""
    record: dict[str, Any] = {
        "event_id": f"{cid}:{flow}.{stage}:{n}",
        "correlation_id": cid,
        "channel": channel,
        "flow": flow,
        "stage": stage,
        "status": "ok",
        "system": system,
        "attributes": attributes,
    }
    if channel is None:
        del record["channel"]
    if order_id:
        record["order_id"] = order_id
    if after is not None:
        record["latency_ms"] = round((round(at, 3) - round(after, 3)) * 1000.0, 1)
    return record


def digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def new_order(rng: random.Random, channel: str, channel_index: int, hour: int, k: int, at: float) -> Order:
    """Identities in each channel's real format; draws the same numbers whether kept or not."""
    cid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
    order_id = f"SO-{hour % 10**6:06d}{channel_index}{k:03d}"
    numeric = digits(rng, 13)
    formats = {
        "amazon": f"{digits(rng, 3)}-{digits(rng, 7)}-{digits(rng, 7)}",
        "ebay": f"{digits(rng, 2)}-{digits(rng, 5)}-{digits(rng, 5)}",
        "walmart": f"{rng.randrange(1, 10)}{digits(rng, 14)}",
        # unique however many orders an hour brings (k past 9999 only makes it longer)
        "shopify": f"#{hour % 10**5:05d}{k:04d}",
    }
    store, register = rng.choice(STORES), rng.randrange(1, 9)
    digits(rng, 6)  # the receipt number drawn before: kept so the draws after it stay the same
    # a receipt number is unique (a drawn one met another within days, and would link them)
    formats["pos"] = f"{store}-{register:02d}-{hour % 10**4:04d}{k:03d}"
    marketplace_id = numeric if channel == "shopify" else None
    return Order(cid, order_id, channel, formats[channel], marketplace_id, at, (hour, channel_index, k))


def customer(rng: random.Random, sku: str, quantity: int) -> dict[str, Any]:
    """A fake customer, so the collector's masking of personal data is exercised."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return {
        "customer": {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}@example.com",
            "phone": f"+1-555-01{rng.randrange(100):02d}",
            "address": f"{rng.randrange(1, 999)} {rng.choice(STREETS)}, Springfield",
        },
        "lines": [{"sku": sku, "quantity": quantity, "price": round(rng.uniform(5, 120), 2)}],
    }


def erp_document(seq: tuple[int, int, int], prefix: str = "45") -> str:
    """An SAP-like 10-digit sales document number (45000…): unique per (hour, channel index,
    arrival) over 1000 hours, so two orders never share one by chance (that would link them)."""
    hour, index, k = seq
    return f"{prefix}{(hour % 1000) * 10 + index:04d}{k:04d}"


def tracking(rng: random.Random, carrier: str) -> str:
    if carrier == "ups":
        return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))
    if carrier == "fedex":
        return digits(rng, 12)
    return "9400" + digits(rng, 18)


def drift(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A record as a channel that changed its schema sends it: each way must be rejected."""
    drifted = dict(record)
    way = rng.randrange(3)
    if way == 0:
        del drifted["correlation_id"]
    elif way == 1:
        drifted["latency_ms"] = "fast"
    else:
        drifted["occurred_at"] = drifted["occurred_at"][:-6]  # no UTC offset
    return drifted
