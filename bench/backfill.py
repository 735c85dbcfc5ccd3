"""Backfill benchmark: the simulator straight into the store (as `controltower demo` backfills)
against raw binary COPY of the same rows into the same table, in one run.

Generates `--hours` of simulated history once (the simulator's `Run`, as the demo builds it),
then, each into a fresh migrated database:
  1. the backfill: `simulator.emit.StoreSink` (EventStore.ingest: validation, masking,
     idempotency, transactions, milestones, keys, linking), timed over every batch,
  2. raw binary COPY of the same events (parsed beforehand, only the COPY timed) into `events`,
and prints events/s of both and the ratio. Repeats `--repeat` times and prints the median.

    python bench/backfill.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/backfill.py --hours 12 --rate-scale 3 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scratch  # noqa: E402
from bench.ingest import CpuMeter, cpu_line, raw_copy  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from controltower.settings import Settings  # noqa: E402
from simulator.emit import StoreSink, Totals  # noqa: E402
from simulator.run import Run  # noqa: E402


class _Capture:
    """A sink that keeps the simulator's records (so both runs write exactly the same rows)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.totals = Totals()

    def send(self, events: Any) -> None:
        self.records.extend(e.record for e in events)

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--hours", type=float, default=6.0, help="simulated history")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--ids", default="shared", help="the simulator's id mode (shared, real, ...)")
    parser.add_argument("--batch", type=int, default=5000, help="StoreSink batch size (the demo's: 5000)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    admin_url = scratch.server_url(args.database_url)

    now = datetime.now(UTC)
    capture = _Capture()
    Run(seed=7, rate_scale=args.rate_scale, ids=args.ids, backfill=args.hours * 3600, now=now).backfill(capture)
    records = capture.records
    print(f"{len(records):,} simulated events ({args.hours:g} h, rate scale {args.rate_scale:g}, ids {args.ids}), "
          f"StoreSink batches of {args.batch}", flush=True)

    ratios, store_rates, copy_rates = [], [], []
    for round_ in range(args.repeat):
        made = [scratch.create(admin_url, f"ct_backfill_{kind}") for kind in ("store", "copy")]
        dbs = [name for _, name, _ in made]
        urls = [url for _, _, url in made]
        engines = [make_engine(u) for u in urls]
        meter = CpuMeter([admin_url], set(dbs))
        try:
            for engine in engines:
                migrate.upgrade(engine)
            settings = Settings.load(environ={"CONTROLTOWER_DATABASE_URL": urls[0]})
            sink = StoreSink(engines[0], settings, batch_size=args.batch)
            sink.store.ensure_partitions({datetime.fromisoformat(r["occurred_at"]).astimezone(UTC).date()
                                          for r in records})
            meter.start(os.getpid())
            started = time.perf_counter()
            sink.send([_Sim(r) for r in records])
            elapsed = time.perf_counter() - started
            used = meter.stop()
            if sink.totals.rejected:
                print(f"  {sink.totals.rejected} rejected, e.g. {sink.totals.rejections[:1]}")
            store_rate = len(records) / elapsed
            copy_rate = raw_copy(engines[1], records)
            store_rates.append(store_rate)
            copy_rates.append(copy_rate)
            ratios.append(store_rate / copy_rate)
            print(f"round {round_ + 1}: backfill {store_rate:>9,.0f} events/s   raw COPY {copy_rate:>9,.0f} events/s"
                  f"   ratio {store_rate / copy_rate:.2f}   accepted {sink.totals.accepted:,}", flush=True)
            print(f"    backfill {cpu_line(used, len(records))} (python = this process)", flush=True)
        finally:
            meter.close()
            for engine in engines:
                engine.dispose()
            for admin, name, _ in made:
                scratch.drop(admin, name)
    print(f"median over {args.repeat}: backfill {statistics.median(store_rates):,.0f} events/s, raw COPY "
          f"{statistics.median(copy_rates):,.0f} events/s, ratio {statistics.median(ratios):.2f}")


class _Sim:
    """What StoreSink reads of a simulator event: its canonical record."""

    __slots__ = ("record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record


if __name__ == "__main__":
    main()
