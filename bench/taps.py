"""Tap benchmark: events/s into the store through a RabbitMQ tap vs POST /v1/events, same run.

The same events (bench/ingest.py's shape) go into two fresh databases: once as one RabbitMQ
message each, consumed by a tap (`controltower tap --once`'s runner, one consumer, batches of
--batch, acknowledged after each commit), once POSTed to a real collector in batches of --batch
by --clients clients. Publishing to RabbitMQ is not timed (it is the producer's work); the tap's
time runs from its start until the queue is drained. Prints both rates and their ratio (the
machines are shared: compare ratios).

    python bench/taps.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/taps.py --events 50000 --batch 500 --clients 1 --workers 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pika
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import make_events, post_all, start_collector  # noqa: E402

from collectors.store import EventStore  # noqa: E402
from collectors.taps.config import loads_taps  # noqa: E402
from collectors.taps.runner import TapRunner  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine, normalize_url  # noqa: E402
from controltower.masking import Masker  # noqa: E402
from controltower.settings import Settings  # noqa: E402


def publish(url: str, queue: str, events: list[dict]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for e in events:
        ch.basic_publish("", queue, orjson.dumps(e), pika.BasicProperties(delivery_mode=2, message_id=e["event_id"]))
    conn.close()


def drop_queues(url: str, *queues: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"), required=False)
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("--database-url (or CONTROLTOWER_DATABASE_URL) is required")
    admin_url = normalize_url(args.database_url)
    name = f"ct_bench_taps_{uuid.uuid4().hex[:8]}"
    dbs = {"http": f"{name}_http", "tap": f"{name}_tap"}
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for db in dbs.values():
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))

    def url_of(db: str) -> str:
        return sa.engine.make_url(admin_url).set(database=db).render_as_string(hide_password=False)

    engines = {k: make_engine(url_of(db)) for k, db in dbs.items()}
    queue = f"ct-bench-{uuid.uuid4().hex[:8]}"
    proc = None
    try:
        for engine in engines.values():
            migrate.upgrade(engine)
        events = make_events(args.events, "B", datetime.now(UTC))
        print(f"{len(events):,} events, batches of {args.batch}; HTTP: {args.clients} client(s), "
              f"{args.workers} collector worker(s); tap: one RabbitMQ consumer, one message per event", flush=True)

        publish(args.rabbitmq_url, queue, events)
        settings = Settings.load({"database_url": url_of(dbs["tap"])}, environ={})
        masker = Masker()
        tap = loads_taps(f"taps:\n  - {{name: bench, broker: rabbitmq, url_env: BENCH_RABBITMQ_URL, queue: {queue}, "
                         f"batch: {args.batch}, batch_wait: 200ms}}\n").taps[0]
        runner = TapRunner(tap, EventStore(engines["tap"], settings, masker), engines["tap"], masker,
                           environ={"BENCH_RABBITMQ_URL": args.rabbitmq_url})
        started = time.perf_counter()
        stats = runner.drain(once=True)
        tap_elapsed = time.perf_counter() - started - tap.batch_wait_seconds  # the final empty wait is not work
        assert stats.stored == len(events), stats.summary()
        tap_rate = len(events) / tap_elapsed

        proc, base = start_collector(url_of(dbs["http"]), args.workers)
        bodies = [orjson.dumps(events[i:i + args.batch]) for i in range(0, len(events), args.batch)]
        http_elapsed, _ = post_all(base + "/v1/events", bodies, args.clients, "application/json")
        http_rate = len(events) / http_elapsed
        with engines["http"].connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == len(events)

        print(f"RabbitMQ tap -> store:   {tap_rate:>10,.0f} events/s  ({tap_elapsed:.1f} s)")
        print(f"POST /v1/events -> store:{http_rate:>10,.0f} events/s  ({http_elapsed:.1f} s)")
        print(f"tap / HTTP: {tap_rate / http_rate:.2f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        drop_queues(args.rabbitmq_url, queue, queue + ".quarantine")
        for engine in engines.values():
            engine.dispose()
        with admin.connect() as conn:
            for db in dbs.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
