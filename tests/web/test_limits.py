"""#10 finding 9: every POST checks the key first, then the size limit, then parses; slow bodies time out."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from controltower import apikeys
from controltower.context import AppContext
from tests.conftest import LoopbackServer
from tests.web.helpers import raw_request
from wiring.server import build_app

POSTS = ("/v1/alerts/0123abcd/ack", "/v1/events", "/v1/traces")
HUGE = 200 * 1024 * 1024


@pytest.fixture
def keyed(engine, settings):
    token = apikeys.create(engine, "writer", ("ingest", "read"))
    small = settings.with_(max_body_bytes=1024 * 1024, body_timeout=1.0)
    with LoopbackServer(build_app(AppContext(small, engine))) as server:
        yield server, token


@pytest.mark.parametrize("path", POSTS)
def test_declared_200_mb_body_is_401_without_key_and_413_with_it(keyed, path):
    server, token = keyed
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {HUGE}"
    status, _ = raw_request(server.url, head, b"[" * 1000)
    assert status == 401
    status, answer = raw_request(server.url, head + f"\r\nAuthorization: Bearer {token}", b"[" * 1000)
    assert status == 413 and b"more than the 1048576" in answer


@pytest.mark.parametrize("path", POSTS)
def test_streamed_body_past_the_limit_is_413(keyed, path):
    server, token = keyed

    def chunks():
        for _ in range(40):
            yield b" " * 65536  # 2.5 MiB in total, no Content-Length (chunked)

    r = httpx.post(server.url + path, content=chunks(),
                   headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    cap = "65536" if path.endswith("/ack") else "1048576"  # a command body has its own, smaller cap
    assert r.status_code == 413 and cap in r.json()["error"]


def test_ack_deeply_nested_json_is_400_not_500(keyed):
    server, token = keyed
    r = httpx.post(server.url + "/v1/alerts/0123abcd/ack", content=b"[" * 60_000,  # under the 64 KiB cap
                   headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


@pytest.mark.parametrize("path", POSTS)
def test_slow_body_is_408_after_the_body_timeout(keyed, path):
    server, token = keyed
    host, port = server.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n[").encode())
        answer = sock.recv(65536)  # nothing more is sent: the server gives up after body_timeout (1 s)
        elapsed = time.monotonic() - started
        sock.settimeout(2)
        while b"}" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.split(b" ", 2)[1] == b"408", answer
    assert b"did not arrive within 1 s" in answer
    assert 0.9 < elapsed < 5


def test_a_sender_that_disconnects_mid_body_leaves_no_traceback(keyed, caplog):
    server, token = keyed
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n[").encode())
        time.sleep(0.2)
    time.sleep(0.3)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_uvicorn_gets_the_connection_limits_from_the_settings(settings):
    from wiring.server import MAX_HEADER_BYTES, uvicorn_options

    options = uvicorn_options(settings.with_(header_timeout=7.0, max_connections=50, port=4999))
    assert (options["timeout_keep_alive"], options["limit_concurrency"], options["port"]) == (7, 50, 4999)
    assert options["h11_max_incomplete_event_size"] == MAX_HEADER_BYTES == 16 * 1024
    assert uvicorn_options(settings.with_(max_connections=0))["limit_concurrency"] is None



def test_ack_body_is_capped_at_64_kib_while_it_streams(keyed):
    """A 900 KB ack body (under the ingest limit) was read whole and parsed; a command body is small."""
    server, token = keyed
    body = b'{"by": "' + b"a" * 900_000 + b'"}'
    r = httpx.post(server.url + "/v1/alerts/0123abcd/ack", content=body,
                   headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 413 and "65536" in r.json()["error"]
    r = httpx.post(server.url + "/v1/alerts/0123abcd/ack", content=b'{"by": "' + b"a" * 60_000 + b'"}',
                   headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 404  # under the cap: read, then no such alert


def _served(app, settings):
    """A uvicorn server with the collector's own options (protocol included) on a free port."""
    import threading

    import uvicorn

    from wiring.server import uvicorn_options

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    options = uvicorn_options(settings.with_(host="127.0.0.1", port=port, header_timeout=1.0)) | {"log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, thread, port


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (sending `trickle` every 0.3 s meanwhile), or None."""
    started = time.monotonic()
    sock.settimeout(0.3)
    while time.monotonic() - started < seconds:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(100) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def test_request_heads_have_a_deadline_so_slowloris_cannot_hold_connections(engine, settings):
    """A connection sending nothing, or one header line every 0.3 s, was held for ever (uvicorn
    times out only idle keep-alive connections, and any byte cancels that)."""
    server, thread, port = _served(build_app(AppContext(settings, engine)), settings)
    try:
        idle = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert (_closed_within(idle, 6) or 99) < 3
        assert (_closed_within(slow, 6, trickle=b"X-Slow: 1\r\n") or 99) < 3
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # a keep-alive client still works
            assert client.get("/healthz").status_code == 200
            assert client.get("/healthz").status_code == 200
        kept = socket.create_connection(("127.0.0.1", port))  # after a response, the next head has the deadline too
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(3)
        assert b"200 OK" in kept.recv(1000)
        assert (_closed_within(kept, 6, trickle=b"G") or 99) < 3
    finally:
        server.should_exit = True
        thread.join(10)
