"""Ingest benchmark: HTTP events and OTLP traces through a real collector vs raw COPY.

Prints events/s for
  1. raw binary COPY of the same rows into the same (partitioned, indexed) `events` table,
  2. POST /v1/events, batches of --batch, --clients concurrent clients on loopback,
  3. POST /v1/traces, OTLP protobuf, same batch size and clients,
and the ratios, all measured in one run (these machines are shared: compare ratios). Then
search latency (lookup by order id: key resolution + the transaction's events) at the size of
the database, optionally grown to --search-events with set-based SQL first.

    python bench/ingest.py                       # embedded PostgreSQL in a temp folder
    python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/ingest.py --events 300000 --search-events 10000000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controltower import migrate, transactions  # noqa: E402
from controltower.db import make_engine, normalize_url  # noqa: E402

CHANNELS = ["amazon", "shopify", "ebay", "walmart", "pos"]
STAGES = [("order", "received"), ("order", "acknowledged"), ("order", "erp_posted"),
          ("fulfilment", "released"), ("fulfilment", "shipped"), ("shipment", "shipment_confirmed")]


def make_events(n: int, prefix: str, now: datetime) -> list[dict]:
    rnd = random.Random(7)
    out = []
    order = 0
    while len(out) < n:
        order += 1
        cid = f"{prefix}-{order}"
        channel = CHANNELS[order % len(CHANNELS)]
        start = now - timedelta(minutes=rnd.uniform(10, 1400))
        for i, (flow, stage) in enumerate(STAGES):
            attrs = {"external_order_id": f"{prefix}-EXT-{order}", "sku": f"SKU-{order % 5000}",
                     "location": f"DC-{order % 3}"}
            if stage == "shipped":
                attrs["tracking_number"] = f"1Z{prefix}{order:010d}"
            out.append({
                "event_id": f"{cid}-{i}", "occurred_at": (start + timedelta(minutes=i * 7)).isoformat(),
                "correlation_id": cid, "order_id": f"SO-{prefix}-{order}", "channel": channel,
                "flow": flow, "stage": stage, "status": "ok", "system": "middleware",
                "latency_ms": rnd.uniform(5, 900), "attributes": attrs,
            })
    return out[:n]


def raw_copy(engine: sa.Engine, events: list[dict]) -> float:
    from psycopg.types.json import set_json_dumps

    from collectors.store import (  # ingest's own row shape
        _COPY_TYPES,
        COPY_COLUMNS,
        EventStore,
        _dumps,
        _row,
    )
    from controltower.event import parse_event
    from controltower.settings import Settings

    now = datetime.now(UTC)
    parsed = [parse_event(e, now=now) for e in events]
    EventStore(engine, Settings.load(environ={})).ensure_partitions({p.occurred_at.astimezone(UTC).date() for p in parsed})
    rows = [_row(p, now, "bench") for p in parsed]
    started = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        set_json_dumps(_dumps, context=raw)
        with raw.cursor() as cur, cur.copy(f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)
    return len(rows) / (time.perf_counter() - started)


def post_all(url: str, bodies: list[bytes], clients: int, content_type: str) -> tuple[float, list[float]]:
    queue = list(enumerate(bodies))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop()
                for _attempt in range(20):
                    t0 = time.perf_counter()
                    r = client.post(url, content=body, headers={"content-type": content_type})
                    if r.status_code in (429, 503):
                        time.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    break
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return elapsed, latencies


def otlp_bodies(events: list[dict], batch: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def kv(k: str, v: str) -> KeyValue:
        return KeyValue(key=k, value=AnyValue(string_value=v))

    out = []
    for start in range(0, len(events), batch):
        spans = []
        for e in events[start:start + batch]:
            end = int(datetime.fromisoformat(e["occurred_at"]).timestamp() * 1e9)
            attrs = [kv("retail.correlation_id", e["correlation_id"]), kv("retail.order_id", e["order_id"]),
                     kv("retail.channel", e["channel"]), kv("retail.flow", e["flow"]), kv("retail.stage", e["stage"])]
            attrs += [kv(f"retail.{k}", str(v)) for k, v in e["attributes"].items()]
            spans.append(Span(trace_id=uuid.uuid4().bytes, span_id=os.urandom(8), name=f"{e['flow']}.{e['stage']}",
                              start_time_unix_nano=end - 50_000_000, end_time_unix_nano=end, attributes=attrs))
        req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=[kv("service.name", "middleware")]),
            scope_spans=[ScopeSpans(spans=spans)])])
        out.append(req.SerializeToString())
    return out


def start_collector(url: str, workers: int) -> tuple[subprocess.Popen, str]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, CONTROLTOWER_DATABASE_URL=url, CONTROLTOWER_LOG_LEVEL="warning")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wiring", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("collector did not become ready")


GROW_SQL = """
INSERT INTO events (occurred_at, correlation_id, event_id, received_at, order_id, channel, flow, stage,
                    status, system, latency_ms, attributes, source)
SELECT :t0 + (g / 6) * interval '50 ms' + (g % 6) * interval '7 minutes', 'G-' || (g / 6), 'e' || (g % 6), now(),
       'SO-G-' || (g / 6), (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + (g / 6) % 5],
       (ARRAY['order','order','order','fulfilment','fulfilment','shipment'])[1 + g % 6],
       (ARRAY['received','acknowledged','erp_posted','released','shipped','shipment_confirmed'])[1 + g % 6],
       'ok', 'middleware', 100, jsonb_build_object('external_order_id', 'EXT-G-' || (g / 6)), 'bench'
FROM generate_series(:lo, :hi - 1) AS g
"""
GROW_TX = """
INSERT INTO transactions (correlation_id, channel, flow, order_id, first_event_at, first_event_id, last_event_at,
    last_event_id, status, last_milestone, event_count, error_count, retry_count, dead_letter_count, updated_at,
    business_id)
SELECT 'G-' || o, (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + o % 5], 'order', 'SO-G-' || o,
       :t0 + o * interval '300 ms', 'e0', :t0 + o * interval '300 ms' + interval '35 minutes', 'e5', 'ok',
       'shipment.shipment_confirmed', 6, 0, 0, 0, now(), 'G-' || o
FROM generate_series(:lo, :hi - 1) AS o
"""
GROW_KEYS = """
INSERT INTO transaction_keys (value, kind, correlation_id, first_seen_at)
SELECT v, k, 'G-' || o, now() FROM generate_series(:lo, :hi - 1) AS o,
     LATERAL (VALUES ('SO-G-' || o, 'order_id'), ('EXT-G-' || o, 'external_order_id')) AS x(v, k)
"""


def grow(engine: sa.Engine, total_events: int) -> None:
    with engine.connect() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM events")).scalar() or 0
    missing = total_events - have
    if missing <= 0:
        return
    orders = missing // 6
    t0 = datetime.now(UTC) - timedelta(days=25)
    step = 6 * 200_000
    print(f"growing the store by {orders * 6:,} events / {orders:,} transactions (set-based SQL) …", flush=True)
    days = {(t0 + timedelta(seconds=i * 0.05 * 6 / 6)).date() for i in range(0, orders * 6, 10_000)}
    migrate.ensure_partitions(engine, {d + timedelta(days=k) for d in days for k in range(-1, 2)})
    for lo in range(0, orders * 6, step):
        hi = min(lo + step, orders * 6)
        with engine.begin() as conn:
            conn.execute(sa.text(GROW_SQL), {"t0": t0, "lo": lo, "hi": hi})
            conn.execute(sa.text(GROW_TX), {"t0": t0, "lo": lo // 6, "hi": hi // 6})
            conn.execute(sa.text(GROW_KEYS), {"lo": lo // 6, "hi": hi // 6})
        print(f"  {hi:,} / {orders * 6:,}", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE events"))
        conn.execute(sa.text("VACUUM ANALYZE transactions"))
        conn.execute(sa.text("VACUUM ANALYZE transaction_keys"))


def search_latency(engine: sa.Engine, samples: int) -> tuple[float, float, int]:
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM events")).scalar() or 0
        keys = conn.execute(sa.text(
            "SELECT value FROM transaction_keys WHERE kind = 'order_id' ORDER BY random() LIMIT :n"), {"n": samples}
        ).scalars().all()
        times = []
        for key in keys:
            t0 = time.perf_counter()
            hits = transactions.search(conn, key, limit=5)
            transactions.get(conn, hits[0]["correlation_id"])
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--search-events", type=int, default=0, help="grow the store to this many events before the search test")
    parser.add_argument("--search-samples", type=int, default=300)
    args = parser.parse_args()

    if args.database_url:
        admin_url = normalize_url(args.database_url)
    else:
        import pgserver

        admin_url = normalize_url(pgserver.get_server(Path(tempfile.mkdtemp()) / "pgdata", cleanup_mode="delete").get_uri())
    name = f"ct_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}_raw"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    raw_url = sa.engine.make_url(admin_url).set(database=name + "_raw").render_as_string(hide_password=False)
    engine, raw_engine = make_engine(url), make_engine(raw_url)
    proc = None
    try:
        migrate.upgrade(engine)
        migrate.upgrade(raw_engine)
        now = datetime.now(UTC)
        api_events = make_events(args.events, "A", now)
        otlp_events = make_events(args.events, "T", now)
        print(f"{args.events:,} events per run, batches of {args.batch}, {args.clients} clients, "
              f"{args.workers} collector workers", flush=True)

        copy_rate = raw_copy(raw_engine, make_events(args.events, "R", now))
        print(f"raw binary COPY into events:      {copy_rate:>10,.0f} events/s", flush=True)

        proc, base = start_collector(url, args.workers)
        bodies = [orjson.dumps(api_events[i:i + args.batch]) for i in range(0, len(api_events), args.batch)]
        elapsed, lat = post_all(base + "/v1/events", bodies, args.clients, "application/json")
        api_rate = len(api_events) / elapsed
        lat.sort()
        print(f"POST /v1/events (JSON):           {api_rate:>10,.0f} events/s   "
              f"ratio to COPY {api_rate / copy_rate:.2f}   batch p50 {statistics.median(lat) * 1000:.0f} ms "
              f"p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.0f} ms", flush=True)

        tbodies = otlp_bodies(otlp_events, args.batch)
        elapsed, lat = post_all(base + "/v1/traces", tbodies, args.clients, "application/x-protobuf")
        otlp_rate = len(otlp_events) / elapsed
        print(f"POST /v1/traces (OTLP protobuf):  {otlp_rate:>10,.0f} spans/s    "
              f"ratio to COPY {otlp_rate / copy_rate:.2f}", flush=True)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
            txs = conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar()
        print(f"stored: {stored:,} events, {txs:,} transactions (expected {2 * args.events:,} events)")
        proc.terminate()
        proc.wait(timeout=30)
        proc = None

        if args.search_events:
            grow(engine, args.search_events)
        p50, p95, total = search_latency(engine, args.search_samples)
        print(f"search by order id at {total:,} events: p50 {p50:.2f} ms  p95 {p95:.2f} ms "
              f"({args.search_samples} lookups: key → transaction → its events)")
    finally:
        if proc is not None:
            proc.kill()
        engine.dispose()
        raw_engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}_raw" WITH (FORCE)'))


if __name__ == "__main__":
    main()
