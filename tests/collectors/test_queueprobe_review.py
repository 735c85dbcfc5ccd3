"""Hostile review of the queue probe: brokers that hang, broken taps files under the scheduler."""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime

import pytest

from collectors import queueprobe
from collectors.taps.config import loads_taps
from controltower.context import AppContext
from controltower.errors import ConfigError

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def silent_broker():
    """A TCP server that accepts connections and never says a word (a hung broker, a firewall)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    for c in held:
        c.close()
    sock.close()


@pytest.mark.parametrize("broker", ["rabbitmq", "jetstream"])
def test_a_broker_that_hangs_on_connect_costs_a_bounded_time(engine, silent_broker, broker, monkeypatch):
    monkeypatch.setattr(queueprobe, "TIMEOUT", 1.0)
    url = f"amqp://guest:guest@127.0.0.1:{silent_broker}/%2F" if broker == "rabbitmq" else \
        f"nats://127.0.0.1:{silent_broker}"
    keys = "queue: q" if broker == "rabbitmq" else "stream: S, subject: s.>, durable: d"
    targets = loads_taps(f"taps:\n  - {{name: t, broker: {broker}, url_env: HUNG_URL, {keys}}}\n", "taps.yaml")
    started = time.monotonic()
    result = queueprobe.probe(engine, targets, now=NOW, environ={"HUNG_URL": url})
    assert time.monotonic() - started < 6  # a few times TIMEOUT, never the library's 15-60 s defaults
    assert result.rows == [] and len(result.errors) == 1
    assert "guest" not in result.errors[0]


def test_a_broken_taps_file_stops_the_scheduler_at_start_and_later_breakage_is_one_log_line(
        engine, settings, tmp_path, caplog):
    from wiring.scheduler import room_jobs

    path = tmp_path / "taps.yaml"
    path.write_text("taps:\n  - {name: t, broker: kafka, url_env: X, queue: q}\n")
    context = AppContext(settings.__class__.load({"database_url": settings.database_url, "taps_file": path},
                                                 environ={}), engine)
    # like a broken rules file: the scheduler refuses to start, with file:line (the CLI prints one line)
    with pytest.raises(ConfigError, match=r"taps\.yaml:2: .*kafka"):
        room_jobs(context)
    # a file that breaks while running: the probe logs it once and keeps going; a fix is picked up
    path.write_text("taps:\n  - {name: t, broker: rabbitmq, url_env: X, queue: q}\n")
    [job] = queueprobe.jobs(context, environ={})
    path.write_text("taps:\n  - {name: t, broker: kafka, url_env: X, queue: q}\n")
    caplog.clear()  # (room_jobs above may have logged the broken file once already)
    with caplog.at_level(logging.ERROR, logger="collectors.queueprobe"):
        job.run(NOW)
        job.run(NOW)
    lines = [r.getMessage() for r in caplog.records if r.name == "collectors.queueprobe"]
    assert len(lines) == 1 and "taps.yaml:2" in lines[0] and "kafka" in lines[0]
    path.write_text("taps:\n  - {name: t, broker: rabbitmq, url_env: X, queue: q, peek: false}\n")
    assert len(job.run(NOW).errors) == 1  # probing again (X is not set: reported, not raised)


def test_dead_letter_browsing_of_a_hung_broker_costs_a_bounded_time_and_is_reported(silent_broker, monkeypatch):
    from collectors import deadletters

    monkeypatch.setattr(deadletters, "TIMEOUT", 1.0)
    config = loads_taps("taps:\n  - {name: t, broker: rabbitmq, url_env: HUNG_URL, queue: q, dead_letter_queue: q.dlq}\n",
                        "taps.yaml")
    started = time.monotonic()
    [result] = deadletters.browse(None, config, now=NOW,  # type: ignore[arg-type]  (nothing is stored)
                                  environ={"HUNG_URL": f"amqp://guest:guest@127.0.0.1:{silent_broker}/%2F"})
    assert time.monotonic() - started < 6  # a few times TIMEOUT, never pika's 15 s handshake
    assert result.stored == 0 and len(result.errors) == 1 and "cannot browse q.dlq" in result.errors[0]
    assert "guest" not in result.errors[0]
