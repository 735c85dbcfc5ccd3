"""Storage benchmark: bytes per stored event, every table, TOAST and index included.

Builds a fresh database, backfills simulated history straight into the store (the simulator
through `StoreSink`, as `controltower demo` does) with the scheduler's metrics refresh after every
simulated hour (incremental, as the leader runs it while events arrive) and a VACUUM after each
(what autovacuum does meanwhile), then retention as its hourly job would, VACUUM ANALYZEs, and
prints one row
per relation: rows, heap+TOAST bytes, index bytes, bytes per event (each index of it too, with
--indexes), then the total over every relation of the database's schema divided by the events
stored. Daily partitions of `events` are summed under `events`.

    python bench/storage.py                                   # embedded PostgreSQL in a temp folder
    python bench/storage.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/storage.py --days 3 --rate-scale 3 --ids real --indexes
    python bench/storage.py --keep                             # keep the database (its name is printed)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scratch  # noqa: E402
from controltower import migrate, retention  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from controltower.settings import Settings  # noqa: E402

# Every relation of the schema, partitions folded into their root, TOAST into its table and
# each index beside its table.
_RELATIONS = """
WITH rel AS (
    SELECT c.oid, c.relname, c.relkind, c.reltuples,
           COALESCE((SELECT r.relname FROM pg_class r WHERE r.oid = pg_partition_root(c.oid)), c.relname) AS root
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')
)
SELECT root, sum(greatest(reltuples, 0))::bigint AS rows, sum(pg_table_size(oid))::bigint AS heap,
       sum(pg_indexes_size(oid))::bigint AS indexes
FROM rel GROUP BY root ORDER BY sum(pg_total_relation_size(oid)) DESC
"""
_INDEXES = """
SELECT COALESCE((SELECT r.relname FROM pg_class r WHERE r.oid = pg_partition_root(t.oid)), t.relname) AS root,
       COALESCE((SELECT p.relname FROM pg_class p WHERE p.oid = (
           SELECT inhparent FROM pg_inherits WHERE inhrelid = i.oid)), i.relname) AS index,
       sum(pg_relation_size(i.oid))::bigint AS bytes
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND t.relkind = 'r'
GROUP BY 1, 2 ORDER BY 1, 3 DESC
"""


def backfill(engine: sa.Engine, settings: Settings, *, days: float, rate_scale: float, ids: str, seed: int,
             refresh_hours: float) -> dict:
    """The simulator straight into the store, with the scheduler's metrics refresh every
    `refresh_hours` of simulated time (incremental, as the scheduler's leader runs it while events
    arrive; at the wall's real now, since the rollups follow `received_at`), then retention."""
    from metrics import definitions, jobs
    from simulator.emit import StoreSink
    from simulator.run import Run

    defs = jobs.load_definitions(settings)
    definitions.publish(engine, defs)
    run = Run(seed=seed, rate_scale=rate_scale, ids=ids, backfill=days * 86400.0, lead=0.0)
    sink = StoreSink(engine, settings)
    step = refresh_hours * 3600.0
    steps = math.ceil((run.origin - run.start) / step)
    for i in tqdm(range(1, steps + 1), unit="step", desc=f"backfill, refresh every {refresh_hours:g} h"):
        run.advance(sink, min(run.origin, run.start + i * step))
        if i == 1:
            with engine.connect() as conn:  # statistics once there is data (autovacuum keeps them later)
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        jobs.refresh(engine, defs, datetime.now(UTC), settings)
        vacuum(engine)
    retention.apply(engine, settings, datetime.now(UTC))
    result = run.result()
    result["sinks"]["store"] = result["sinks"].pop("http")
    return result


def vacuum(engine: sa.Engine) -> None:
    """What autovacuum does between refreshes (deterministically, and also where a server runs
    with autovacuum off): dead rows of the refresh's delete-and-recompute become reusable space."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM")


def measure(engine: sa.Engine) -> tuple[int, list[sa.Row], list[sa.Row]]:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        events = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        return events, list(conn.execute(sa.text(_RELATIONS))), list(conn.execute(sa.text(_INDEXES)))


def report(events: int, relations: list[sa.Row], indexes: list[sa.Row], *, show_indexes: bool) -> None:
    per = max(events, 1)
    by_table: dict[str, list[sa.Row]] = {}
    for row in indexes:
        by_table.setdefault(row.root, []).append(row)
    print(f"\n{events:,} events stored\n")
    print(f"{'relation':<34}{'rows':>12}{'heap+toast':>14}{'indexes':>14}{'B/event':>10}")
    total = heap_total = index_total = 0
    for r in relations:
        size = r.heap + r.indexes
        total, heap_total, index_total = total + size, heap_total + r.heap, index_total + r.indexes
        if size / per < 2:
            continue  # empty and tiny tables: in the total, not worth a line
        print(f"{r.root:<34}{r.rows:>12,}{r.heap:>14,}{r.indexes:>14,}{size / per:>10.1f}")
        if show_indexes:
            for ix in by_table.get(r.root, []):
                print(f"  {ix.index:<44}{'':>16}{ix.bytes:>14,}{ix.bytes / per:>10.1f}")
    print(f"{'(other small tables)':<34}{'':>12}{'':>14}{'':>14}")
    print(f"{'total':<34}{'':>12}{heap_total:>14,}{index_total:>14,}{total / per:>10.1f}")
    print(f"\nbytes per event, all tables and indexes: {total / per:.0f} "
          f"(heap+TOAST {heap_total / per:.0f}, indexes {index_total / per:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--days", type=float, default=3.0, help="simulated history to backfill")
    parser.add_argument("--rate-scale", type=float, default=3.0, help="multiplier of the simulator's order volume")
    parser.add_argument("--ids", default="real", help="real (the demo's default) or shared")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--refresh-hours", type=float, default=1.0,
                        help="run the metrics refresh after every this many simulated hours")
    parser.add_argument("--indexes", action="store_true", help="a line per index too")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin, name, url = scratch.create(scratch.server_url(args.database_url), "ct_storage")
    engine = make_engine(url)
    settings = Settings.load({"database_url": url}, environ={})
    try:
        migrate.upgrade(engine)
        began = time.monotonic()
        truth = backfill(engine, settings, days=args.days, rate_scale=args.rate_scale, ids=args.ids, seed=args.seed,
                         refresh_hours=args.refresh_hours)
        sink = truth["sinks"]["store"]
        print(f"backfill: {args.days:g} days at {args.rate_scale:g}x, ids {args.ids}, metrics refresh every "
              f"{args.refresh_hours:g} simulated h: {sink['accepted']:,} accepted, {sink['duplicates']:,} duplicates, "
              f"{sink['rejected']:,} rejected; {time.monotonic() - began:.0f} s with refreshes and retention")
        report(*measure(engine), show_indexes=args.indexes)
        if args.keep:
            print(f"\nkept database {name}")
    finally:
        engine.dispose()
        if args.keep:
            admin.dispose()
        else:
            scratch.drop(admin, name)


if __name__ == "__main__":
    main()
