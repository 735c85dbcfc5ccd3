"""Per-sender rate limit for ingest: a token bucket per valid API key, else per client address.

A bearer token that is not a valid key never names a bucket (random tokens would each get a
fresh, full one): such requests share their address's bucket. The table is bounded (LRU: the
least recently seen sender is evicted), so a flood of senders cannot grow memory.

Each collector process keeps its own buckets (N collectors behind a balancer allow N × the
rate; set the limit per process accordingly). A request costs its number of records; the
bucket holds ten seconds of the rate, so normal batches pass and a flood gets 429 with the
Retry-After that would let it through.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

BURST_SECONDS = 10.0
MAX_SENDERS = 10_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, *, clock=time.monotonic, max_senders: int = MAX_SENDERS) -> None:  # noqa: ANN001 - injectable clock for tests
        self.rate = rate
        self.capacity = rate * BURST_SECONDS
        self.clock = clock
        self.max_senders = max_senders
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
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
                while len(self._buckets) >= self.max_senders:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[sender] = _Bucket(self.capacity, now)
            else:
                self._buckets.move_to_end(sender)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            # a batch bigger than the whole bucket passes only from a full bucket (then owes)
            if bucket.tokens >= min(cost, self.capacity):
                bucket.tokens -= cost
                return 0.0
            return max(0.001, (min(cost, self.capacity) - bucket.tokens) / self.rate)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
