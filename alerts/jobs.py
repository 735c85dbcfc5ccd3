"""Scheduled jobs of the alerts room (rule evaluation, notification delivery), run by the scheduler's leader."""

from __future__ import annotations

from datetime import datetime

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import load_rules
from controltower.context import AppContext
from controltower.jobs import ScheduledJob


def jobs(context: AppContext) -> list[ScheduledJob]:
    """Evaluate the rules and deliver the outbox every `evaluation_interval`.

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

    interval = settings.evaluation_interval
    return [
        ScheduledJob("alerts.evaluate", run_evaluate, interval_seconds=interval),
        ScheduledJob("alerts.deliver", run_deliver, interval_seconds=max(1.0, min(interval, 10.0))),
    ]
