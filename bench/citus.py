"""Search on a Citus cluster against one plain PostgreSQL, with the same data.

Grows one database on each (the real-id shape of bench/ingest.py: four correlation ids and ten
events per business transaction, linked, with milestones and identity keys), then times, in
rounds that alternate between the two (the machine is shared: compare within one run, quote
the median round):

- search: `controltower.transactions.search` by a random identity key (order number, ERP
  document, shipment, tracking number), the call behind `GET /v1/transactions?q=`;
- view: `transactions.get` of the first hit, the call behind `GET /v1/transactions/{id}`;

and prints p50/p95 of each per round, the medians over rounds and the cluster/plain ratio. It
then shows the cluster's plan for the key lookup (one shard: `Task Count: 1`).

    python bench/citus.py --citus-url postgresql://postgres@127.0.0.1:9700/postgres \\
                          --plain-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/citus.py ... --events 1000000 --rounds 5 --samples 200
    python bench/citus.py ... --keep      # keep both databases (their names are printed)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import grow  # noqa: E402 (the same grown store as the ingest benchmark's search part)

from controltower import distribute, migrate, transactions  # noqa: E402
from controltower.db import make_engine, normalize_url  # noqa: E402

KINDS = ("order_id", "erp_document", "tracking_number", "shipment_id")


def prepare(admin_url: str, citus: bool, events: int, reuse: str | None) -> tuple[sa.Engine, str, list[str]]:
    name = reuse or f"ct_bench_citus_{uuid.uuid4().hex[:8]}"
    workers: list[str] = []
    if not reuse:
        if citus:
            workers = distribute.create_database(admin_url, name)
        else:
            with sa.create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    elif citus:
        workers = distribute.worker_urls(admin_url)
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=2)
    migrate.upgrade(engine)
    if citus:
        distribute.distribute(engine)
    t0 = time.perf_counter()
    grow(engine, events)
    print(f"{'cluster' if citus else 'plain'}: database {name} holds {events:,} events "
          f"(grown in {time.perf_counter() - t0:.0f} s)", flush=True)
    return engine, name, workers


def sample_keys(engine: sa.Engine, n: int, seed: int) -> list[str]:
    """`n` identity values of the grown shape, by construction (no sampling query on either side)."""
    with engine.connect() as conn:
        orders = conn.execute(sa.text("SELECT count(DISTINCT business_id) FROM transactions")).scalar() or 0
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        o, kind = rnd.randrange(orders), rnd.choice(KINDS)
        out.append({"order_id": f"SO-G-{o}", "erp_document": "45" + str(o).zfill(8),
                    "tracking_number": "1ZG" + str(o).zfill(13), "shipment_id": f"SHP-{o}"}[kind])
    return out


def one_round(engine: sa.Engine, keys: list[str]) -> tuple[list[float], list[float]]:
    search_ms, view_ms = [], []
    with engine.connect() as conn:
        for key in keys:
            t0 = time.perf_counter()
            hits = transactions.search(conn, key, limit=5)
            t1 = time.perf_counter()
            assert hits, key
            transactions.get(conn, hits[0]["correlation_id"])
            t2 = time.perf_counter()
            conn.rollback()  # each lookup its own transaction, as a request's
            search_ms.append((t1 - t0) * 1000)
            view_ms.append((t2 - t1) * 1000)
    return search_ms, view_ms


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q + 0.5) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--citus-url", required=True, help="a Citus coordinator (any database on it)")
    parser.add_argument("--plain-url", required=True, help="a plain PostgreSQL server (any database on it)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200, help="lookups per round and side")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--reuse-citus", help="an existing grown database on the cluster (kept)")
    parser.add_argument("--reuse-plain", help="an existing grown database on the plain server (kept)")
    args = parser.parse_args()

    sides = {}
    for label, url, citus, reuse in (("plain", args.plain_url, False, args.reuse_plain),
                                     ("cluster", args.citus_url, True, args.reuse_citus)):
        admin = normalize_url(url)
        engine, name, workers = prepare(admin, citus, args.events, reuse)
        sides[label] = (engine, admin, name, workers, bool(reuse))
    try:
        keys = sample_keys(sides["plain"][0], args.samples, seed=15)
        for label in sides:  # warm both (connections, caches, plans) before measuring
            one_round(sides[label][0], keys[:20])
        rows: dict[str, list[tuple[float, float, float, float]]] = {label: [] for label in sides}
        for r in range(args.rounds):
            keys = sample_keys(sides["plain"][0], args.samples, seed=r)
            for label in (("plain", "cluster") if r % 2 == 0 else ("cluster", "plain")):
                s, v = one_round(sides[label][0], keys)
                rows[label].append((p(s, 0.5), p(s, 0.95), p(v, 0.5), p(v, 0.95)))
                print(f"round {r + 1} {label:7}: search p50 {rows[label][-1][0]:6.2f} ms  p95 {rows[label][-1][1]:6.2f} ms"
                      f"   view p50 {rows[label][-1][2]:6.2f} ms  p95 {rows[label][-1][3]:6.2f} ms", flush=True)
        med = {label: [statistics.median(x[i] for x in rows[label]) for i in range(4)] for label in rows}
        print(f"\nmedian of {args.rounds} rounds, {args.samples} lookups each, {args.events:,} events:")
        for label in ("plain", "cluster"):
            m = med[label]
            print(f"  {label:7}  search p50 {m[0]:6.2f} ms  p95 {m[1]:6.2f} ms   view p50 {m[2]:6.2f} ms  p95 {m[3]:6.2f} ms")
        c, pl = med["cluster"], med["plain"]
        print(f"  cluster/plain: search p95 {c[1] / pl[1]:.2f}x   view p95 {c[3] / pl[3]:.2f}x")
        with sides["cluster"][0].connect() as conn:
            plan = conn.execute(sa.text("EXPLAIN " + str(transactions._KEY_HITS)), {"q": keys[0]}).scalars().all()
        print("\nthe key lookup on the cluster (transaction_keys by value):\n  " + "\n  ".join(plan))
    finally:
        for engine, admin, name, workers, reused in sides.values():
            engine.dispose()
            if args.keep or reused:
                print(f"kept database {name}")
            elif workers:
                distribute.drop_database(admin, workers, name)
            else:
                with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
