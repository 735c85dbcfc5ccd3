"""Queue SLAs from queue_samples at controlled times: the SLA table, hop health and an alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import parse as parse_rules
from controltower.errors import ConfigError
from controltower.schema.brokers import queue_samples
from controltower.yamlfile import loads
from metrics import compute, definitions, jobs

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DEFS = definitions.load()  # the shipped defaults: dead_letter_queues 10m, queue_growth 15m, consumer_lag 10000


def sample(engine, queue, at, depth, *, kind="dlq", channel="amazon", hop="ERP posting", broker="rabbitmq",
           age=None, pending=None, ack_pending=None):
    with engine.begin() as conn:
        conn.execute(sa.insert(queue_samples).values(
            queue=queue, at=at, depth=depth, kind=kind, channel=channel, hop=hop, broker=broker,
            oldest_age_ms=age, pending=pending, ack_pending=ack_pending))


def table(engine, now, defs=DEFS):
    with engine.connect() as conn:
        rows = compute.sla_table(conn, defs, window=timedelta(hours=1), now=now)
    return {(r["sla"], r["channel"]): r for r in rows}


def test_dlq_breaches_after_ten_minutes_non_empty_and_not_before(engine) -> None:
    # empty until 10:00, then 3 messages from the 10:00:30 probe on (probes every 30 s)
    sample(engine, "erp.orders.dlq", T0 - MIN, 0)
    sample(engine, "erp.orders.dlq", T0, 0)
    for i in range(1, 30):
        sample(engine, "erp.orders.dlq", T0 + i * timedelta(seconds=30), 3, age=60_000 + i * 30_000)
    at_10 = table(engine, T0 + timedelta(minutes=10, seconds=30))[("dead_letter_queues", "amazon")]
    assert (at_10["health"], at_10["open_breaches"], at_10["value"], at_10["reason"]) == ("ok", 0, 600_000, None)
    [verdict] = at_10["details"]["queues"]
    assert verdict["text"] == "DLQ erp.orders.dlq: 3 messages for 10 min, oldest 11 min 30 s"
    assert verdict["hop"] == "ERP posting"
    later = T0 + timedelta(minutes=12, seconds=30)  # non-empty for 12 min > 10 min
    row = table(engine, later)[("dead_letter_queues", "amazon")]
    assert (row["health"], row["open_breaches"], row["oldest_breach_ms"], row["target_ms"], row["count"]) == (
        "warn", 1, 720_000, 600_000, 1)
    assert row["reason"] == "dead_letter_queues: DLQ erp.orders.dlq: 3 messages for 12 min, oldest 13 min 30 s (max 10 min)"
    # critical past critical_factor (6) x target: non-empty for 61 min
    sample(engine, "erp.orders.dlq", T0 + timedelta(minutes=61, seconds=30), 1)
    assert table(engine, T0 + timedelta(minutes=61, seconds=30))[("dead_letter_queues", "amazon")]["health"] == "critical"
    # emptied: ok again, its value 0
    sample(engine, "erp.orders.dlq", T0 + timedelta(minutes=62), 0)
    row = table(engine, T0 + timedelta(minutes=62))[("dead_letter_queues", "amazon")]
    assert (row["health"], row["open_breaches"], row["value"]) == ("ok", 0, 0)


def test_an_emptied_and_refilled_dlq_counts_from_the_refill(engine) -> None:
    for minute, depth in [(0, 2), (5, 2), (8, 0), (9, 1), (15, 1)]:
        sample(engine, "q.dlq", T0 + minute * MIN, depth, channel=None)
    row = table(engine, T0 + 15 * MIN)[("dead_letter_queues", "*")]  # no channel: all channels
    assert (row["health"], row["value"]) == ("ok", 6 * 60_000)  # non-empty since 10:09 only
    assert table(engine, T0 + 20 * MIN)[("dead_letter_queues", "*")]["open_breaches"] == 1  # 11 min


def test_queue_growing_over_the_whole_window(engine) -> None:
    # erp.orders: 100, 150, 150, 300, 420 at 0, 5, 8, 12, 16 min: never fell, ends higher
    for minute, depth in [(0, 100), (5, 150), (8, 150), (12, 300), (16, 420)]:
        sample(engine, "erp.orders", T0 + minute * MIN, depth, kind="queue")
    # ship.events: grows but fell once in the window
    for minute, depth in [(0, 10), (5, 50), (9, 40), (16, 90)]:
        sample(engine, "ship.events", T0 + minute * MIN, depth, kind="queue", hop="carrier confirmation")
    row = table(engine, T0 + 16 * MIN)[("queue_growth", "amazon")]
    assert (row["health"], row["open_breaches"], row["count"], row["threshold"]) == ("warn", 1, 2, 900_000)
    assert row["reason"] == "queue_growth: queue erp.orders: growing for 15 min, 100 → 420 messages"  # from 10:00
    # 14 minutes in, the window (15 min) is not yet covered by samples
    assert table(engine, T0 + 14 * MIN)[("queue_growth", "amazon")]["open_breaches"] == 0


def test_consumer_lag_from_jetstream_pending_and_rabbitmq_ready(engine) -> None:
    sample(engine, "ORDERS/ct", T0, 12_500, kind="consumer", broker="jetstream", pending=12_500, ack_pending=40,
           channel="shopify", hop="acknowledgement", age=300_000)
    sample(engine, "erp.orders", T0, 9_000, kind="queue", channel="shopify", hop="ERP posting")
    sample(engine, "big", T0, 150_000, kind="queue", channel="ebay", hop=None)
    rows = table(engine, T0)
    row = rows[("consumer_lag", "shopify")]
    assert (row["health"], row["open_breaches"], row["value"], row["threshold"], row["count"]) == ("warn", 1, 12_500, 10_000, 2)
    assert row["reason"] == "consumer_lag: consumer ORDERS/ct: 12,500 pending (max 10,000), oldest 5 min"
    assert rows[("consumer_lag", "ebay")]["health"] == "critical"  # above critical 100000
    assert ("dead_letter_queues", "shopify") not in rows  # no DLQ sampled


def test_stale_samples_and_other_queues_are_not_judged(engine) -> None:
    sample(engine, "old.dlq", T0 - timedelta(hours=2), 5)
    defs = definitions.loads("""
slas:
  - {name: only_a, kind: dlq_not_empty, target: 1m, queues: [a.dlq]}
""")
    sample(engine, "a.dlq", T0 - 5 * MIN, 1)
    sample(engine, "b.dlq", T0 - 5 * MIN, 1)
    rows = table(engine, T0, defs)
    assert [v["queue"] for v in rows[("only_a", "amazon")]["details"]["queues"]] == ["a.dlq"]
    assert rows[("only_a", "amazon")]["open_breaches"] == 1


@pytest.mark.parametrize(("yaml", "message"), [
    ("slas:\n  - {name: d, kind: dlq_not_empty}", "d: dlq_not_empty needs `target`"),
    ("slas:\n  - {name: d, kind: queue_growing, window: 5x}", '"5x" is not a duration'),
    ("slas:\n  - {name: d, kind: consumer_lag, max_pending: 1.5}", "max_pending: expected an integer"),
    ("slas:\n  - {name: d, kind: consumer_lag, max_pending: 10, critical: 5}", "critical (5) is below max_pending (10)"),
    ("slas:\n  - {name: d, kind: consumer_lag, max_pending: 10, target: 5m}", "unknown key 'target' for kind consumer_lag"),
])
def test_bad_queue_slas_name_the_line(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        definitions.loads(yaml, "slas.yaml")
    assert "slas.yaml:2:" in str(caught.value) and message in str(caught.value)


def test_refresh_writes_sla_status_and_the_hop_shows_the_queue(engine) -> None:
    for i in range(0, 13):
        sample(engine, "erp.orders.dlq", T0 + i * MIN, 3 if i else 0)
    sample(engine, "shared.dlq", T0 + 12 * MIN, 2, channel=None, hop="warehouse release")
    jobs.refresh(engine, DEFS, T0 + 12 * MIN)
    with engine.connect() as conn:
        status = {(r.sla, r.channel, r.window): r for r in conn.execute(sa.text("SELECT * FROM sla_status"))}
        hops = {(r.channel, r.hop): r for r in conn.execute(sa.text("SELECT * FROM hop_health"))}
    assert status[("dead_letter_queues", "amazon", "1h")].health == "warn"
    assert status[("dead_letter_queues", "amazon", "24h")].open_breaches == 1
    assert status[("dead_letter_queues", "*", "1h")].health == "ok"
    erp = hops[("amazon", "ERP posting")]
    assert (erp.health, erp.reason) == ("warn", "DLQ erp.orders.dlq: 3 messages for 11 min (max 10 min)")
    # the channel-less DLQ (under target) sits on every channel's hop, without a strip of its own
    assert hops[("amazon", "warehouse release")].reason == "DLQ shared.dlq: 2 messages for 0 ms"
    assert hops[("amazon", "warehouse release")].health == "ok"
    assert {ch for ch, _ in hops} == {"amazon"}


def test_an_alert_rule_on_the_dlq_sla_fires(engine) -> None:
    rules = parse_rules(loads("""
receivers:
  hook: {type: webhook, url: "http://127.0.0.1:9/hook"}
default_receivers: [hook]
rules:
  - name: DeadLettersWaiting
    sla: dead_letter_queues
    field: open_breaches
    op: ">"
    value: 0
    severity: page
    annotations:
      summary: "{channel}: {reason}"
""", "alerts.yaml")).rules
    for i in range(0, 13):
        sample(engine, "erp.orders.dlq", T0 + i * MIN, 3 if i else 0)
    jobs.refresh(engine, DEFS, T0 + 9 * MIN)  # non-empty for 8 min: nothing
    assert evaluate(engine, rules, T0 + 9 * MIN) == []
    jobs.refresh(engine, DEFS, T0 + 12 * MIN)
    [t] = evaluate(engine, rules, T0 + 12 * MIN)
    assert (t.to_state, t.labels["channel"], t.labels["sla"]) == ("firing", "amazon", "dead_letter_queues")
    with engine.connect() as conn:
        summary = conn.execute(sa.text("SELECT payload FROM alert_notifications")).scalar_one()
    assert "DLQ erp.orders.dlq: 3 messages for 11 min (max 10 min)" in str(summary)


def test_retention_keeps_a_week_of_queue_samples(engine, settings) -> None:
    from controltower import retention

    sample(engine, "q.dlq", T0 - timedelta(days=7, minutes=1), 1)
    sample(engine, "q.dlq", T0 - timedelta(days=6, hours=23), 2)
    assert retention.plan(engine, settings, T0).rows["queue_samples"] == 1
    retention.apply(engine, settings, T0)
    with engine.connect() as conn:
        assert [r.depth for r in conn.execute(sa.text("SELECT depth FROM queue_samples"))] == [2]
