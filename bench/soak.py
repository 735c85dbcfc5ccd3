"""Soak: the whole stack under sustained load for a bounded time, on loopback.

Starts a collector (`serve --workers 2`) and a scheduler (rollups, SLA table, alert evaluation
every 10 s) as real processes on a fresh database, then for --minutes:
  - sender threads post the simulator's events (several times its peak volume) in batches,
    honouring 429/503 + Retry-After, recording each request's latency;
  - a reader thread runs the dashboard's and support's queries (`/v1/sla`, search,
    `/v1/alerts`) every 2 s;
  - every 15 s the resident memory of each process and the database size are sampled.
At the end it prints sustained ingest, p50/p95/p99 request latency, memory over time (growth
from the first to the last third), database size, and checks that every distinct event sent
was stored exactly once (count by event id).

With `--hostile 0.05` every batch also carries 5 % hostile records (`bench/hostile.py`: deep
nesting, 140,000-digit amounts, out-of-range deadlines, fan-out, personal data, markup,
extreme numbers, confusable ids, NUL) and re-sends of already stored ids with changed content.
It then also checks that no good record was rejected, every must-reject record was, no request
answered 5xx for its content, no changed duplicate rewrote a stored event, and alert evaluation
kept succeeding.

    python bench/soak.py --database-url postgresql://postgres@127.0.0.1:5432/postgres --minutes 10
    python bench/soak.py --database-url postgresql://postgres@127.0.0.1:5432/postgres --minutes 5 --hostile 0.05
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import hostile, scratch  # noqa: E402
from controltower import alertops, migrate  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from simulator.faults import FaultPlan  # noqa: E402
from simulator.model import Simulation  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(proc: psutil.Process) -> float:
    try:
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    except psutil.Error:
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=3000.0, help="target events/s offered")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--hostile", type=float, default=0.0, help="share of hostile records mixed into each batch")
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("--database-url is required (the soak creates and drops its own database there)")
    admin, name, url = scratch.create(args.database_url, "ct_soak")
    try:
        soak(args, name, url)
    finally:  # the scratch database goes, whatever happened
        scratch.drop(admin, name)


def soak(args: argparse.Namespace, name: str, url: str) -> None:
    engine = make_engine(url, pool_size=2)
    migrate.upgrade(engine)
    port = free_port()
    env = dict(os.environ, CONTROLTOWER_EVALUATION_INTERVAL="10s", CONTROLTOWER_PORT=str(port), PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "wiring", "--database-url", url]
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / name
    logs.mkdir(parents=True, exist_ok=True)
    collector = subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", "2"], env=env,
                                 stdout=(logs / "collector.log").open("w"), stderr=subprocess.STDOUT)
    scheduler = subprocess.Popen([*cli, "scheduler"], env=env, stdout=(logs / "scheduler.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    stop = threading.Event()
    latencies: list[float] = []
    sent_ids: set[tuple[str, str]] = set()
    counts = {"requests": 0, "retries": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "server_errors": 0,
              "good_rejected": 0, "hostile_sent": 0, "hostile_stored_wrongly": 0, "changed_duplicates": 0}
    good_stored: dict[tuple[str, str], str] = {}  # id -> stage as first stored
    rewrites: list[tuple[str, str]] = []
    errors_seen: list[str] = []
    lock = threading.Lock()
    now = time.time()
    sim = Simulation(seed=11, start=now - 3 * 86400, faults=FaultPlan(), rate_scale=200.0)
    queue: list[list[dict]] = []
    qlock = threading.Condition()

    def produce() -> None:
        per_tick = args.rate / 10
        clock, pending = sim.start, []
        while not stop.is_set():
            t0 = time.monotonic()
            while len(pending) < per_tick:
                clock = min(clock + 60, now - 60)
                pending += [e.record for e in sim.take_before(clock) if not e.malformed]
                if clock >= now - 60:
                    break
            take, pending = pending[: int(per_tick)], pending[int(per_tick):]
            with qlock:
                for i in range(0, len(take), args.batch):
                    queue.append(take[i:i + args.batch])
                qlock.notify_all()
            stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

    def mix(batch: list[dict], rng: random.Random) -> tuple[list[dict], list[str]]:
        """The batch with hostile records and changed re-sends of stored ids added; each record's role."""
        roles = ["good"] * len(batch)
        if not args.hostile:
            return batch, roles
        extra, extra_roles = [], []
        for record in rng.sample(batch, max(1, int(len(batch) * args.hostile))):
            kind = rng.choice(list(hostile.KINDS))
            bad, must_reject = hostile.poison(record, kind, rng)
            extra.append(bad)
            extra_roles.append("reject" if must_reject else "hostile")
        with lock:
            stored = list(good_stored.items())[-2000:]
        for (cid, eid), stage in rng.sample(stored, min(len(stored), max(1, int(len(batch) * args.hostile / 4)))):
            original = {"correlation_id": cid, "event_id": eid, "stage": stage}
            template = next((r for r in batch), None)
            if template is None:
                break
            changed = hostile.changed_duplicate({**template, **original, "occurred_at": template["occurred_at"]})
            extra.append(changed)
            extra_roles.append("changed")
        return batch + extra, roles + extra_roles

    def send(seed: int) -> None:
        client = httpx.Client(timeout=30)
        rng = random.Random(seed)
        while not stop.is_set():
            with qlock:
                while not queue and not stop.is_set():
                    qlock.wait(0.5)
                if stop.is_set():
                    return
                batch = queue.pop(0)
            batch, roles = mix(batch, rng)
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    response = client.post(base + "/v1/events", content=hostile.encode(batch),
                                           headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    time.sleep(1)
                    continue
                if response.status_code in (429, 503) and "retry later" in response.text:
                    with lock:
                        counts["retries"] += 1
                    time.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                if response.status_code >= 500 or response.status_code not in (200, 400):
                    with lock:
                        counts["server_errors"] += 1
                        errors_seen.append(f"{response.status_code}: {response.text[:200]}")
                    break
                body = response.json()
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    counts["requests"] += 1
                    for key in ("accepted", "duplicates"):
                        counts[key] += body[key]
                    counts["rejected"] += len(body["rejected"])
                    bad = {r["index"] for r in body["rejected"]}
                    for i, (r, role) in enumerate(zip(batch, roles, strict=True)):
                        key = (r["correlation_id"], r["event_id"])
                        if role == "changed":
                            counts["changed_duplicates"] += 1
                            rewrites.append(key)
                            continue
                        if role != "good":
                            counts["hostile_sent"] += 1
                        if role == "reject" and i not in bad:
                            counts["hostile_stored_wrongly"] += 1
                        if i in bad:
                            if role == "good":
                                counts["good_rejected"] += 1
                                errors_seen.append(f"good record rejected: {body['rejected'][0]}")
                            continue
                        sent_ids.add(key)
                        if role == "good":
                            good_stored.setdefault(key, r["stage"])
                break

    reads: list[float] = []

    def read() -> None:
        client = httpx.Client(timeout=30)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                client.get(base + "/v1/sla", params={"window": "1h"})
                client.get(base + "/v1/sla", params={"window": "24h"})
                client.get(base + "/v1/transactions", params={"q": "SKU-100"})
                client.get(base + "/v1/alerts")
                reads.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                pass
            stop.wait(2)

    threads = [threading.Thread(target=produce, daemon=True), threading.Thread(target=read, daemon=True)]
    threads += [threading.Thread(target=send, args=(i,), daemon=True) for i in range(args.senders)]
    for t in threads:
        t.start()
    started = time.monotonic()
    samples = []
    procs = {"collector": psutil.Process(collector.pid), "scheduler": psutil.Process(scheduler.pid)}
    try:
        while time.monotonic() - started < args.minutes * 60:
            with engine.connect() as conn:
                size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one() / 2**20
            with lock:
                accepted = counts["accepted"]
            samples.append((time.monotonic() - started, {k: rss_mb(p) for k, p in procs.items()}, size, accepted))
            print(f"  {samples[-1][0]:5.0f} s  accepted {accepted:>9,}  "
                  + "  ".join(f"{k} {v:6.0f} MB" for k, v in samples[-1][1].items()) + f"  db {size:,.0f} MB", flush=True)
            time.sleep(15)
    finally:
        stop.set()
        with qlock:
            qlock.notify_all()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - started
        time.sleep(12)  # one more scheduler tick
        for proc in (collector, scheduler):
            proc.terminate()
            proc.wait(timeout=30)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        distinct = conn.execute(sa.text("SELECT count(DISTINCT (correlation_id, event_id)) FROM events")).scalar_one()
        sla_rows = conn.execute(sa.text("SELECT count(*) FROM sla_status")).scalar_one()
        rewritten = 0
        for cid, eid in set(rewrites):
            stages = conn.execute(sa.text("SELECT stage FROM events WHERE correlation_id = :c AND event_id = :e"),
                                  {"c": cid, "e": eid}).scalars().all()
            if len(stages) != 1 or stages[0] != good_stored.get((cid, eid), stages[0]):
                rewritten += 1
    health = alertops.evaluation_health(engine, datetime.now(UTC))
    lat = sorted(latencies)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    third = max(1, len(samples) // 3)
    print(f"\nsoak {elapsed / 60:.1f} min, {args.senders} senders, batches of {args.batch}, offered {args.rate:,.0f} events/s")
    print(f"sustained ingest: {counts['accepted'] / elapsed:,.0f} events/s ({counts['accepted']:,} accepted, "
          f"{counts['duplicates']:,} duplicates, {counts['rejected']:,} rejected, {counts['retries']:,} 429/503 retries)")
    print(f"request latency: p50 {q(0.5):.0f} ms  p95 {q(0.95):.0f} ms  p99 {q(0.99):.0f} ms over {len(lat):,} requests")
    if reads:
        print(f"reader cycle (2 SLA tables + search + alerts): p50 {statistics.median(reads) * 1000:.0f} ms  max {max(reads) * 1000:.0f} ms")
    for name in procs:
        first = statistics.mean(s[1][name] for s in samples[:third])
        last = statistics.mean(s[1][name] for s in samples[-third:])
        print(f"memory {name}: first third {first:,.0f} MB, last third {last:,.0f} MB ({(last - first) / first:+.0%})")
    print(f"database size: {samples[-1][2]:,.0f} MB; sla_status rows: {sla_rows}")
    exact = stored == distinct == len(sent_ids)
    print(f"stored exactly once: {'yes' if exact else 'NO'} (sent {len(sent_ids):,} distinct, stored {stored:,}, distinct stored {distinct:,})")
    engine.dispose()
    if args.hostile:
        print(f"hostile: {counts['hostile_sent']:,} hostile records and {counts['changed_duplicates']:,} changed re-sends "
              f"mixed in ({args.hostile:.0%}); good records rejected: {counts['good_rejected']}; must-reject records "
              f"stored: {counts['hostile_stored_wrongly']}; 5xx/unexpected answers: {counts['server_errors']}; "
              f"stored events rewritten by a changed re-send: {rewritten}")
        print(f"alert evaluation: last success {health['last_success_at']}, stale: {health['stale']}, "
              f"failing rules: {[r['rule'] for r in health['failing_rules']] or 'none'}, "
              f"amounts ignored: {health['ignored_amounts_total']} (soak ended {datetime.now(UTC):%H:%M:%S})")
        for line in errors_seen[:5]:
            print("  " + line)
    print(f"process logs in {logs}; finished {datetime.now(UTC):%H:%M:%S}")


if __name__ == "__main__":
    main()
