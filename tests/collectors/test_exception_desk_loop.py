"""Issue 14's "done when", end to end against the real RabbitMQ and PostgreSQL.

A simulated middleware (this test) takes orders from `erp.orders` (dead-lettering to
`erp.orders.dlq`), reports what it does as canonical events on the tap's queue, and rejects a
poison order. Then: the tap stores every event once across a restart and a database outage;
the dead letter becomes a dead_letter event without anyone reporting it; probes over 13
minutes breach the DLQ SLA and the alert reaches a webhook; the exception group is classified
and assigned; replay is refused for a posted order and allowed for the poison one; the executor
moves it back with the replay-of header; the fixed middleware posts it; the group auto-resolves
and the transaction story tells the replay. Every name is unique per run and deleted at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pika
import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from alerts.rules import parse as parse_rules
from app.story import replay_clauses
from collectors import deadletters, queueprobe
from collectors.replayjobs import ReplayRunner
from collectors.store import EventStore
from collectors.taps.config import load_taps
from collectors.taps.runner import TapRunner
from controltower import exceptionops, replayops, transactions
from controltower.context import AppContext
from controltower.db import make_engine
from controltower.masking import Masker
from controltower.replayconfig import load_replay
from controltower.yamlfile import loads
from metrics import definitions, jobs
from tests.alerts.test_notify import Recorder
from tests.collectors.tapkit import RABBIT_URL, count_events, wait_for
from tests.collectors.test_taps_rabbit import Proxy
from tests.conftest import LoopbackServer

ENV = {"CT_LOOP_RABBIT": RABBIT_URL}
MIN = timedelta(minutes=1)


@pytest.fixture
def broker():
    """erp.orders (via a direct exchange, dead-lettering to a fanout DLX) -> erp.orders.dlq, and the tap's queue."""
    sfx = uuid.uuid4().hex[:8]
    names = {"x": f"ct.loop.orders.{sfx}", "dlx": f"ct.loop.dlx.{sfx}", "orders": f"erp.orders.{sfx}",
             "dlq": f"erp.orders.{sfx}.dlq", "events": f"ct.loop.events.{sfx}"}
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(names["x"], "direct")
    ch.exchange_declare(names["dlx"], "fanout")
    ch.queue_declare(names["dlq"], durable=True)
    ch.queue_bind(names["dlq"], names["dlx"])
    ch.queue_declare(names["orders"], durable=True, arguments={"x-dead-letter-exchange": names["dlx"]})
    ch.queue_bind(names["orders"], names["x"], routing_key=names["orders"])
    ch.queue_declare(names["events"], durable=True)
    yield ch, names
    for q in (names["orders"], names["dlq"], names["events"], names["events"] + ".quarantine"):
        ch.queue_delete(q)
    for x in (names["x"], names["dlx"]):
        ch.exchange_delete(x)
    conn.close()


def _depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def _order(i: int, at: datetime, *, poison: bool = False) -> dict:
    return {"event_id": f"loop-{i}-received", "occurred_at": at.isoformat(), "correlation_id": f"loop-{i}",
            "order_id": f"SO-{i}", "channel": "amazon", "flow": "order", "stage": "received", "status": "ok",
            "system": "marketplace", "attributes": {} if poison else {"sku": f"SKU-{i}"}}


def _place(ch, names, order: dict, at: datetime) -> None:
    """The marketplace connector: an order onto erp.orders (stamped, for the probe's age)."""
    ch.basic_publish(names["x"], names["orders"], orjson.dumps(order), pika.BasicProperties(
        message_id=f"msg-{order['correlation_id']}", delivery_mode=2, timestamp=int(at.timestamp()),
        content_type="application/json"))


def _middleware(ch, names, at: datetime, *, fixed: bool = False, flaky: tuple[str, ...] = ()) -> list[str]:
    """Take every waiting order: report it received, post it (an ERP timeout first for `flaky`
    orders), or reject a poison one (no sku) unless `fixed`. The replay header is passed on."""
    done = []
    while True:
        method, props, body = ch.basic_get(names["orders"], auto_ack=False)
        if method is None:
            return done
        order = orjson.loads(body)
        cid = order["correlation_id"]
        replay_of = (props.headers or {}).get("x-controltower-replay-of")
        headers = {"x-controltower-replay-of": replay_of} if replay_of else None
        out = [order]
        if not order["attributes"].get("sku") and not fixed:
            ch.basic_publish("", names["events"], orjson.dumps(order), pika.BasicProperties(delivery_mode=2))
            ch.basic_nack(method.delivery_tag, requeue=False)  # poison: to the DLQ
            done.append(f"{cid} rejected")
            continue
        step = {**order, "stage": "erp_posted", "system": "erp", "occurred_at": at.isoformat()}
        if cid in flaky:
            out.append({**step, "event_id": f"{cid}-timeout", "status": "error", "error_code": "ETIMEDOUT",
                        "error_message": f"ERP timed out posting {order['order_id']}"})
        out.append({**step, "event_id": f"{cid}-posted", "occurred_at": (at + timedelta(seconds=5)).isoformat()})
        for event in out:
            ch.basic_publish("", names["events"], orjson.dumps(event),
                             pika.BasicProperties(delivery_mode=2, headers=headers))
        ch.basic_ack(method.delivery_tag)
        done.append(f"{cid} posted")


def _taps_yaml(tmp_path, names) -> str:
    path = tmp_path / "taps.yaml"
    path.write_text(f"""
taps:
  - name: erp
    broker: rabbitmq
    url_env: CT_LOOP_RABBIT
    queue: {names['events']}
    dead_letter_queue: {names['dlq']}
    source_exchange: {names['x']}
    dead_letter_milestone: order.erp_posted
    channel: amazon
    hop: ERP posting
    batch: 10
    batch_wait: 50ms
probe_interval: 30s
replay:
  flows:
    order: {{produces: order.erp_posted, rate_per_minute: 60}}
""")
    return str(path)


def _runner(path, engine, settings, **kw) -> TapRunner:
    tap = load_taps(path).taps[0]
    masker = Masker()
    return TapRunner(tap, EventStore(engine, settings, masker), engine, masker, environ=ENV, **kw)


def _drain_in_thread(runner: TapRunner) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=runner.drain, kwargs={"stop": stop}, daemon=True)
    thread.start()
    return thread, stop


def test_the_exception_desk_loop(broker, engine, settings, database_url, tmp_path):
    ch, names = broker
    t0 = datetime.now(UTC).replace(microsecond=0)
    path = _taps_yaml(tmp_path, names)
    config = load_taps(path)
    store = EventStore(engine, settings, Masker())

    # 1. orders flow; the middleware posts two (loop-2 after an ERP timeout), rejects the poison
    for i in (1, 2):
        _place(ch, names, _order(i, t0), t0)
    _place(ch, names, _order(3, t0, poison=True), t0)
    assert _middleware(ch, names, t0, flaky=("loop-2",)) == ["loop-1 posted", "loop-2 posted", "loop-3 rejected"]
    wait_for(lambda: _depth(ch, names["dlq"]) == 1)  # the poison landed in the DLQ
    assert _depth(ch, names["orders"]) == 0

    # 2. the tap through a proxy to PostgreSQL: stored, stopped, restarted, database outage
    url = sa.engine.make_url(database_url)
    proxy = Proxy.to(url)
    proxy.up()
    proxied = make_engine(proxy.url(url), pool_size=2)
    try:
        thread, stop = _drain_in_thread(_runner(path, proxied, settings))
        wait_for(lambda: count_events(engine, "tap:erp")[0] == 6)  # 3 received, 1 timeout, 2 posted
        stop.set()
        thread.join(30)
        runner = _runner(path, proxied, settings)  # the restart
        thread, stop = _drain_in_thread(runner)
        proxy.down()
        _place(ch, names, _order(4, t0), t0)
        _middleware(ch, names, t0)  # loop-4 received + posted: 2 more
        for i in (1, 2):  # and an upstream retry sends loop-1's and loop-2's events again
            ch.basic_publish("", names["events"], orjson.dumps(_order(i, t0)), pika.BasicProperties(delivery_mode=2))
        time.sleep(2)
        assert count_events(engine, "tap:erp")[0] == 6
        assert _depth(ch, names["events"]) == 4  # nothing acknowledged while the database is away
        proxy.up()
        wait_for(lambda: _depth(ch, names["events"]) == 0, timeout=60)
        wait_for(lambda: runner.stats.messages >= 4, timeout=30)
        assert runner.stats.outages == 1
        stop.set()
        thread.join(30)
    finally:
        proxy.down()
        proxied.dispose()
    assert count_events(engine, "tap:erp") == (8, 8)  # exactly once

    # 3. the dead letter becomes an event though nobody reported it; browsing again adds nothing
    [first] = deadletters.browse(store, config, now=t0 + MIN, environ=ENV)
    assert (first.seen, first.stored, first.errors) == (1, 1, [])
    [again] = deadletters.browse(store, config, now=t0 + 2 * MIN, environ=ENV)
    assert (again.seen, again.stored, again.duplicates) == (1, 0, 1)
    assert _depth(ch, names["dlq"]) == 1  # browsed, not consumed
    with engine.connect() as conn:
        dead = conn.execute(sa.text("SELECT event_id, flow, stage, status, error_code, error_message FROM events "
                                    "WHERE correlation_id = 'loop-3' AND status = 'dead_letter'")).one()
    assert tuple(dead) == ("dead-letter:msg-loop-3", "order", "erp_posted", "dead_letter", "rejected",
                           f"dead-lettered from {names['orders']}: rejected")

    # 4. probes every 30 s for 13 minutes: the DLQ SLA breaches and the alert reaches the webhook
    for k in range(27):
        result = queueprobe.probe(engine, config, now=t0 + k * timedelta(seconds=30), environ=ENV)
        assert result.errors == []
    defs = definitions.load()
    at = t0 + 13 * MIN
    jobs.refresh(engine, defs, at)
    with engine.connect() as conn:
        sla = conn.execute(sa.text("SELECT health, open_breaches, reason FROM sla_status WHERE sla = 'dead_letter_queues' "
                                   "AND channel = 'amazon' AND \"window\" = '1h'")).one()
    assert sla.open_breaches == 1 and sla.health != "ok"
    assert f"DLQ {names['dlq']}: 1 message" in sla.reason
    recorder = Recorder()
    with LoopbackServer(recorder.app) as server:
        rs = parse_rules(loads(f"""
receivers:
  hook: {{type: webhook, url: "{server.url}/hook"}}
default_receivers: [hook]
rules:
  - name: DeadLettersWaiting
    sla: dead_letter_queues
    field: open_breaches
    op: ">"
    value: 0
    severity: page
""", "alerts.yaml"))
        [transition] = [t for t in evaluate(engine, rs.rules, at) if t.labels["sla"] == "dead_letter_queues"]
        assert (transition.to_state, transition.labels["channel"]) == ("firing", "amazon")
        assert deliver_pending(engine, rs.receivers, at).sent == 1
    [request] = recorder.requests
    assert request["body"]["status"] == "firing"
    assert request["body"]["alerts"][0]["labels"]["alertname"] == "DeadLettersWaiting"

    # 5. the exception group: classified from the dead letter's reason, then assigned (audited)
    with engine.connect() as conn:
        group = conn.execute(sa.text("SELECT id, class, state, channel, milestone FROM exception_groups "
                                     "WHERE error_code = 'rejected'")).one()
    assert (group.__getattribute__("class"), group.state, group.channel, group.milestone) == (
        "validation", "open", "amazon", "order.erp_posted")
    exceptionops.assign(engine, group.id, "ops-erp", "dana", at)
    shown = exceptionops.get_group(engine, group.id)
    assert shown["assignee"] == "ops-erp"
    with engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT actor, action FROM exception_actions WHERE group_id = :g"),
                             {"g": group.id}).all()
    assert ("dana", "assign") in [tuple(a) for a in audit]

    # 6. guarded replay: refused for loop-2 (posted after its timeout), allowed for the poison
    replay = load_replay(path)
    posted = replayops.request_replay(engine, config=replay, correlation_ids=["loop-2"], by="dana", now=at)
    [refused] = posted.items
    assert refused.status == "refused" and "already reached order.erp_posted" in refused.reason
    plan = replayops.request_replay(engine, config=replay, group_id=group.id, by="dana", now=at)
    [allowed] = plan.items
    assert (allowed.status, allowed.target, allowed.tap, allowed.event_id) == (
        "approved", "dlq", "erp", "dead-letter:msg-loop-3")

    # 7. the executor moves it back to erp.orders with the replay-of header
    sent_at = at + MIN
    report = ReplayRunner(AppContext(settings, engine), path, ENV).run(sent_at)
    assert (report.sent, report.failed, report.refused) == ([allowed.id], [], [])
    assert (_depth(ch, names["dlq"]), _depth(ch, names["orders"])) == (0, 1)

    # 8. the fixed middleware posts it; the tap stores the posting with replay_of
    posted_at = sent_at + MIN
    assert _middleware(ch, names, posted_at, fixed=True) == ["loop-3 posted"]
    runner = _runner(path, engine, settings, clock=lambda: posted_at + MIN)
    runner.drain(once=True)
    with engine.connect() as conn:
        attrs = conn.execute(sa.text("SELECT attributes FROM events WHERE correlation_id = 'loop-3' "
                                     "AND event_id = 'loop-3-posted'")).scalar_one()
    assert attrs["replay_of"] == "dead-letter:msg-loop-3"

    # 9. the next refresh auto-resolves the group ("milestone reached"); the story tells the replay
    jobs.refresh(engine, defs, posted_at + 2 * MIN)
    shown = exceptionops.get_group(engine, group.id)
    assert (shown["state"], shown["resolution"]) == ("resolved", "milestone reached")
    with engine.connect() as conn:
        tx = transactions.get(conn, "loop-3", now=posted_at + 2 * MIN)
    assert tx is not None
    assert replay_clauses(tx, lambda d: f"{d:%H:%M:%S}") == [
        f"replayed by dana at {sent_at:%H:%M:%S}, posted at {posted_at + timedelta(seconds=5):%H:%M:%S}"]
