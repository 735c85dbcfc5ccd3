"""The per-tick pipeline: stages in order with their own `now`, failures isolated, extra runs at a
stage's wake-up; `alerts.wakeup` computes that moment from `alert_state` and the rules."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import parse
from alerts.wakeup import due_moments, next_wake
from controltower.context import AppContext
from controltower.jobs import ScheduledJob
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import put_row
from tests.alerts.test_scheduler import wait_for
from wiring import scheduler
from wiring.pipeline import Pipeline

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)

RULES = parse(loads("""
receivers:
  log: {type: log}
default_receivers: [log]
rules:
  - {name: Slow, sla: erp_posting, field: open_breaches, op: ">", value: 0, for: 10s}
  - {name: Sticky, sla: erp_posting, field: open_breaches, op: ">", value: 0, keep_firing_for: 45s}
  - {name: Instant, sla: erp_posting, field: open_breaches, op: ">", value: 0}
""", "t.yaml")).rules


def test_stages_run_in_order_each_with_its_start_time_and_a_failure_does_not_stop_the_rest(caplog):
    clock = iter([T0, T0 + 2 * S, T0 + 3 * S, T0 + 4 * S])
    seen: list[tuple[str, datetime]] = []

    def stage(name: str, fail: bool = False):
        def run(now: datetime) -> None:
            seen.append((name, now))
            if fail:
                raise RuntimeError("refresh broke")
        return run

    jobs = [
        ScheduledJob("deliver", stage("deliver"), 30, pipeline=30),
        ScheduledJob("retention", stage("retention"), 3600),
        ScheduledJob("refresh", stage("refresh", fail=True), 30, pipeline=10),
        ScheduledJob("evaluate", stage("evaluate"), 5, pipeline=20, wake=lambda now: now + 7 * S),
    ]
    pipeline, others = Pipeline.split(jobs)
    assert pipeline is not None and [j.name for j in others] == ["retention"]
    assert pipeline.interval_seconds == 5
    pipeline.clock = lambda: next(clock)
    with caplog.at_level(logging.ERROR):
        wake = pipeline.run()
    assert seen == [("refresh", T0), ("evaluate", T0 + 2 * S), ("deliver", T0 + 3 * S)]
    assert wake == T0 + 9 * S  # the evaluate stage's now + 7 s
    assert "pipeline stage refresh failed" in caplog.text
    assert set(pipeline.last_durations) == {"refresh", "evaluate", "deliver"}


def test_due_moments_for_pending_and_keep_firing_for():
    rows = [
        ("Slow", "pending", T0, None),           # fires at T0 + 10 s
        ("Slow", "firing", T0, None),            # firing, condition holds: nothing due
        ("Sticky", "firing", T0, T0 + 5 * S),    # cleared at +5 s: resolves at +50 s
        ("Instant", "pending", T0, None),        # for: 0 never waits
        ("Gone", "pending", T0, None),           # a rule no longer loaded
    ]
    assert due_moments(rows, RULES) == [T0 + 10 * S, T0 + 50 * S]


def test_next_wake_is_the_moment_a_pending_alert_reaches_its_for(engine):
    put_row(engine, open_breaches=3)
    evaluate(engine, RULES, T0)  # Slow and Sticky go pending... Sticky has for 0: it fires
    assert next_wake(engine, RULES, T0) == T0 + 10 * S
    assert next_wake(engine, RULES, T0 + 10 * S) is None  # only moments after now
    put_row(engine, open_breaches=0)
    evaluate(engine, RULES, T0 + 4 * S)  # Slow back to inactive; Sticky (firing) clears
    assert next_wake(engine, RULES, T0 + 4 * S) == T0 + 49 * S


def test_the_scheduler_runs_the_pipeline_again_at_the_wake_up(engine, settings):
    runs: list[datetime] = []
    asked: list[datetime] = []

    def evaluate_stage(now: datetime) -> None:
        runs.append(now)

    def wake(now: datetime) -> datetime | None:
        if len(runs) == 1:  # after the first tick: come back in 0.4 s, not at the next tick (60 s)
            asked.append(now + timedelta(seconds=0.4))
            return asked[0]
        return None

    stop = threading.Event()
    jobs = [ScheduledJob("evaluate", evaluate_stage, 60, pipeline=1, wake=wake)]
    thread = threading.Thread(target=scheduler.run, args=(AppContext(settings, engine), stop),
                              kwargs={"jobs": jobs, "heartbeat_seconds": 0.1}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(runs) >= 2, timeout=5)
        assert asked[0] <= runs[1] < asked[0] + timedelta(seconds=0.5)
        time.sleep(0.6)
        assert len(runs) == 2  # no further wake-up asked: the next run is the tick in a minute
    finally:
        stop.set()
        thread.join(timeout=10)


def test_room_jobs_chain_refresh_evaluate_deliver(settings, engine):
    pipeline, others = Pipeline.split(scheduler.room_jobs(AppContext(settings, engine)))
    assert pipeline is not None
    assert [j.name for j in pipeline.stages] == ["metrics.refresh", "alerts.evaluate", "alerts.deliver"]
    assert pipeline.stages[1].wake is not None
    assert {j.name for j in others} == {"alerts.deliver.retry", "retention", "replay.raw_store_purge"}


def test_self_metrics_show_the_interval_and_the_delivery_backlog(engine):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from alerts.selfmetrics import AlertingCollector

    put_row(engine, open_breaches=3)
    evaluate(engine, RULES, T0, interval_seconds=5)  # Sticky and Instant fire: 2 notifications queued, unsent
    registry = CollectorRegistry()
    registry.register(AlertingCollector(engine, clock=lambda: T0 + 42 * S))

    def samples() -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    got = samples()
    assert got["controltower_alerts_evaluation_interval_seconds"] == 5
    assert got["controltower_alerts_notifications_pending"] == 2
    assert got["controltower_alerts_oldest_pending_notification_age_seconds"] == 42
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alert_notifications SET status = 'sent'"))
    got = samples()
    assert got["controltower_alerts_notifications_pending"] == 0
    assert got["controltower_alerts_oldest_pending_notification_age_seconds"] == 0
