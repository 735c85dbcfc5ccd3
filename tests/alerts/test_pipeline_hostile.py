"""The per-tick pipeline under attack: wake-up storms and a stage that hangs, through the real
scheduler (leader lock on the test database, APScheduler threads)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from controltower.context import AppContext
from controltower.jobs import ScheduledJob
from tests.alerts.test_scheduler import wait_for
from wiring import scheduler


def _run_scheduler(settings, engine, jobs, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(AppContext(settings, engine), stop),
                              kwargs={"jobs": jobs, "heartbeat_seconds": 0.1}, daemon=True)
    thread.start()
    try:
        time.sleep(seconds)
    finally:
        stop.set()
        thread.join(timeout=10)


def test_wake_ups_in_a_storm_cost_at_most_one_extra_run_per_second(engine, settings):
    """Many pending series with different `for` (or a stage that always asks for "soon"): the
    pipeline (a full metrics refresh each time) must not run back to back."""
    runs: list[float] = []

    def stage(now: datetime) -> None:
        runs.append(time.monotonic())

    def wake(now: datetime) -> datetime:
        return now + timedelta(milliseconds=20)  # always something due in 20 ms

    jobs = [ScheduledJob("evaluate", stage, 60, pipeline=1, wake=wake)]
    _run_scheduler(settings, engine, jobs, 2.5)
    assert 3 <= len(runs) <= 5, len(runs)  # the tick, its exact wake-up, then one extra run per second
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps[0] < 0.5 and min(gaps[1:]) >= 0.9, gaps


def test_a_stage_that_hangs_for_three_intervals_never_overlaps_itself(engine, settings):
    active, most, runs = [0], [0], [0]
    lock = threading.Lock()

    def slow(now: datetime) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
            runs[0] += 1
        time.sleep(0.6)  # three 0.2 s intervals
        with lock:
            active[0] -= 1

    jobs = [ScheduledJob("refresh", slow, 0.2, pipeline=1, wake=lambda now: now + timedelta(milliseconds=50))]
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(AppContext(settings, engine), stop),
                              kwargs={"jobs": jobs, "heartbeat_seconds": 0.1}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runs[0] >= 3, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert most[0] == 1  # the tick, a wake-up and the piled-up ticks ran one after the other
