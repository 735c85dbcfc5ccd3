"""The token bucket on a controlled clock."""

from __future__ import annotations

import pytest

from collectors.ratelimit import RateLimiter, retry_after


def test_bucket_refills_at_the_rate_and_never_charges_a_refusal():
    now = [0.0]
    limiter = RateLimiter(100.0, clock=lambda: now[0])  # holds 1,000 events
    assert limiter.take("a", 1000) == 0
    wait = limiter.take("a", 500)
    assert wait == pytest.approx(5.0) and retry_after(wait) == 5
    now[0] = 2.0  # 200 back
    assert limiter.take("a", 300) == pytest.approx(1.0)
    assert limiter.take("a", 200) == 0
    assert limiter.take("b", 1000) == 0  # another sender, its own bucket


def test_a_batch_larger_than_the_bucket_passes_from_a_full_bucket():
    now = [0.0]
    limiter = RateLimiter(10.0, clock=lambda: now[0])  # holds 100
    assert limiter.take("a", 5000) == 0
    assert limiter.take("a", 1) > 0  # now owes 4,900 events: 490 s
    now[0] = 491.0
    assert limiter.take("a", 1) == 0


def test_disabled_limiter_allows_everything():
    assert not RateLimiter(0).enabled and RateLimiter(0).take("a", 10**9) == 0
