"""Merge cost of the identity graph: a late link joining a small business transaction to a big
one rewrites the small side only, so its time must not grow with the big side.

For each size N it builds a business transaction of N correlation ids (a chain: member i shares
an ERP document with member i+1, so no value is a hub), a separate one of two members, then
ingests the one event that links them (it carries an order number of each), and prints how long
that batch took and how many rows moved, next to a control batch of the same shape that links
nothing. All in one run against one database, in-process (no HTTP), median of --repeat.

    python bench/linking.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.store import EventStore  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine, normalize_url  # noqa: E402
from controltower.settings import Settings  # noqa: E402


def ev(cid: str, i: int, at: datetime, **attributes) -> dict:
    order = attributes.pop("order_id", None)
    record = {"event_id": f"{cid}-{i}", "occurred_at": at.isoformat(), "correlation_id": cid, "channel": "amazon",
              "flow": "order", "stage": "erp_posted", "attributes": attributes}
    if order:
        record["order_id"] = order
    return record


def build(store: EventStore, tag: str, size: int, at: datetime) -> None:
    """A chain of `size` correlation ids: member i holds documents D-i and D-(i+1)."""
    events = [ev(f"{tag}-{i}", 0, at, erp_document=[f"{tag}-D{i}", f"{tag}-D{i + 1}"]) for i in range(size)]
    events[0]["order_id"] = f"{tag}-ORDER"
    for i in range(0, len(events), 1000):
        store.ingest(events[i:i + 1000], source="bench", now=at + timedelta(minutes=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.database_url:
        admin_url = normalize_url(args.database_url)
    else:
        import pgserver

        admin_url = normalize_url(pgserver.get_server(Path(tempfile.mkdtemp()) / "pgdata", cleanup_mode="delete").get_uri())
    name = f"ct_bench_link_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        settings = Settings.load({"database_url": str(engine.url)}, environ={})
        store = EventStore(engine, settings)
        at = datetime.now(UTC) - timedelta(hours=1)
        print(f"{'big side':>9} {'merge batch':>12} {'control batch':>14} {'rows moved':>11}")
        for run, size in enumerate(int(s) for s in args.sizes.split(",")):
            merges, controls, moved = [], [], []
            for r in range(args.repeat):
                big, small = f"B{run}x{r}", f"S{run}x{r}"
                build(store, big, size, at)
                build(store, small, 2, at)
                # control: the same shape of batch, linking nothing
                t0 = time.perf_counter()
                store.ingest([ev(f"K{run}x{r}", 0, at, order_id=f"K{run}x{r}-A", erp_document=f"K{run}x{r}-B")],
                             source="bench", now=at + timedelta(minutes=1))
                controls.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                result = store.ingest([ev(f"L{run}x{r}", 0, at, order_id=f"{big}-ORDER", erp_document=f"{small}-D0")],
                                      source="bench", now=at + timedelta(minutes=1))
                merges.append(time.perf_counter() - t0)
                moved.append(result.link.moved)
            print(f"{size:>9,} {statistics.median(merges) * 1000:>9.2f} ms {statistics.median(controls) * 1000:>11.2f} ms"
                  f" {statistics.median(moved):>11.0f}", flush=True)
        with engine.connect() as conn:
            businesses = conn.execute(sa.text("SELECT count(DISTINCT business_id) FROM transactions")).scalar()
        print(f"({businesses:,} business transactions in the database at the end)")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
