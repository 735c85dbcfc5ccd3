"""Alerting's own metrics for `/metrics`: a prometheus_client Collector over `alert_evaluations`.

    controltower_alerts_last_success_timestamp_seconds   last successful evaluation cycle (Unix s)
    controltower_alerts_evaluation_stale                 1 when none succeeded within 3 intervals
    controltower_alerts_rule_failures{rule}              consecutive failed evaluations of a rule (0: ok)
    controltower_alerts_ignored_amounts_total            impact amounts left out as not sane numbers
    controltower_alerts_evaluation_interval_seconds      the interval the scheduler evaluates at
    controltower_alerts_notifications_pending            outbox rows not yet sent (new, or in retry backoff)
    controltower_alerts_oldest_pending_notification_age_seconds
                                                         how long the oldest of them has waited (0: none):
                                                         the delivery stage's health, as the last success
                                                         timestamp is the evaluation stage's

Read at scrape time through `controltower.alertops.evaluation_health`; registered by the
composition root into the one registry (`registry.register(AlertingCollector(engine))`). A
database that cannot be reached yields no samples here rather than failing the whole scrape:
the stale timestamp then tells on the next scrape that works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from controltower.alertops import evaluation_health
from controltower.schema.alerts import alert_evaluations, alert_notifications

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlertingCollector(Collector):
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(())  # samples come from the database at scrape time: no describe at register

    def collect(self) -> Iterator[Metric]:
        try:
            health = evaluation_health(self.engine, self.clock())
            with self.engine.connect() as conn:
                rules = conn.execute(
                    sa.select(alert_evaluations.c.rule, alert_evaluations.c.consecutive_failures)
                    .where(alert_evaluations.c.rule != "")
                    .order_by(alert_evaluations.c.rule)
                ).all()
                n = alert_notifications  # pending rows only: the partial index keeps this cheap
                pending, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(n.c.created_at)).where(n.c.status == "pending")
                ).one()
        except sa.exc.OperationalError as exc:
            log.warning("alerting self-metrics unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return
        last = GaugeMetricFamily(
            "controltower_alerts_last_success_timestamp_seconds",
            "Unix time of the last successful alert evaluation cycle (0: never).",
        )
        when = health["last_success_at"]
        last.add_metric([], when.timestamp() if when is not None else 0.0)
        yield last
        stale = GaugeMetricFamily(
            "controltower_alerts_evaluation_stale",
            "1 when no alert evaluation cycle succeeded within 3 evaluation intervals.",
        )
        stale.add_metric([], 1.0 if health["stale"] else 0.0)
        yield stale
        failures = GaugeMetricFamily(
            "controltower_alerts_rule_failures",
            "Consecutive failed evaluations of an alert rule (0 when its last evaluation succeeded).",
            labels=["rule"],
        )
        for rule, count in rules:
            failures.add_metric([rule], float(count))
        yield failures
        ignored = CounterMetricFamily(
            "controltower_alerts_ignored_amounts",
            "Order amounts left out of alert impact sums because they are not sane numbers.",
        )
        ignored.add_metric([], float(health["ignored_amounts_total"]))
        yield ignored
        interval = GaugeMetricFamily(
            "controltower_alerts_evaluation_interval_seconds",
            "The interval the scheduler refreshes the SLA table, evaluates the rules and delivers at.",
        )
        interval.add_metric([], float(health["interval_seconds"]))
        yield interval
        waiting = GaugeMetricFamily(
            "controltower_alerts_notifications_pending",
            "Notifications stored but not yet sent (new, or waiting for a retry).",
        )
        waiting.add_metric([], float(pending))
        yield waiting
        age = GaugeMetricFamily(
            "controltower_alerts_oldest_pending_notification_age_seconds",
            "Seconds the oldest unsent notification has waited (0 when none): delivery is stuck when it grows.",
        )
        age.add_metric([], max(0.0, (self.clock() - oldest).total_seconds()) if oldest is not None else 0.0)
        yield age
