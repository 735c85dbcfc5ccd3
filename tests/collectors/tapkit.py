"""Test helpers for the broker taps: unique RabbitMQ queues and JetStream streams, cleaned up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pika
import sqlalchemy as sa

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def event(i: int, prefix: str = "tap", **extra: Any) -> dict[str, Any]:
    return {"occurred_at": datetime.now(UTC).isoformat(), "correlation_id": f"{prefix}-{i}", "channel": "amazon",
            "flow": "order", "stage": "received", "system": "middleware", **extra}


class Rabbit:
    """One connection with publisher confirms; every queue declared through it is deleted at close."""

    def __init__(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.queues: list[str] = []

    def queue(self, name: str | None = None) -> str:
        name = name or unique("ct-test")
        self.ch.queue_declare(name, durable=True)
        self.queues += [name, name + ".quarantine"]
        return name

    def publish(self, queue: str, body: bytes | dict[str, Any], **props: Any) -> None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        self.ch.basic_publish("", queue, data, pika.BasicProperties(delivery_mode=2, **props))

    def depth(self, queue: str) -> int:
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        method, props, body = self.ch.basic_get(queue, auto_ack=True)
        return None if method is None else (props, body)

    def close(self) -> None:
        for q in self.queues:
            try:
                self.ch.queue_delete(q)
            except pika.exceptions.ChannelClosedByBroker:
                self.ch = self.conn.channel()
        self.conn.close()


def nats_run(coro: Any) -> Any:
    return asyncio.run(coro)


def count_events(engine: sa.Engine, source: str) -> tuple[int, int]:
    """(rows, distinct event ids) stored from `source`."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT count(*), count(DISTINCT (correlation_id, event_id)) FROM events "
                                   "WHERE source = :s"), {"s": source}).one()
    return int(row[0]), int(row[1])


def tap_process(config: Path, database_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONTROLTOWER_DATABASE_URL": database_url}
    return subprocess.Popen([sys.executable, "-m", "wiring", "tap", "--config", str(config), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_for(predicate: Any, timeout: float = 30.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def iter_lines(text: str) -> Iterator[str]:
    return iter(text.splitlines())
