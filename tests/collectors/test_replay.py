"""Guarded replay against a real PostgreSQL, a real RabbitMQ and a real loopback HTTP endpoint."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pika
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collectors import rawstore
from collectors.rawstore import RawMessage, RawStore
from collectors.replay import Executor
from collectors.store import EventStore
from controltower import replayops
from controltower.errors import ConfigError, ControlTowerError
from controltower.masking import Masker, MaskingRules
from controltower.replayconfig import loads_replay
from controltower.schema.replay import raw_payloads, replay_requests
from tests.conftest import LoopbackServer

T0 = datetime(2026, 3, 2, 10, 40, tzinfo=UTC)
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"

CONFIG = loads_replay(
    """
replay:
  flows:
    order: {produces: order.erp_posted, rate_per_minute: 2}
    refund: {produces: return.refund_posted}
  endpoints:
    order: {url_env: REPLAY_ORDER_URL, token_env: REPLAY_ORDER_TOKEN}
  raw_store_days: 7
""",
    "taps.yaml",
)


@dataclass
class Tap:  # the fields collectors.taps.config.TapConfig gives the executor
    name: str
    queue: str
    dead_letter_queue: str
    broker: str = "rabbitmq"
    source_exchange: str = ""

    def broker_url(self, environ):
        return environ["TEST_AMQP_URL"]


def _store(engine, settings):
    return EventStore(engine, settings, Masker(MaskingRules.for_settings(settings)))


def _order(store, cid, order_id, *, posted_at=None, source="tap:erp", flow="order", failed_stage="erp_posted",
           now=T0, payload=None):
    events = [
        {"event_id": f"{cid}-r", "occurred_at": (now - timedelta(minutes=5)).isoformat(), "correlation_id": cid,
         "order_id": order_id, "channel": "amazon", "flow": flow, "stage": "received", "status": "ok",
         "system": "marketplace"},
        {"event_id": f"{cid}-e", "occurred_at": (now - timedelta(minutes=3)).isoformat(), "correlation_id": cid,
         "order_id": order_id, "channel": "amazon", "flow": flow, "stage": failed_stage, "status": "dead_letter",
         "system": "middleware", "error_message": "ERP timeout", "payload": payload or {"order": order_id}},
    ]
    if posted_at is not None:
        events.append({"event_id": f"{cid}-p", "occurred_at": posted_at.isoformat(), "correlation_id": cid,
                       "order_id": order_id, "channel": "amazon", "flow": flow, "stage": failed_stage,
                       "status": "ok", "system": "erp"})
    result = store.ingest(events, source=source, now=now)
    assert result.accepted == len(events), result.rejected


def _rows(engine):
    with engine.connect() as conn:
        return {r.correlation_id: r for r in conn.execute(sa.select(replay_requests).order_by(replay_requests.c.id))}


def test_refused_as_duplicate_for_a_posted_order_and_allowed_for_an_unposted_one(engine, settings):
    store = _store(engine, settings)
    _order(store, "c-posted", "SO-1", posted_at=T0 - timedelta(minutes=1))
    _order(store, "c-open", "SO-2")
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-posted", "c-open"], by="dana", now=T0)
    refused, accepted = plan.refused, plan.accepted
    assert [i.correlation_id for i in refused] == ["c-posted"]
    assert refused[0].reason.startswith("order SO-1 already reached order.erp_posted at 2026-03-02 10:39 UTC")
    assert [(i.correlation_id, i.event_id, i.target, i.tap) for i in accepted] == [("c-open", "c-open-e", "dlq", "erp")]
    rows = _rows(engine)
    assert (rows["c-posted"].status, rows["c-open"].status) == ("refused", "approved")
    assert rows["c-open"].requested_by == "dana" and not rows["c-open"].needs_approval
    # explicitly confirmed, the duplicate is accepted and the confirmation recorded
    again = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-posted"], by="dana", now=T0,
                                     confirm_duplicate=True)
    assert again.items[0].status == "approved" and again.items[0].duplicate
    with engine.connect() as conn:
        assert conn.execute(sa.select(replay_requests.c.confirm_duplicate)
                            .where(replay_requests.c.id == again.items[0].id)).scalar_one() is True


def test_dry_run_shows_what_would_be_sent_and_writes_nothing(engine, settings):
    store = _store(engine, settings)
    _order(store, "c-1", "SO-1", payload={"order": "SO-1", "email": "jane.doe@example.com"})
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0, dry_run=True)
    item = plan.items[0]
    assert item.id is None and item.status == "approved"
    assert item.preview["headers"] == {"x-controltower-replay-of": "c-1-e"}
    assert "jane.doe@example.com" not in str(item.preview["body_masked"])
    assert "erp" in item.preview["target"]
    assert _rows(engine) == {}


def test_money_flow_needs_a_second_person_to_approve(engine, settings):
    store = _store(engine, settings)
    _order(store, "c-ret", "SO-9", flow="refund", failed_stage="refund_posted")
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="dana", now=T0)
    item = plan.items[0]
    assert (item.status, item.needs_approval) == ("requested", True)  # approval defaults on for refund
    with pytest.raises(ControlTowerError, match="requested by dana: a second, different person must approve"):
        replayops.approve_replay(engine, item.id, "Dana", T0)
    approved = replayops.approve_replay(engine, item.id, "lee", T0 + timedelta(minutes=1))
    assert (approved["status"], approved["approved_by"]) == ("approved", "lee")
    with pytest.raises(ControlTowerError, match="only a requested replay can be approved"):
        replayops.approve_replay(engine, item.id, "kim", T0)


# -- HTTP target, raw store, rate limit, cancel ---------------------------------------------------
class Endpoint:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []

        async def post(request: Request) -> JSONResponse:
            self.received.append((await request.body(), dict(request.headers)))
            return JSONResponse({"ok": True}, status_code=202)

        self.app = Starlette(routes=[Route("/replay", post, methods=["POST"])])


@pytest.fixture
def endpoint():
    ep = Endpoint()
    with LoopbackServer(ep.app) as server:
        ep.url = server.url + "/replay"
        yield ep


def _http_setup(engine, settings, cids):
    store = _store(engine, settings)
    raw = RawStore(Fernet.generate_key().decode())
    with engine.begin() as conn:
        for cid in cids:
            _order(store, cid, f"SO-{cid}", source="api")
            raw.keep(conn, tap="erp", correlation_id=cid, event_id=f"{cid}-e", now=T0,
                     message=RawMessage(b'{"order": "%s", "email": "jane.doe@example.com"}' % cid.encode(),
                                        {"h": "1"}, "application/json"))
    return store, raw


def test_http_replay_posts_the_original_with_the_token_and_writes_the_lineage(engine, settings, endpoint):
    store, raw = _http_setup(engine, settings, ["c-1"])
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    assert plan.items[0].target == "http"
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "s3cret"}
    report = Executor(engine, store, CONFIG, {}, environ=env, raw=raw).run_once(T0)
    assert report.sent == [plan.items[0].id]
    body, headers = endpoint.received[0]
    assert body == b'{"order": "c-1", "email": "jane.doe@example.com"}'  # the original, not the masked one
    assert headers["authorization"] == "Bearer s3cret" and headers["x-controltower-replay-of"] == "c-1-e"
    row = _rows(engine)["c-1"]
    assert (row.status, row.sent_at, row.outcome) == ("sent", T0, "POST to $REPLAY_ORDER_URL: HTTP 202")
    with engine.connect() as conn:
        lineage = conn.execute(sa.text(
            "SELECT flow, stage, status, system, attributes FROM events WHERE event_id = :e"),
            {"e": f"replay-{row.id}"}).one()
    assert lineage[:4] == ("order", "replayed", "ok", "controltower")
    assert lineage.attributes["replay_of"] == "c-1-e" and lineage.attributes["replay_by"] == "dana"
    # the order posts after the replay: the request reads "posted at"
    store.ingest([{"event_id": "c-1-p", "occurred_at": (T0 + timedelta(minutes=1)).isoformat(),
                   "correlation_id": "c-1", "channel": "amazon", "flow": "order", "stage": "erp_posted",
                   "status": "ok", "system": "erp"}], source="api", now=T0 + timedelta(minutes=1))
    listed = replayops.list_replays(engine, CONFIG)
    assert listed[0]["produced_at"] == T0 + timedelta(minutes=1)


def test_rate_limit_paces_sends_per_flow(engine, settings, endpoint):
    store, raw = _http_setup(engine, settings, ["c-1", "c-2", "c-3"])
    for cid in ("c-1", "c-2", "c-3"):  # three separate requests, all due now; the flow allows 2/min
        replayops.request_replay(engine, config=CONFIG, correlation_ids=[cid], by="dana", now=T0)
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "t"}
    ex = Executor(engine, store, CONFIG, {}, environ=env, raw=raw)
    first = ex.run_once(T0)
    assert (len(first.sent), len(first.deferred)) == (2, 1)
    assert ex.run_once(T0 + timedelta(seconds=30)).sent == []
    assert len(ex.run_once(T0 + timedelta(seconds=61)).sent) == 1
    assert sorted(r.sent_at for r in _rows(engine).values()) == [T0, T0, T0 + timedelta(seconds=61)]


def test_bulk_is_paced_and_cancel_stops_the_rest(engine, settings, endpoint):
    store, raw = _http_setup(engine, settings, ["c-1", "c-2", "c-3"])
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1", "c-2", "c-3"], by="dana", now=T0)
    assert [i.not_before for i in plan.items] == [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "t"}
    ex = Executor(engine, store, CONFIG, {}, environ=env, raw=raw)
    assert len(ex.run_once(T0).sent) == 1
    assert replayops.cancel_replay(engine, batch=plan.batch, by="lee", now=T0 + timedelta(seconds=5)) == 2
    assert ex.run_once(T0 + timedelta(minutes=10)).sent == []
    assert len(endpoint.received) == 1
    assert sorted(r.status for r in _rows(engine).values()) == ["cancelled", "cancelled", "sent"]


def test_raw_store_is_encrypted_at_rest_needs_its_key_and_expires(engine, settings):
    _http_setup(engine, settings, ["c-1"])
    with engine.connect() as conn:
        ciphertext = bytes(conn.execute(sa.select(raw_payloads.c.ciphertext)).scalar_one())
    assert b"jane.doe@example.com" not in ciphertext and b"c-1" not in ciphertext
    with pytest.raises(ConfigError, match="CONTROLTOWER_RAW_STORE_KEY is not set"):
        RawStore(None)
    with pytest.raises(ConfigError, match="not a Fernet key"):
        RawStore("short")
    with engine.connect() as conn, pytest.raises(ControlTowerError, match="cannot be decrypted"):
        RawStore(Fernet.generate_key().decode()).load(conn, "c-1", "c-1-e")
    assert rawstore.purge(engine, T0 + timedelta(days=6), 7) == 0
    assert rawstore.purge(engine, T0 + timedelta(days=7, seconds=1), 7) == 1


# -- RabbitMQ DLQ back to its source ---------------------------------------------------------------
@pytest.fixture
def rabbit():
    suffix = uuid.uuid4().hex[:8]
    q, dlq, dlx = f"rp.src.{suffix}", f"rp.dlq.{suffix}", f"rp.dlx.{suffix}"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    yield ch, q, dlq
    ch.queue_delete(q)
    ch.queue_delete(dlq)
    ch.exchange_delete(dlx)
    conn.close()


def _dead_letter(ch, q, message_id, body):
    ch.basic_publish("", q, body, pika.BasicProperties(message_id=message_id, delivery_mode=2))
    method, _, _ = ch.basic_get(q)
    ch.basic_nack(method.delivery_tag, requeue=False)


def test_dlq_message_moves_back_to_its_source_once_with_two_executors(engine, settings, rabbit):
    ch, q, dlq = rabbit
    _dead_letter(ch, q, "other-msg", b'{"event_id": "other"}')
    _dead_letter(ch, q, "c-1-e", b'{"event_id": "c-1-e", "correlation_id": "c-1"}')
    store = _store(engine, settings)
    _order(store, "c-1", "SO-1", source="tap:erp")
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    taps = {"erp": Tap("erp", q, dlq)}
    executors = [Executor(engine, store, CONFIG, taps, environ={"TEST_AMQP_URL": AMQP}) for _ in range(2)]
    reports = []
    barrier = threading.Barrier(2)

    def run(ex):
        barrier.wait()
        reports.append(ex.run_once(T0))

    threads = [threading.Thread(target=run, args=(ex,)) for ex in executors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r.sent) for r in reports) == [0, 1]
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert ch.queue_declare(dlq, passive=True).method.message_count == 1  # the other one, requeued
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert props.message_id == "c-1-e" and props.headers["x-controltower-replay-of"] == "c-1-e"
    assert "x-death" not in props.headers
    method, props, _ = ch.basic_get(dlq, auto_ack=True)
    assert props.message_id == "other-msg"
    row = _rows(engine)["c-1"]
    assert (row.status, row.attempts, row.outcome) == ("sent", 1, f"moved from {dlq} to queue {q}")
    assert plan.items[0].id == row.id
