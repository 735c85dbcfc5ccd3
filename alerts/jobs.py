"""Scheduled jobs of the alerts room (rule evaluation, notification delivery), run by the scheduler's leader.

Evaluation and delivery are stages of the per-tick pipeline (after the metrics refresh, which
writes the SLA table evaluation reads): the tick's delivery sends what the tick's evaluation
enqueued. Evaluation also tells the scheduler when a pending alert reaches its `for`
(`alerts.wakeup`), so the pipeline runs again at that moment instead of the next tick. A
separate short-interval delivery job sends notifications whose retry backoff ends between
ticks; concurrent deliverers are safe (rows are claimed `FOR UPDATE SKIP LOCKED`).
"""

from __future__ import annotations

from datetime import datetime

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import load_rules
from alerts.wakeup import next_wake
from controltower.context import AppContext
from controltower.jobs import ScheduledJob

EVALUATE_STAGE = 20  # after metrics.refresh (10)
DELIVER_STAGE = 30


def jobs(context: AppContext) -> list[ScheduledJob]:
    """Evaluate the rules and deliver the outbox every `evaluation_interval`; retry in between.

    The rules file is loaded (and validated) here, once: a broken file stops the scheduler at
    start with `file:line: what is wrong` instead of failing on every tick.
    """
    settings = context.settings
    ruleset = load_rules(settings.alerts_file)
    engine = context.engine

    def run_evaluate(now: datetime) -> object:
        return evaluate(
            engine, ruleset.rules, now, dashboard_url=settings.dashboard_url, routes=ruleset.routes,
            watchdog_rule=ruleset.watchdog, interval_seconds=settings.evaluation_interval,
            incidents=ruleset.incidents,
        )

    def run_deliver(now: datetime) -> object:
        return deliver_pending(engine, ruleset.receivers, now)

    def wake(now: datetime) -> datetime | None:
        return next_wake(engine, ruleset.rules, now)

    interval = settings.evaluation_interval
    return [
        ScheduledJob("alerts.evaluate", run_evaluate, interval_seconds=interval, pipeline=EVALUATE_STAGE, wake=wake),
        ScheduledJob("alerts.deliver", run_deliver, interval_seconds=interval, pipeline=DELIVER_STAGE),
        ScheduledJob("alerts.deliver.retry", run_deliver, interval_seconds=max(1.0, min(interval, 5.0))),
    ]
