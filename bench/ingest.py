"""Ingest benchmark: HTTP events and OTLP traces through a real collector vs raw COPY.

Prints events/s for
  1. raw binary COPY of the same rows into the same (partitioned, indexed) `events` table,
  2. POST /v1/events, batches of --batch, --clients concurrent clients on loopback, once per
     --modes, each into its own database: today's ingest (one correlation id per order, linking
     off), the same with linking on, and real ids (every system its own correlation ids, joined
     into business transactions by the identity graph on ingest),
  3. POST /v1/traces, OTLP protobuf, same batch size and clients,
and the ratios, all measured in one run (these machines are shared: compare ratios). Then
search latency (lookup by any identity key, then the whole business transaction) at the size
of the last mode's database, optionally grown to --search-events (real-id shape) first.

    python bench/ingest.py                       # embedded PostgreSQL in a temp folder
    python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/ingest.py --events 300000 --search-events 10000000
    python bench/ingest.py --modes today-real,real --no-otlp    # the linking cost alone

On a Citus coordinator (--database-url), each database is created on every node (--node-url),
distributed by `controltower.distribute` (--shards), and --compare-url runs every ingest phase
again on a plain PostgreSQL right after, printing the ratio:

    python bench/ingest.py --database-url postgresql://postgres@127.0.0.1:9700/postgres \
        --node-url postgresql://postgres@127.0.0.1:9701/postgres --node-url postgresql://postgres@127.0.0.1:9702/postgres \
        --compare-url postgresql://postgres@127.0.0.1:5432/postgres --modes today --clients 4,16 --no-otlp --shards 8
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
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controltower import distribute as citus_layout  # noqa: E402
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


def make_real_id_events(n: int, prefix: str, now: datetime, *, channels: bool = False) -> list[dict]:
    """Each system under its own correlation id, knowing only its keys (the identity graph
    joins them): the connector (order number), the ERP (order number, ERP document), the
    warehouse (ERP document, shipment, tracking) and the carrier (tracking only, no channel).
    Sorted by time, so an order's events reach the collector in different batches and every
    link after the first is a merge of transactions already stored. `channels`: every event
    names its channel, as today's ingest demands (for the linking-off baseline)."""
    rnd = random.Random(7)
    out = []
    order = 0
    while len(out) < n:
        order += 1
        channel = CHANNELS[order % len(CHANNELS)]
        start = now - timedelta(minutes=rnd.uniform(10, 1400))
        number, doc = f"{prefix}-112-{order:07d}", f"45{order:08d}"
        shipment, tracking = f"SHP-{prefix}{order}", f"1Z{prefix}{order:014d}"
        steps = [
            ("CON", "order", "received", channel, {"order_id": number}, {"sku": f"SKU-{order % 5000}"}),
            ("CON", "order", "acknowledged", channel, {"order_id": number}, {}),
            ("ERP", "order", "erp_posted", channel, {"order_id": number}, {"erp_document": doc}),
            ("WMS", "fulfilment", "released", None, {}, {"erp_document": doc}),
            ("WMS", "fulfilment", "shipped", None, {}, {"erp_document": doc, "shipment_id": shipment,
                                                       "tracking_number": tracking}),
            ("UPS", "shipment", "scanned", None, {}, {"tracking_number": tracking}),
            ("CNF", "shipment", "shipment_confirmed", channel, {"order_id": number}, {"tracking_number": tracking}),
        ]
        for i, (system, flow, stage, ch, top, attrs) in enumerate(steps):
            record = {
                "event_id": f"{system}-{order}-{i}", "occurred_at": (start + timedelta(minutes=i * 7)).isoformat(),
                "correlation_id": f"{prefix}-{system}-{order}", "flow": flow, "stage": stage, "status": "ok",
                "system": system.lower(), "latency_ms": rnd.uniform(5, 900), "attributes": attrs, **top,
            }
            if ch or channels:
                record["channel"] = ch or channel
            out.append(record)
    out = out[:n]
    out.sort(key=lambda e: e["occurred_at"])
    return out


# -- CPU accounting --------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+sys seconds) of a process, from /proc (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()  # after "(comm)": state ppid ... utime stime
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(root: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _proc_cpu(int(entry))
            if got is not None:
                parents.setdefault(got[0], []).append(int(entry))
    out, todo = {root}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class CpuMeter:
    """User+sys CPU seconds of the collector's processes (the server process and its workers)
    and of the PostgreSQL processes serving the databases under test, sampled from /proc.

    PostgreSQL: the backends (and autovacuum workers) whose `datname` is one of `databases`, on
    every server in `pg_urls` (a Citus cluster: the coordinator and the workers), plus the
    server-wide background processes (walwriter, checkpointer, background writer), reported
    apart because other users of a shared server feed them too. A poller thread remembers the
    last value seen per pid, so a process that exits mid-phase keeps what it had used. Works when
    the servers run on this machine (loopback); otherwise PostgreSQL reads 0 and says so."""

    AUX = ("walwriter", "checkpointer", "background writer")

    def __init__(self, pg_urls: list[str], databases: set[str], interval: float = 0.2) -> None:
        self.engines = [sa.create_engine(u, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool) for u in pg_urls]
        self.conns = [e.connect() for e in self.engines]
        self.databases = sorted(databases)
        self.interval = interval
        self.collector_pid: int | None = None
        self.seen: dict[tuple[str, int], float] = {}  # (group, pid) -> last cpu seconds
        self.base: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.local = all(sa.engine.make_url(u).host in (None, "", "127.0.0.1", "localhost") for u in pg_urls)

    def _pg_pids(self) -> list[tuple[str, int]]:
        out = []
        for conn in self.conns:
            rows = conn.execute(sa.text(
                "SELECT pid, CASE WHEN datname = ANY(:dbs) THEN 'pg' ELSE 'pgaux' END FROM pg_stat_activity "
                "WHERE (datname = ANY(:dbs) AND pid <> pg_backend_pid()) OR backend_type = ANY(:aux)"),
                {"dbs": self.databases, "aux": list(self.AUX)}).all()
            out += [(group, pid) for pid, group in rows]
        return out

    def _sample(self) -> None:
        groups = self._pg_pids()
        if self.collector_pid is not None:
            groups += [("py", pid) for pid in _descendants(self.collector_pid)]
        for key in groups:
            got = _proc_cpu(key[1])
            if got is not None:
                with self._lock:
                    if key not in self.seen and key not in self.base:
                        self.base[key] = 0.0 if self._thread is not None else got[1]
                    self.seen[key] = got[1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self, collector_pid: int | None) -> None:
        """Begin a phase: what each process has used so far is its baseline."""
        self.collector_pid = collector_pid
        self.seen, self.base, self._thread = {}, {}, None
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """End a phase: CPU seconds used since start, by group (py, pg, pgaux)."""
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        used = {"py": 0.0, "pg": 0.0, "pgaux": 0.0}
        for key, value in self.seen.items():
            used[key[0]] += value - self.base.get(key, 0.0)
        return used

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for engine in self.engines:
            engine.dispose()


def cpu_line(used: dict[str, float], events: int) -> str:
    per = {k: v * 1e6 / events for k, v in used.items()}  # ms CPU per 1,000 events
    total = per["py"] + per["pg"] + per["pgaux"]
    return (f"CPU ms/1k events: python {per['py']:5.1f}  postgres {per['pg']:5.1f} (+ background {per['pgaux']:4.1f})"
            f"  total {total:5.1f}")


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


def start_collector(url: str, workers: int, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, CONTROLTOWER_DATABASE_URL=url, CONTROLTOWER_LOG_LEVEL="warning", **(extra_env or {}))
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


# A grown store in the real-id shape: per business transaction four correlation ids (connector
# C-, ERP E-, warehouse W-, carrier U- without channel) and ten events, linked as ingest links
# them (business_id = the connector's id), with their milestones and identity keys.
MEMBER = "(ARRAY['C','C','E','E','W','W','W','U','U','C'])[1 + g % 10] || '-' || (g / 10)"
GROW_SQL = f"""
INSERT INTO events (occurred_at, correlation_id, event_id, received_at, order_id, channel, flow, stage,
                    status, system, latency_ms, attributes, source)
SELECT :t0 + (g / 10) * interval '30 ms' + (g % 10) * interval '7 minutes', {MEMBER}, 'e' || (g % 10), now(),
       CASE WHEN g % 10 IN (0, 1, 2, 3, 9) THEN 'SO-G-' || (g / 10) END,
       CASE WHEN g % 10 NOT IN (7, 8) THEN (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + (g / 10) % 5] END,
       (ARRAY['order','order','order','order','fulfilment','fulfilment','fulfilment','shipment','shipment','shipment'])[1 + g % 10],
       (ARRAY['received','acknowledged','erp_posted','invoiced','released','picked','shipped','scanned','delivered',
              'shipment_confirmed'])[1 + g % 10],
       'ok', (ARRAY['connector','connector','erp','erp','wms','wms','wms','carrier','carrier','connector'])[1 + g % 10],
       100,
       CASE WHEN g % 10 IN (2, 3, 4, 5) THEN jsonb_build_object('erp_document', '45' || lpad((g / 10)::text, 8, '0'))
            WHEN g % 10 = 6 THEN jsonb_build_object('erp_document', '45' || lpad((g / 10)::text, 8, '0'),
                                                   'shipment_id', 'SHP-' || (g / 10), 'tracking_number', '1ZG' || lpad((g / 10)::text, 13, '0'))
            WHEN g % 10 IN (7, 8, 9) THEN jsonb_build_object('tracking_number', '1ZG' || lpad((g / 10)::text, 13, '0'))
            ELSE jsonb_build_object('external_order_id', 'EXT-G-' || (g / 10)) END,
       'bench'
FROM generate_series(:lo, :hi - 1) AS g
"""
GROW_MILESTONES = f"""
INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)
SELECT {MEMBER},
       (ARRAY['order.received','order.acknowledged','order.erp_posted','order.invoiced','fulfilment.released',
              'fulfilment.picked','fulfilment.shipped','shipment.scanned','shipment.delivered',
              'shipment.shipment_confirmed'])[1 + g % 10],
       :t0 + (g / 10) * interval '30 ms' + (g % 10) * interval '7 minutes',
       CASE WHEN g % 10 NOT IN (7, 8) THEN (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + (g / 10) % 5] END,
       now()
FROM generate_series(:lo, :hi - 1) AS g
"""
GROW_TX = """
INSERT INTO transactions (correlation_id, channel, flow, order_id, first_event_at, first_event_id, last_event_at,
    last_event_id, status, last_milestone, last_system, event_count, error_count, retry_count, dead_letter_count,
    updated_at, business_id)
SELECT m.p || '-' || o,
       CASE WHEN m.p <> 'U' THEN (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + o % 5] END,
       m.flow, CASE WHEN m.p IN ('C', 'E') THEN 'SO-G-' || o END,
       :t0 + o * interval '30 ms' + m.first * interval '7 minutes', 'e' || m.first,
       :t0 + o * interval '30 ms' + m.last * interval '7 minutes', 'e' || m.last, 'ok', m.milestone, m.sys,
       m.n, 0, 0, 0, now(), 'C-' || o
FROM generate_series(:lo, :hi - 1) AS o,
     (VALUES ('C', 'order', 0, 9, 'shipment.shipment_confirmed', 'connector', 3),
             ('E', 'order', 2, 3, 'order.invoiced', 'erp', 2),
             ('W', 'fulfilment', 4, 6, 'fulfilment.shipped', 'wms', 3),
             ('U', 'shipment', 7, 8, 'shipment.delivered', 'carrier', 2)) AS m(p, flow, first, last, milestone, sys, n)
"""
GROW_KEYS = """
INSERT INTO transaction_keys (value, kind, correlation_id, first_seen_at)
SELECT x.v, x.k, x.c, now() FROM generate_series(:lo, :hi - 1) AS o,
     LATERAL (VALUES ('SO-G-' || o, 'order_id', 'C-' || o), ('EXT-G-' || o, 'external_order_id', 'C-' || o),
                     ('SO-G-' || o, 'order_id', 'E-' || o),
                     ('45' || lpad(o::text, 8, '0'), 'erp_document', 'E-' || o),
                     ('45' || lpad(o::text, 8, '0'), 'erp_document', 'W-' || o),
                     ('SHP-' || o, 'shipment_id', 'W-' || o),
                     ('1ZG' || lpad(o::text, 13, '0'), 'tracking_number', 'W-' || o),
                     ('1ZG' || lpad(o::text, 13, '0'), 'tracking_number', 'U-' || o),
                     ('1ZG' || lpad(o::text, 13, '0'), 'tracking_number', 'C-' || o)) AS x(v, k, c)
"""


def grow(engine: sa.Engine, total_events: int) -> None:
    with engine.connect() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM events")).scalar() or 0
    missing = total_events - have
    if missing <= 0:
        return
    orders = missing // 10
    t0 = datetime.now(UTC) - timedelta(days=25)
    step = 10 * 100_000
    print(f"growing the store by {orders * 10:,} events / {orders * 4:,} correlation ids / {orders:,} business "
          "transactions (set-based SQL) …", flush=True)
    span_days = int(orders * 0.03 / 86400) + 2
    migrate.ensure_partitions(engine, {(t0 + timedelta(days=k)).date() for k in range(-1, span_days + 1)})
    with tqdm(total=orders * 10, unit="event", unit_scale=True) as bar:
        for lo in range(0, orders * 10, step):
            hi = min(lo + step, orders * 10)
            with engine.begin() as conn:
                conn.execute(sa.text(GROW_SQL), {"t0": t0, "lo": lo, "hi": hi})
                conn.execute(sa.text(GROW_MILESTONES), {"t0": t0, "lo": lo, "hi": hi})
                conn.execute(sa.text(GROW_TX), {"t0": t0, "lo": lo // 10, "hi": hi // 10})
                conn.execute(sa.text(GROW_KEYS), {"lo": lo // 10, "hi": hi // 10})
            bar.update(hi - lo)
    with engine.begin() as conn:
        if citus_layout.has_members(conn):  # a cluster's member lists, as ingest would have kept them
            conn.execute(sa.text(citus_layout.MEMBERS_FILL))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("events", "transactions", "transaction_keys", "transaction_milestones"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def search_latency(engine: sa.Engine, samples: int) -> tuple[float, float, int, int, int]:
    """Search by a random identity key of a random kind, then the whole business transaction."""
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM events")).scalar() or 0
        n_tx, n_bt = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT business_id) FROM transactions")).one()
        keys = conn.execute(sa.text(
            "SELECT value FROM transaction_keys TABLESAMPLE SYSTEM (1) "
            "WHERE kind IN ('order_id', 'erp_document', 'tracking_number', 'shipment_id') LIMIT :n"), {"n": samples}
        ).scalars().all()
        times = []
        for key in keys:
            t0 = time.perf_counter()
            hits = transactions.search(conn, key, limit=5)
            transactions.get(conn, hits[0]["correlation_id"])
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], total, n_tx, n_bt


def _real_with_channels(n: int, prefix: str, now: datetime) -> list[dict]:
    return make_real_id_events(n, prefix, now, channels=True)


OFF = {"CONTROLTOWER_IDENTITY_KEYS": ""}
# name: (label, events, collector environment, the mode it is compared with)
MODES = {
    # what ingest did before the identity graph: one correlation id per order, nothing to link
    "today": ("shared ids, linking off", make_events, OFF, None),
    "shared": ("shared ids, linking on", make_events, {}, "today"),
    # the same real-id events as today's ingest takes them (every event names its channel)
    "today-real": ("real ids, linking off", _real_with_channels, OFF, None),
    "real": ("real ids, linking on", make_real_id_events, {}, "today-real"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", default="4", help="concurrent clients; a list (4,16) runs each in turn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="today,shared,today-real,real",
                        help="ingest runs side by side, each into its own database: today (shared ids, linking "
                             "off), shared (shared ids, linking on), today-real (each system its own ids, every "
                             "event with its channel, linking off), real (each system its own ids, linking on)")
    parser.add_argument("--otlp", action=argparse.BooleanOptionalAction, default=True, help="also POST /v1/traces")
    parser.add_argument("--search-events", type=int, default=0, help="grow the store to this many events before the search test")
    parser.add_argument("--search-samples", type=int, default=300)
    parser.add_argument("--node-url", action="append", default=[],
                        help="another PostgreSQL server whose processes serve the database (a Citus worker); "
                             "counted in the CPU figures")
    parser.add_argument("--shards", type=int, default=citus_layout.SHARD_COUNT, help="Citus: shards per distributed table")
    parser.add_argument("--compare-url", help="a plain PostgreSQL server: every ingest phase runs there too, right after")
    parser.add_argument("--db-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="ALTER DATABASE … SET for the ingest databases (e.g. citus.max_adaptive_executor_pool_size=1)")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=True, help="measure search latency")
    parser.add_argument("--index-usage", action="store_true",
                        help="print pg_stat_user_indexes (idx_scan) of the last ingest database")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")
    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]

    if args.database_url:
        admin_url = normalize_url(args.database_url)
    else:
        import pgserver

        admin_url = normalize_url(pgserver.get_server(Path(tempfile.mkdtemp()) / "pgdata", cleanup_mode="delete").get_uri())
    name = f"ct_bench_{uuid.uuid4().hex[:8]}"
    phases = [(m, c) for m in modes for c in client_counts]
    names = [f"{name}_raw", *(f"{name}_{m}_{c}" for m, c in phases)]
    compare_url = normalize_url(args.compare_url) if args.compare_url else None
    plain_names = [f"{name}_plain_{m}_{c}" for m, c in phases] if compare_url else []
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        citus = bool(conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first())
        for db in names:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    plain_admin = sa.create_engine(compare_url, isolation_level="AUTOCOMMIT") if compare_url else None
    if plain_admin is not None:
        with plain_admin.connect() as conn:
            for db in plain_names:
                conn.execute(sa.text(f'CREATE DATABASE "{db}"'))

    def url_of(db: str, base: str = admin_url) -> str:
        return sa.engine.make_url(base).set(database=db).render_as_string(hide_password=False)

    engines = {db: make_engine(url_of(db)) for db in names}
    engines |= {db: make_engine(url_of(db, compare_url)) for db in plain_names if compare_url}
    meter = CpuMeter([admin_url, *(normalize_url(u) for u in args.node_url), *([compare_url] if compare_url else [])],
                     set(names) | set(plain_names))
    proc = None
    try:
        for db, engine in engines.items():
            on_citus = citus and db in names
            if on_citus:
                distribute(admin_url, [normalize_url(u) for u in args.node_url], db)
            migrate.upgrade(engine)
            if on_citus:
                citus_layout.distribute(engine, shard_count=args.shards)
            if args.db_setting and db != f"{name}_raw":
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for setting in args.db_setting:
                        key, _, value = setting.partition("=")
                        if on_citus or not key.startswith("citus."):
                            conn.execute(sa.text(f'ALTER DATABASE "{db}" SET {key} = {value}'))
        now = datetime.now(UTC)
        print(f"{args.events:,} events per run, batches of {args.batch}, clients {client_counts}, "
              f"{args.workers} collector workers{f' (Citus, {args.shards} shards)' if citus else ''}"
              f"{'' if meter.local else '; PostgreSQL is not local: its CPU is not measured'}", flush=True)

        meter.start(None)
        copy_rate = raw_copy(engines[f"{name}_raw"], make_events(args.events, "R", now))
        used = meter.stop()
        print(f"raw binary COPY into events:          {copy_rate:>10,.0f} events/s   {cpu_line(used, args.events)}",
              flush=True)
        rates: dict[tuple[str, int], float] = {}
        last = None
        for mode, clients in phases:
            label, make, env, baseline = MODES[mode]
            db = f"{name}_{mode}_{clients}"
            events = make(args.events, mode[-1].upper(), now)
            bodies = [orjson.dumps(events[i:i + args.batch]) for i in range(0, len(events), args.batch)]
            if compare_url:
                # the same phase on one plain PostgreSQL, right before (the machine's load drifts)
                plain = f"{name}_plain_{mode}_{clients}"
                proc, base = start_collector(url_of(plain, compare_url), args.workers, env)
                meter.start(proc.pid)
                elapsed, lat = post_all(base + "/v1/events", bodies, clients, "application/json")
                used = meter.stop()
                plain_rate = len(events) / elapsed
                print(f"POST /v1/events, {label:<24} {clients:>2} clients {plain_rate:>10,.0f} events/s   on plain "
                      f"PostgreSQL ({compare_url.split('@')[-1]})", flush=True)
                print(f"    {cpu_line(used, len(events))}", flush=True)
                proc.terminate()
                proc.wait(timeout=30)
                proc = None
            proc, base = start_collector(url_of(db), args.workers, env)
            meter.start(proc.pid)
            elapsed, lat = post_all(base + "/v1/events", bodies, clients, "application/json")
            used = meter.stop()
            rate = rates[mode, clients] = len(events) / elapsed
            lat.sort()
            vs = f"   vs {baseline} {rate / rates[baseline, clients]:.2f}" if (baseline, clients) in rates else ""
            vs += f"   vs plain PostgreSQL {rate / plain_rate:.2f}" if compare_url else ""
            print(f"POST /v1/events, {label:<24} {clients:>2} clients {rate:>10,.0f} events/s   ratio to COPY "
                  f"{rate / copy_rate:.2f}{vs}   batch p50 {statistics.median(lat) * 1000:.0f} ms "
                  f"p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.0f} ms", flush=True)
            print(f"    {cpu_line(used, len(events))}", flush=True)
            if args.otlp and mode == modes[0]:
                tbodies = otlp_bodies(make_events(args.events, "T", now), args.batch)
                meter.start(proc.pid)
                elapsed, lat = post_all(base + "/v1/traces", tbodies, clients, "application/x-protobuf")
                used = meter.stop()
                otlp_rate = args.events / elapsed
                print(f"POST /v1/traces (OTLP protobuf),          {clients:>2} clients {otlp_rate:>10,.0f} spans/s    "
                      f"ratio to COPY {otlp_rate / copy_rate:.2f}", flush=True)
                print(f"    {cpu_line(used, args.events)}", flush=True)
            with engines[db].connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM events")).scalar()
                txs, businesses = conn.execute(sa.text(
                    "SELECT count(*), count(DISTINCT business_id) FROM transactions")).one()
            print(f"  stored {stored:,} events, {txs:,} correlation ids in {businesses:,} business transactions")
            proc.terminate()
            proc.wait(timeout=30)
            proc = None
            last = db

        if last is not None and args.search:
            engine = engines[last]
            if args.index_usage:
                print_index_usage(engine)
            if args.search_events:
                grow(engine, args.search_events)
            p50, p95, total, n_tx, n_bt = search_latency(engine, args.search_samples)
            print(f"search by any key + the business transaction view at {total:,} events, {n_tx:,} correlation ids, "
                  f"{n_bt:,} business transactions: p50 {p50:.2f} ms  p95 {p95:.2f} ms ({args.search_samples} lookups)")
    finally:
        if proc is not None:
            proc.kill()
        meter.close()
        for engine in engines.values():
            engine.dispose()
        with admin.connect() as conn:
            for db in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        if plain_admin is not None:
            with plain_admin.connect() as conn:
                for db in plain_names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        for u in args.node_url:
            node = sa.create_engine(normalize_url(u), isolation_level="AUTOCOMMIT")
            with node.connect() as conn:
                for db in names:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            node.dispose()


def print_index_usage(engine: sa.Engine) -> None:
    """pg_stat_user_indexes after ingest: which indexes the write path probes (idx_scan), per
    index summed over partitions."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT coalesce(pi.parent, s.indexrelname) AS index, min(s.relname) AS table, sum(s.idx_scan) AS scans,
                   sum(pg_relation_size(s.indexrelid)) AS bytes
            FROM pg_stat_user_indexes s
            LEFT JOIN LATERAL (SELECT p.relname AS parent FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                               WHERE i.inhrelid = s.indexrelid) pi ON true
            GROUP BY 1 ORDER BY 2, 1""")).all()
    print("pg_stat_user_indexes after ingest (index, table, idx_scan, size):")
    for index, table, scans, size in rows:
        print(f"  {index:<48} {table:<28} {int(scans or 0):>10,} {float(size) / 1e6:8.1f} MB")


def distribute(admin_url: str, node_urls: list[str], db: str) -> None:
    """A fresh database on a Citus cluster: the database and the extension on every node, the
    workers known to the coordinator (the node URLs' hosts and ports)."""
    for url in node_urls:
        node = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with node.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        node.dispose()
        with sa.create_engine(sa.engine.make_url(url).set(database=db)).begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
    coord_url = sa.engine.make_url(admin_url).set(database=db)
    coord = sa.create_engine(coord_url, isolation_level="AUTOCOMMIT")
    with coord.connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
        conn.execute(sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                     {"h": coord_url.host or "127.0.0.1", "p": coord_url.port or 5432})
        for url in node_urls:
            u = sa.engine.make_url(url)
            conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": u.host, "p": u.port or 5432})
    coord.dispose()


if __name__ == "__main__":
    main()
