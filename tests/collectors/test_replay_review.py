"""Hostile review of guarded replay: identities, double replays, targets that misbehave, pacing."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pika
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

from collectors import replay as replay_mod
from collectors.replay import Executor
from controltower import replayops
from controltower.errors import ControlTowerError
from controltower.schema.replay import replay_requests
from tests.collectors.test_replay import AMQP, CONFIG, T0, Tap, _http_setup, _order, _rows, _store
from tests.conftest import LoopbackServer


# -- approval: one person cannot approve their own money-moving replay -----------------------------
@pytest.mark.parametrize("approver", ["dana", "Dana", "DANA ", " dana", "ｄａｎａ", "da\u200bna", "\u00addana",
                                      "Ｄａｎａ"])
def test_the_requester_cannot_approve_under_another_spelling_of_the_same_name(engine, settings, approver):
    store = _store(engine, settings)
    _order(store, "c-ret", "SO-9", flow="refund", failed_stage="refund_posted")
    item = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="dana", now=T0).items[0]
    with pytest.raises(ControlTowerError, match="a second, different person must approve"):
        replayops.approve_replay(engine, item.id, approver, T0)
    assert _rows(engine)["c-ret"].status == "requested"


def test_a_requester_spelled_oddly_cannot_approve_as_the_plain_name(engine, settings):
    store = _store(engine, settings)
    _order(store, "c-ret", "SO-9", flow="refund", failed_stage="refund_posted")
    item = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="Ｄａｎａ  Smith",
                                    now=T0).items[0]
    with pytest.raises(ControlTowerError, match="a second, different person"):
        replayops.approve_replay(engine, item.id, "dana smith", T0)
    assert replayops.approve_replay(engine, item.id, "lee", T0)["approved_by"] == "lee"


# -- the same failed message replayed twice ---------------------------------------------------------
def test_a_second_request_for_a_message_already_pending_is_refused(engine, settings):
    store = _store(engine, settings)
    _order(store, "c-ret", "SO-9", flow="refund", failed_stage="refund_posted")
    first = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="dana", now=T0).items[0]
    second = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="kim",
                                      now=T0 + timedelta(seconds=5)).items[0]
    assert second.status == "refused"
    assert f"replay {first.id}" in second.reason and "already" in second.reason


def test_a_refund_requested_twice_is_sent_once(engine, settings, endpoint):
    """Two requests for one event raced past the request guard (both approved): one POST."""
    store, raw = _http_setup(engine, settings, ["c-1"])
    ids = []
    with engine.begin() as conn:  # as if two requests were recorded concurrently
        for by in ("dana", "kim"):
            ids.append(conn.execute(replay_requests.insert().values(
                created_at=T0, requested_by=by, target="http", tap="erp", flow="order", channel="amazon",
                correlation_id="c-1", event_id="c-1-e", message_id="c-1-e", batch=by, status="approved",
                needs_approval=False, not_before=T0, updated_at=T0).returning(replay_requests.c.id)).scalar_one())
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "t"}
    report = Executor(engine, store, CONFIG, {}, environ=env, raw=raw).run_once(T0)
    assert report.sent == [ids[0]] and report.refused == [ids[1]]
    assert len(endpoint.received) == 1
    with engine.connect() as conn:
        outcome = conn.execute(sa.select(replay_requests.c.outcome).where(replay_requests.c.id == ids[1])).scalar_one()
    assert f"replay {ids[0]}" in outcome


def test_after_a_sent_replay_another_one_needs_the_duplicate_confirmed(engine, settings, endpoint):
    store, raw = _http_setup(engine, settings, ["c-1"])
    replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "t"}
    assert len(Executor(engine, store, CONFIG, {}, environ=env, raw=raw).run_once(T0).sent) == 1
    later = T0 + timedelta(minutes=5)
    again = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=later).items[0]
    assert again.status == "refused" and "already replayed" in again.reason
    confirmed = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=later,
                                         confirm_duplicate=True).items[0]
    assert confirmed.status == "approved" and confirmed.duplicate
    assert len(Executor(engine, store, CONFIG, {}, environ=env, raw=raw).run_once(later).sent) == 1
    assert len(endpoint.received) == 2


def test_a_flow_that_now_needs_approval_is_not_sent_without_one(engine, settings, endpoint):
    from controltower.replayconfig import loads_replay

    store, raw = _http_setup(engine, settings, ["c-1"])
    replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    stricter = loads_replay("""
replay:
  flows:
    order: {produces: order.erp_posted, approval: true}
  endpoints:
    order: {url_env: REPLAY_ORDER_URL}
""", "taps.yaml")
    env = {"REPLAY_ORDER_URL": endpoint.url}
    report = Executor(engine, store, stricter, {}, environ=env, raw=raw).run_once(T0)
    assert report.sent == [] and endpoint.received == []


# -- the HTTP endpoint misbehaves --------------------------------------------------------------------
class Hostile:
    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []

        async def redirect(request: Request) -> RedirectResponse:
            self.received.append(dict(request.headers))
            return RedirectResponse(self.url + "/steal", status_code=307)

        async def steal(request: Request) -> JSONResponse:
            self.received.append(dict(request.headers))
            return JSONResponse({"stolen": True})

        async def endless(request: Request) -> StreamingResponse:
            self.received.append(dict(request.headers))

            async def forever():
                import asyncio

                while True:
                    yield b"x" * 65536
                    await asyncio.sleep(0.01)

            return StreamingResponse(forever(), status_code=200)

        async def boom(request: Request) -> JSONResponse:
            return JSONResponse({"error": "s3cret leaked?"}, status_code=500)

        self.app = Starlette(routes=[Route("/redirect", redirect, methods=["POST"]),
                                     Route("/steal", steal, methods=["POST", "GET"]),
                                     Route("/endless", endless, methods=["POST"]),
                                     Route("/boom", boom, methods=["POST"])])


@pytest.fixture
def hostile():
    h = Hostile()
    with LoopbackServer(h.app) as server:
        h.url = server.url
        yield h


@pytest.fixture
def endpoint():
    from tests.collectors.test_replay import Endpoint

    ep = Endpoint()
    with LoopbackServer(ep.app) as server:
        ep.url = server.url + "/replay"
        yield ep


def _one_http(engine, settings, url, token="s3cret"):
    store, raw = _http_setup(engine, settings, ["c-1"])
    replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    env = {"REPLAY_ORDER_URL": url, "REPLAY_ORDER_TOKEN": token}
    return Executor(engine, store, CONFIG, {}, environ=env, raw=raw, http_timeout=2.0)


def test_a_redirect_is_not_followed_with_the_token(engine, settings, hostile):
    report = _one_http(engine, settings, hostile.url + "/redirect").run_once(T0)
    assert report.failed and len(hostile.received) == 1  # /steal never saw the bearer token
    row = _rows(engine)["c-1"]
    assert "307" in row.outcome and "s3cret" not in row.outcome and hostile.url not in row.outcome


def test_an_endless_answer_does_not_hang_the_executor(engine, settings, hostile):
    started = time.monotonic()
    report = _one_http(engine, settings, hostile.url + "/endless").run_once(T0)
    assert time.monotonic() - started < 10
    assert report.sent  # 200: the endpoint took it; its body is not ours to read


def test_a_500_fails_and_neither_token_nor_url_nor_body_reach_the_outcome(engine, settings, hostile):
    report = _one_http(engine, settings, hostile.url + "/boom").run_once(T0)
    assert report.failed
    outcome = _rows(engine)["c-1"].outcome
    assert "HTTP 500" in outcome and "s3cret" not in outcome and "127.0.0.1" not in outcome


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "127.0.0.1:1/x"])
def test_an_endpoint_url_that_is_not_http_is_refused_by_name(engine, settings, url):
    report = _one_http(engine, settings, url).run_once(T0)
    assert report.failed
    outcome = _rows(engine)["c-1"].outcome
    assert "REPLAY_ORDER_URL" in outcome and "http" in outcome and url not in outcome


# -- the DLQ walk -------------------------------------------------------------------------------------
@pytest.fixture
def rabbit():
    suffix = uuid.uuid4().hex[:8]
    q, dlq = f"rv.src.{suffix}", f"rv.dlq.{suffix}"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q)
    ch.queue_declare(dlq)
    yield ch, q, dlq
    ch.queue_delete(q)
    ch.queue_delete(dlq)
    conn.close()


def test_the_dlq_walk_is_bounded_and_leaves_the_dlq_in_order(engine, settings, rabbit, monkeypatch):
    ch, q, dlq = rabbit
    for i in range(30):
        ch.basic_publish("", dlq, b'{"event_id": "m-%d"}' % i, pika.BasicProperties(message_id=f"m-{i}"))
    ch.basic_publish("", dlq, b'{"event_id": "c-1-e"}', pika.BasicProperties(message_id="c-1-e"))
    monkeypatch.setattr(replay_mod, "MAX_DLQ_WALK", 10)
    store = _store(engine, settings)
    _order(store, "c-1", "SO-1", source="tap:erp")
    replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
    report = Executor(engine, store, CONFIG, {"erp": Tap("erp", q, dlq)},
                      environ={"TEST_AMQP_URL": AMQP}).run_once(T0)
    assert report.deferred or report.failed
    row = _rows(engine)["c-1"]
    assert row.status == "approved" and "first 10" in row.outcome  # looked for again later, says why
    assert ch.queue_declare(dlq, passive=True).method.message_count == 31
    ids = []
    for _ in range(31):
        _, props, _ = ch.basic_get(dlq, auto_ack=True)
        ids.append(props.message_id)
    assert ids == [f"m-{i}" for i in range(30)] + ["c-1-e"]


# -- pacing across executors: the rate limit counts real send times ---------------------------------
def test_the_rate_limit_counts_when_a_replay_was_really_sent(engine, settings, endpoint):
    cids = ["c-1", "c-2", "c-3", "c-4"]
    store, raw = _http_setup(engine, settings, cids)
    for cid in cids:
        replayops.request_replay(engine, config=CONFIG, correlation_ids=[cid], by="dana", now=T0)
    env = {"REPLAY_ORDER_URL": endpoint.url, "REPLAY_ORDER_TOKEN": "t"}
    ticks = iter([T0 + timedelta(seconds=50)] * 3)
    slow = Executor(engine, store, CONFIG, {}, environ=env, raw=raw)
    # a slow run started at T0: its second send really happens 50 s later
    first = slow.run_once(T0, limit=2, clock=lambda: next(ticks))
    assert len(first.sent) == 2
    sent_at = sorted(r.sent_at for r in _rows(engine).values() if r.sent_at)
    assert sent_at == [T0, T0 + timedelta(seconds=50)]
    # another executor at T0+65s: the 2/min window (T0+5s, T0+65s] holds the send at T0+50s: one more, not two
    second = Executor(engine, store, CONFIG, {}, environ=env, raw=raw).run_once(T0 + timedelta(seconds=65))
    assert (len(second.sent), len(second.deferred)) == (1, 1)


def test_a_hung_broker_fails_the_dlq_replay_in_bounded_time_and_the_run_goes_on(engine, settings, monkeypatch):
    monkeypatch.setattr(replay_mod, "BROKER_TIMEOUT", 1.0)
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)  # accepts (the kernel does), never answers
    try:
        store = _store(engine, settings)
        _order(store, "c-1", "SO-1", source="tap:erp")
        replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-1"], by="dana", now=T0)
        url = f"amqp://guest:guest@127.0.0.1:{sock.getsockname()[1]}/%2F"
        started = time.monotonic()
        report = Executor(engine, store, CONFIG, {"erp": Tap("erp", "q", "dlq")},
                          environ={"TEST_AMQP_URL": url}).run_once(T0)
        assert time.monotonic() - started < 6
    finally:
        sock.close()
    assert report.failed
    outcome = _rows(engine)["c-1"].outcome
    assert "cannot connect" in outcome and "guest" not in outcome


# -- the raw store's retention runs without anyone running `replay run` ------------------------------
def test_the_scheduler_purges_the_raw_store_past_raw_store_days(engine, settings, tmp_path):
    from cryptography.fernet import Fernet

    from collectors.rawstore import RawMessage, RawStore
    from controltower.context import AppContext
    from controltower.schema.replay import raw_payloads
    from wiring.scheduler import room_jobs

    raw = RawStore(Fernet.generate_key().decode())
    with engine.begin() as conn:
        for cid, age in (("old", timedelta(days=3)), ("new", timedelta(hours=2))):
            raw.keep(conn, tap="erp", correlation_id=cid, event_id=f"{cid}-e", now=T0 - age,
                     message=RawMessage(b'{"iban": "DE89370400440532013000"}'))
    path = tmp_path / "taps.yaml"
    path.write_text("taps:\n  - {name: erp, broker: rabbitmq, queue: erp.orders}\nreplay:\n  raw_store_days: 2\n")
    context = AppContext(settings.__class__.load({"database_url": settings.database_url, "taps_file": path},
                                                 environ={}), engine)
    [job] = [j for j in room_jobs(context) if j.name == "replay.raw_store_purge"]
    assert job.run(T0) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(raw_payloads.c.correlation_id)).scalars().all() == ["new"]
