"""Hostile review of the queue SLAs: samples with gaps."""

from __future__ import annotations

from datetime import timedelta

from tests.metrics.test_queues import MIN, T0, sample, table


def test_a_gap_in_the_samples_is_not_growth_over_the_window(engine) -> None:
    # the probe was off for a day: 5 messages yesterday, 10 now. Nobody saw 15 minutes of growth.
    sample(engine, "erp.orders", T0 - timedelta(days=1), 5, kind="queue")
    sample(engine, "erp.orders", T0, 10, kind="queue")
    assert table(engine, T0)[("queue_growth", "amazon")]["open_breaches"] == 0


def test_growth_seen_across_the_window_with_a_baseline_just_before_it_still_breaches(engine) -> None:
    for minute, depth in [(-17, 5), (-10, 8), (-4, 9), (0, 12)]:
        sample(engine, "erp.orders", T0 + minute * MIN, depth, kind="queue")
    assert table(engine, T0)[("queue_growth", "amazon")]["open_breaches"] == 1
