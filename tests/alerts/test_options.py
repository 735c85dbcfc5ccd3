"""Rule options with a controlled clock: keep_firing_for, no_data policies, flapping, volume_ratio."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import parse
from controltower.schema.metrics import event_rollup_minute, sla_status
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def rules(extra: str = "", *, for_: str = "10m") -> list:
    return list(parse(loads(f"""
receivers:
  hook: {{type: webhook, url: "http://127.0.0.1:9/hook"}}
default_receivers: [hook]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
    for: {for_}
{extra}
""", "test.yaml")).rules)


def kinds(engine):
    return [r["kind"] for r in outbox(engine)]


def test_flapping_within_for_never_notifies(engine):
    rs = rules()
    for minute, breaches in enumerate([3, 0, 4, 0, 5, 0, 2, 0, 6, 0, 1, 0]):
        put_row(engine, open_breaches=breaches)
        evaluate(engine, rs, T0 + minute * 2 * M)
    assert outbox(engine) == []


def test_keep_firing_for_rides_out_a_short_clear(engine):
    rs = rules("    keep_firing_for: 15m", for_="0s")
    put_row(engine, open_breaches=3)
    [t] = evaluate(engine, rs, T0)
    assert (t.to_state, t.notification) == ("firing", "firing")
    put_row(engine, open_breaches=0)
    assert evaluate(engine, rs, T0 + 5 * M) == []  # cleared 0 min ago: still firing
    assert evaluate(engine, rs, T0 + 10 * M) == []
    put_row(engine, open_breaches=2)  # back before 15 min: same alert, the clock restarts
    assert evaluate(engine, rs, T0 + 12 * M) == []
    put_row(engine, open_breaches=0)
    assert evaluate(engine, rs, T0 + 14 * M) == []  # cleared at 14
    assert evaluate(engine, rs, T0 + 28 * M) == []  # 14 min after clearing
    [t] = evaluate(engine, rs, T0 + 29 * M)  # 15 min after clearing
    assert (t.from_state, t.to_state, t.notification) == ("firing", "resolved", "resolved")
    assert kinds(engine) == ["firing", "resolved"]
    assert outbox(engine)[-1]["payload"]["endsAt"] == "2026-11-22T09:29:00.000Z"


def _vanish(engine):
    with engine.begin() as conn:
        conn.execute(sa.delete(sla_status))


@pytest.mark.parametrize("policy", ["ok", "breach", "keep", "alert"])
def test_no_data_policy_on_a_firing_alert(engine, policy):
    rs = rules(f"    no_data: {policy}")
    put_row(engine, open_breaches=3)
    evaluate(engine, rs, T0)
    [t] = evaluate(engine, rs, T0 + 10 * M)
    assert t.to_state == "firing"
    _vanish(engine)
    out = evaluate(engine, rs, T0 + 11 * M)
    if policy == "ok":
        assert [(x.to_state, x.notification) for x in out] == [("resolved", "resolved")]
    else:  # breach, keep and alert keep it firing, without a new notification
        assert out == []
    assert kinds(engine) == (["firing", "resolved"] if policy == "ok" else ["firing"])


@pytest.mark.parametrize(("policy", "fires"), [("ok", False), ("keep", False), ("breach", True), ("alert", True)])
def test_no_data_policy_on_a_quiet_series(engine, policy, fires):
    """A channel that had a row (condition false) loses it: breach and alert fire after `for`."""
    rs = rules(f"    no_data: {policy}")
    put_row(engine, open_breaches=0)
    assert evaluate(engine, rs, T0) == []
    _vanish(engine)
    first = evaluate(engine, rs, T0 + M)
    assert [x.to_state for x in first] == (["pending"] if fires else [])
    second = evaluate(engine, rs, T0 + 11 * M)
    if not fires:
        assert second == [] and outbox(engine) == []
        return
    [t] = second
    assert (t.to_state, t.notification) == ("firing", "firing")
    [row] = outbox(engine)
    summary = row["payload"]["alerts"][0]["summary"]
    if policy == "alert":
        assert summary == "erp_posting on amazon: no data (UnpostedOrders found no SLA row for this channel)"
        assert row["payload"]["alerts"][0]["annotations"]["no_data"] == "true"
    else:
        assert "no data" not in summary
    # the row comes back healthy: resolved
    put_row(engine, open_breaches=0)
    [t] = evaluate(engine, rs, T0 + 12 * M)
    assert (t.to_state, t.notification) == ("resolved", "resolved")


def test_no_data_alert_is_silenced_like_any_other(engine):
    from alerts.evaluate import add_silence

    rs = rules("    no_data: alert", for_="0s")
    put_row(engine, open_breaches=0)
    evaluate(engine, rs, T0)
    add_silence(engine, {"channel": "amazon"}, starts_at=T0, ends_at=T0 + 60 * M, created_by="t")
    _vanish(engine)
    [t] = evaluate(engine, rs, T0 + M)
    assert (t.to_state, t.silenced) == ("firing", True)
    assert outbox(engine) == []


def _rollup(engine, rows):
    with engine.begin() as conn:
        conn.execute(sa.insert(event_rollup_minute), [
            {"minute": m, "channel": ch, "flow": "order", "stage": "received", "status": "ok", "count": n}
            for m, ch, n in rows])


def test_volume_ratio_absence_rule(engine):
    """Silent for 15+ min AND far below the usual volume for this hour: fires; a quiet hour that is
    always quiet does not."""
    now = T0
    rows = []
    for day in range(1, 8):  # usual: 70 events in 08:00-09:00 on each of the last 7 days (amazon)
        base = now - timedelta(days=day) - timedelta(hours=1)
        rows += [(base + timedelta(minutes=i), "amazon", 7) for i in range(0, 60, 6)]
        rows.append((base + timedelta(minutes=30), "ebay", 1))  # ebay: 1 event per day in that hour
    rows.append((now - timedelta(minutes=50), "amazon", 7))  # last hour: 7 events -> ratio 0.1
    rows.append((now - timedelta(minutes=50), "ebay", 1))    # ratio 1.0
    _rollup(engine, rows)
    rs = list(parse(loads("""
receivers:
  hook: {type: webhook, url: "http://127.0.0.1:9/hook"}
default_receivers: [hook]
rules:
  - name: ChannelQuiet
    sla: channel_silence
    field: value
    op: ">"
    value: 900000
    and:
      - {field: volume_ratio, op: "<", value: 0.2}
    annotations:
      summary: "{channel}: {volume_last_hour} events vs usual {volume_usual} ({volume_ratio:.2f})"
""", "t.yaml")).rules)
    for ch in ("amazon", "ebay", "shopify"):  # shopify: no history at all -> no usual level
        put_row(engine, sla="channel_silence", channel=ch, kind="absence", value=50 * 60_000)
    [t] = evaluate(engine, rs, now)
    assert t.labels["channel"] == "amazon" and t.notification == "firing"
    [row] = outbox(engine)
    assert row["payload"]["alerts"][0]["summary"] == "amazon: 7 events vs usual 70.0 (0.10)"
