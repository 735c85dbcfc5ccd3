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


def test_the_bucket_table_is_bounded_and_evicts_the_least_recently_seen():
    now = [0.0]
    limiter = RateLimiter(1.0, clock=lambda: now[0], max_senders=3)  # holds 10
    assert limiter.take("a", 10) == 0
    assert limiter.take("b", 1) == 0 and limiter.take("c", 1) == 0
    assert limiter.take("a", 1) > 0  # a is empty, and now the most recently seen
    assert limiter.take("d", 1) == 0  # evicts b (least recently seen), not a
    assert len(limiter) == 3
    assert limiter.take("a", 1) > 0  # a kept its empty bucket
    for i in range(10_000):
        limiter.take(f"flood-{i}", 1)
    assert len(limiter) == 3


def test_random_tokens_from_one_address_are_limited_as_one_sender(engine, settings):
    """#10 finding 21: 1,000 unknown bearer tokens from one address share that address's bucket."""
    import secrets

    import httpx

    from controltower.context import AppContext
    from tests.conftest import LoopbackServer
    from tests.web.helpers import record
    from wiring.server import build_app

    limited = settings.with_(rate_limit_events=5.0)  # bucket of 50 events; open mode (no key exists)
    with LoopbackServer(build_app(AppContext(limited, engine))) as server, httpx.Client() as client:
        codes = []
        import time

        started = time.monotonic()
        for i in range(1000):
            token = f"ct_{secrets.token_hex(4)}_{secrets.token_urlsafe(16)}" if i % 2 else secrets.token_hex(8)
            r = client.post(server.url + "/v1/events", json=[record(f"rnd-{i}")],
                            headers={"authorization": f"Bearer {token}"})
            codes.append(r.status_code)
        # 50 events pass from the one full bucket (plus what refills at 5/s while the loop runs)
        elapsed = time.monotonic() - started
        accepted = codes.count(200)
        assert codes.count(429) == 1000 - accepted
        assert 50 <= accepted <= 50 + 5 * elapsed + 1, (accepted, elapsed)
        assert codes[:50] == [200] * 50 and 429 in codes[50:60]
