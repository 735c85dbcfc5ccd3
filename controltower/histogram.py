"""The latency histogram format stored in `sla_rollup_*.hist`: part of the schema contract.

Buckets are logarithmic with ratio 1.02: bucket `i` holds latencies in
[1.02^i, 1.02^(i+1)) milliseconds and is stored as `{"i": count}`. Reading a bucket as its
geometric middle puts any percentile within 1 % of the exact value. `metrics` writes these
histograms; `app` and anyone else reads them with the functions here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RATIO = 1.02
_LN_RATIO = math.log(RATIO)


def bucket_of(ms: float) -> int:
    return math.floor(math.log(max(ms, 1.0)) / _LN_RATIO)


def bucket_value(bucket: int) -> float:
    """The geometric middle of a bucket (ms): within 1 % of any value in it."""
    return math.exp((bucket + 0.5) * _LN_RATIO)


def merge(hists: Iterable[Mapping[str | int, int] | None]) -> dict[int, int]:
    """Sum histograms (JSON keys arrive as strings) into one."""
    merged: dict[int, int] = {}
    for hist in hists:
        for key, count in (hist or {}).items():
            if count:
                merged[int(key)] = merged.get(int(key), 0) + int(count)
    return merged


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The `q` quantile (0..1) in ms, nearest rank; None for an empty histogram."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket_value(bucket) if bucket > 0 else min(bucket_value(bucket), 1.0)
    return bucket_value(max(hist))
