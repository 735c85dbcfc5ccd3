"""Per-sender rate limit for ingest: a token bucket per API key (or client address).

Each collector process keeps its own buckets (N collectors behind a balancer allow N × the
rate; set the limit per process accordingly). A request costs its number of records; the
bucket holds ten seconds of the rate, so normal batches pass and a flood gets 429 with the
Retry-After that would let it through.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

BURST_SECONDS = 10.0
MAX_SENDERS = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, *, clock=time.monotonic) -> None:  # noqa: ANN001 - injectable clock for tests
        self.rate = rate
        self.capacity = rate * BURST_SECONDS
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, sender: str, cost: int) -> float:
        """Charge `cost` records to `sender`; 0 when allowed, else seconds to wait (nothing charged)."""
        if not self.enabled or cost <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(sender)
            if bucket is None:
                if len(self._buckets) >= MAX_SENDERS:
                    self._buckets.clear()
                bucket = self._buckets[sender] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            # a batch bigger than the whole bucket passes only from a full bucket (then owes)
            if bucket.tokens >= min(cost, self.capacity):
                bucket.tokens -= cost
                return 0.0
            return max(0.001, (min(cost, self.capacity) - bucket.tokens) / self.rate)


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
