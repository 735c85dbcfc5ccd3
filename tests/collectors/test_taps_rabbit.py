"""RabbitMQ taps against the real broker and PostgreSQL: ack after commit, quarantine,
exactly once across a SIGKILLed tap and a database outage (nothing acked while it is down)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import sqlalchemy as sa

from collectors.store import EventStore
from collectors.taps.config import loads_taps
from collectors.taps.runner import TapRunner
from controltower.db import make_engine
from controltower.masking import Masker
from tests.collectors.tapkit import Rabbit, count_events, event, kill, tap_process, wait_for


@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    r.close()


def _runner(text: str, engine, settings, **kw) -> TapRunner:
    tap = loads_taps(text).taps[0]
    masker = Masker()
    return TapRunner(tap, EventStore(engine, settings, masker), engine, masker, environ={}, **kw)


def test_a_poison_message_goes_to_quarantine_while_the_good_ones_land(rabbit, engine, settings):
    q = rabbit.queue()
    for i in range(4):
        rabbit.publish(q, event(i), message_id=f"m-{i}")
    rabbit.publish(q, b"{not json", message_id="poison-1")
    rabbit.publish(q, {**event(9), "flow": None, "note": "call jane.doe@example.com"}, message_id="poison-2")
    rabbit.publish(q, event(5), message_id="m-5", headers={"x-controltower-replay-of": "ev-42"})
    stats = _runner(f"taps:\n  - {{name: t1, broker: rabbitmq, queue: {q}, batch: 10}}\n", engine, settings).drain(once=True)

    assert (stats.messages, stats.stored, stats.quarantined) == (7, 5, 2)
    assert count_events(engine, "tap:t1") == (5, 5)
    assert rabbit.depth(q) == 0  # everything acknowledged
    assert rabbit.depth(q + ".quarantine") == 2
    moved = [rabbit.get(q + ".quarantine") for _ in range(2)]
    assert [p.message_id for p, _ in moved] == ["poison-1", "poison-2"]
    assert moved[0][1] == b"{not json"
    assert moved[0][0].headers["x-controltower-queue"] == q
    assert moved[1][0].headers["x-controltower-reason"].startswith("flow")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT message_id, moved_to, reason, preview FROM tap_quarantine "
                                    "WHERE tap = 't1' ORDER BY id")).all()
        replayed = conn.execute(sa.text("SELECT attributes->>'replay_of' FROM events WHERE event_id = 'm-5'")).scalar()
    assert [(r.message_id, r.moved_to) for r in rows] == [("poison-1", q + ".quarantine"), ("poison-2", q + ".quarantine")]
    assert rows[0].reason.startswith("body is not valid JSON")
    assert "jane.doe@example.com" not in rows[1].preview and "correlation_id" in rows[1].preview
    assert replayed == "ev-42"


def test_a_mapped_tap_stores_the_brokers_own_messages(rabbit, engine, settings):
    q = rabbit.queue()
    rabbit.publish(q, {"id": "X-1", "ts": "2026-01-01T00:00:00Z", "order": {"ref": "SO-1"}, "status": "POSTED"})
    now_ts = event(0)["occurred_at"]
    rabbit.publish(q, {"id": "X-2", "ts": now_ts, "order": {"ref": "SO-2"}, "status": "FAILED"})
    rabbit.publish(q, {"id": "X-3", "ts": now_ts, "order": {}, "status": "POSTED"})
    text = (f"taps:\n  - name: m1\n    broker: rabbitmq\n    queue: {q}\n    format: mapped\n    mapping:\n"
            "      event_id: id\n      occurred_at: ts\n      correlation_id: order.ref\n      channel: {const: amazon}\n"
            "      flow: {const: order}\n      stage: {const: erp_posted}\n"
            "      status: {path: status, map: {POSTED: ok, FAILED: error}}\n")
    stats = _runner(text, engine, settings).drain(once=True)
    # X-1 is older than the store accepts (max_event_age): rejected by the store, so quarantined
    assert (stats.stored, stats.quarantined) == (1, 2)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT correlation_id, stage, status FROM events WHERE source = 'tap:m1'")).all()
        reasons = conn.execute(sa.text("SELECT reason FROM tap_quarantine ORDER BY id")).scalars().all()
    assert [tuple(r) for r in stored] == [("SO-2", "erp_posted", "error")]
    assert "occurred_at" in reasons[0] and reasons[1] == "mapping found no correlation_id in the message"


def test_exactly_once_across_a_sigkilled_tap(rabbit, engine, database_url, tmp_path):
    q = rabbit.queue()
    n = 3000
    for i in range(n):
        rabbit.publish(q, event(i, "kill"), message_id=f"k-{i}")
    config = tmp_path / "taps.yaml"
    config.write_text(f"taps:\n  - {{name: k1, broker: rabbitmq, queue: {q}, batch: 50, batch_wait: 50ms}}\n")
    proc = tap_process(config, database_url)
    try:
        wait_for(lambda: 0 < count_events(engine, "tap:k1")[0], timeout=60)
        kill(proc)  # mid-stream: some batches committed, one maybe committed but not acked
    finally:
        kill(proc)
    first = count_events(engine, "tap:k1")[0]
    assert 0 < first < n, first
    # nothing it did not commit was acknowledged (the broker requeues once it sees the connection gone)
    wait_for(lambda: rabbit.depth(q) >= n - first, timeout=15)
    again = tap_process(config, database_url, "--once")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert count_events(engine, "tap:k1") == (n, n)
    assert rabbit.depth(q) == 0


class Proxy:
    """A TCP forwarder on loopback to PostgreSQL that can be taken down (every connection cut) and up.
    The target is a TCP (host, port), or the path of a Unix socket (the embedded PostgreSQL)."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not on Linux)
            except OSError:
                pass
            server.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if isinstance(self.target, str):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
            else:
                upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @classmethod
    def to(cls, url: sa.engine.URL) -> Proxy:
        """A proxy to the database of `url`: its TCP host and port, or its Unix socket (`?host=/dir`)."""
        folder = url.query.get("host")
        if url.host is None and isinstance(folder, str) and folder.startswith("/"):
            return cls(f"{folder}/.s.PGSQL.{url.port or 5432}")
        return cls((url.host or "127.0.0.1", url.port or 5432))

    def url(self, url: sa.engine.URL) -> str:
        """`url` through this proxy (TCP on loopback)."""
        return url.difference_update_query(["host"]).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_nothing_is_acked_while_the_database_is_down_and_all_lands_once_after(rabbit, engine, database_url, settings):
    url = sa.engine.make_url(database_url)
    proxy = Proxy.to(url)
    proxy.up()
    proxied = make_engine(proxy.url(url), pool_size=2)
    q = rabbit.queue()
    for i in range(20):
        rabbit.publish(q, event(i, "before"), message_id=f"b-{i}")
    runner = _runner(f"taps:\n  - {{name: o1, broker: rabbitmq, queue: {q}, batch: 10, batch_wait: 50ms}}\n",
                     proxied, settings)
    stop = threading.Event()
    thread = threading.Thread(target=runner.drain, kwargs={"stop": stop}, daemon=True)
    try:
        thread.start()
        wait_for(lambda: count_events(engine, "tap:o1")[0] == 20)
        wait_for(lambda: rabbit.depth(q) == 0)
        proxy.down()
        for i in range(30):
            rabbit.publish(q, event(i, "during"), message_id=f"d-{i}")
        time.sleep(3)  # the tap tried, failed, gave the batch back and stopped consuming
        assert runner.stats.outages == 1
        assert rabbit.depth(q) == 30  # every message still in the broker, none acknowledged
        assert count_events(engine, "tap:o1")[0] == 20
        proxy.up()
        wait_for(lambda: count_events(engine, "tap:o1")[0] == 50, timeout=60)
        wait_for(lambda: rabbit.depth(q) == 0)
        assert count_events(engine, "tap:o1") == (50, 50)
        assert thread.is_alive()  # the process survived the outage
    finally:
        stop.set()
        thread.join(30)
        proxy.down()
        proxied.dispose()
