"""SLA benchmark: the full SLA table from rollups vs the naive query over raw events.

Generates --transactions orders (about 10 events each: 1 M transactions ≈ 10 M events) with
set-based SQL straight into `events`, `transaction_milestones` and `transactions` (the shape
ingest writes; each its own business transaction),
builds the rollups once (timed: what the scheduler's job costs from scratch), then times in
the same run:
  1. the full `/v1/sla` table (every SLA × channel) for a 1 h and a 24 h window, from rollups,
  2. the open-breach listing (unposted orders),
  3. the naive equivalent over raw events (self-join of the window's events per SLA),
  4. an incremental refresh after 1,000 new orders (what each scheduler tick costs), after
     late links merged 1,000 pairs of counted orders, and with nothing new (each should cost
     the same at any --transactions: proportional to what changed),
and prints the figures and ratios.

    python bench/sla.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/sla.py --transactions 1000000
    python bench/sla.py --citus --database-url postgresql://postgres@127.0.0.1:9700/postgres

--citus: the URL names a Citus coordinator; the benchmark database is created on it and on every
worker it knows (with the extension and the nodes), migrated and distributed
(`controltower migrate --distributed`) before the data is generated.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scratch  # noqa: E402
from controltower import calendars, distribute, migrate  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from metrics import compute, definitions, rollups  # noqa: E402

STAGES = [  # (flow, stage, minutes after received, share of orders that reach it)
    ("order", "received", 0, 1.0), ("order", "validated", 0.2, 1.0), ("order", "acknowledged", 1, 0.999),
    ("order", "erp_posted", 4, 0.995), ("fulfilment", "released", 30, 0.99), ("fulfilment", "picked", 200, 0.98),
    ("fulfilment", "shipped", 400, 0.97), ("shipment", "shipment_confirmed", 420, 0.96),
    ("shipment", "delivered", 2900, 0.9), ("inventory", "published", 0, 0.3),
]


def generate(engine: sa.Engine, n: int, now: datetime, days: int) -> None:
    span_s = days * 86400
    with engine.begin() as conn:
        migrate.ensure_partitions(engine, {(now - timedelta(days=d)).date() for d in range(days + 4)} | {now.date()})
    with engine.begin() as conn:
        for i, (flow, stage, after_min, share) in enumerate(STAGES):
            t0 = time.perf_counter()
            conn.execute(
                sa.text("""
                    INSERT INTO events (occurred_at, correlation_id, event_id, received_at, order_id, channel, flow, stage,
                                        status, system, latency_ms, attributes, source)
                    SELECT o.at, o.cid, o.cid || ':' || :i, o.at, 'SO-' || g, o.channel, :flow, :stage,
                           CASE WHEN g % 97 = 0 THEN 'error' ELSE 'ok' END, 'middleware', 12,
                           jsonb_build_object('external_order_id', 'EXT-' || g, 'sku', 'SKU-' || (g % 5000),
                                              'location', 'loc-' || (g % 7)),
                           'bench'
                    FROM generate_series(1, :n) g,
                    LATERAL (SELECT 'B-' || g AS cid,
                                    (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + g % 5] AS channel,
                                    CAST(:now AS timestamptz) - make_interval(secs => (g::float8 * :span / :n))
                                      + make_interval(secs => :after * 60 * (0.5 + (hashint4(g * 31 + :i) & 1023) / 1023.0)) AS at) o
                    WHERE (hashint4(g * 7 + :i) & 1023) / 1023.0 < :share AND o.at < :now
                """),
                {"i": i, "flow": flow, "stage": stage, "n": n, "now": now, "span": span_s, "after": after_min, "share": share},
            )
            print(f"  {flow}.{stage}: {time.perf_counter() - t0:.1f} s", flush=True)
        conn.execute(sa.text("""
            INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)
            SELECT correlation_id, flow || '.' || stage, min(occurred_at), min(channel), :now
            FROM events WHERE status = 'ok' GROUP BY 1, 2
        """), {"now": now - timedelta(minutes=5)})
        # one row per correlation id, each its own business transaction (ingest's shape)
        conn.execute(sa.text("""
            INSERT INTO transactions (correlation_id, channel, flow, order_id, first_event_at, first_event_id,
                                      last_event_at, last_event_id, status, last_milestone, event_count, error_count,
                                      retry_count, dead_letter_count, updated_at, business_id)
            SELECT correlation_id, min(channel), 'order', min(order_id), min(occurred_at), min(event_id),
                   max(occurred_at), max(event_id), 'ok', 'order.received', count(*), 0, 0, 0, :now, correlation_id
            FROM events GROUP BY correlation_id
        """), {"now": now - timedelta(minutes=5)})
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))


NAIVE = sa.text("""
    SELECT a.channel, count(*) AS n,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM b.t - a.t)) AS p,
           count(*) FILTER (WHERE b.t - a.t <= make_interval(secs => :target / 1000.0)) AS met
    FROM (SELECT correlation_id, channel, min(occurred_at) AS t FROM events
          WHERE flow = :af AND stage = :ast AND status = 'ok' AND occurred_at >= :start - interval '7 days' AND occurred_at < :end
          GROUP BY 1, 2) a
    JOIN (SELECT correlation_id, min(occurred_at) AS t FROM events
          WHERE flow = :bf AND stage = :bst AND status = 'ok' AND occurred_at >= :start AND occurred_at < :end
          GROUP BY 1) b USING (correlation_id)
    GROUP BY a.channel
""")

NAIVE_OPEN = sa.text("""
    SELECT a.channel, count(*), min(a.t)
    FROM (SELECT correlation_id, channel, min(occurred_at) AS t FROM events
          WHERE flow = :af AND stage = :ast AND occurred_at >= :end - interval '30 days' AND occurred_at < :end - make_interval(secs => :target / 1000.0)
          GROUP BY 1, 2) a
    WHERE NOT EXISTS (SELECT 1 FROM events b WHERE b.correlation_id = a.correlation_id AND b.flow = :bf AND b.stage = :bst)
    GROUP BY a.channel
""")


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


def whole_days(defs: definitions.Definitions, mode: str) -> definitions.Definitions:
    """The shipped definitions, or with every latency SLA's targets in whole days (and a calendar)."""
    if mode == "off":
        return defs
    choice = calendars.Choice(calendars={c.name: c for c in defs.calendars}, default="us-warehouse")

    def days(ms: int | None) -> int | None:
        return None if ms is None else -(-ms // calendars.DAY_MS) * calendars.DAY_MS

    slas = tuple(
        dataclasses.replace(s, target_ms=days(s.target_ms), targets_ms={k: days(v) for k, v in s.targets_ms.items()},
                            calendar=choice if mode == "calendar" else None)
        if s.kind == "milestone_latency" and s.target_ms else s
        for s in defs.slas
    )
    return dataclasses.replace(defs, slas=slas)


def citus_nodes(admin: sa.Engine, name: str) -> list[str]:
    """Make the new database `name` a Citus one: created on every worker the coordinator knows,
    the extension everywhere, the nodes registered. Returns the workers' admin URLs."""
    with admin.connect() as conn:
        nodes = conn.execute(sa.text(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0")).all()
    workers = [admin.url.set(host=h, port=p).render_as_string(hide_password=False) for h, p in nodes]
    for worker in workers:
        engine = make_engine(worker)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    for url in [*workers, admin.url.render_as_string(hide_password=False)]:
        engine = make_engine(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citus"))
            if url not in workers:
                conn.execute(sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                             {"h": admin.url.host or "localhost", "p": admin.url.port or 5432})
                for h, p in nodes:
                    conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": h, "p": p})
        engine.dispose()
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--citus", action="store_true", help="the URL is a Citus coordinator: distribute the database")
    parser.add_argument("--whole-days", choices=["off", "plain", "calendar"], default="off",
                        help="plain: every latency SLA's targets rounded up to whole days; calendar: the same "
                             "counted in business days of the shipped us-warehouse calendar (the cost of calendars)")
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("--database-url (or CONTROLTOWER_DATABASE_URL) is required: the benchmark creates its own database there")
    admin, name, url = scratch.create(args.database_url, "ct_bench_sla")
    workers = citus_nodes(admin, name) if args.citus else []
    engine = make_engine(url, pool_size=2)
    try:
        migrate.upgrade(engine)
        if args.citus:
            print(f"distributed: {distribute.distribute(engine)}", flush=True)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        defs = whole_days(definitions.load(), args.whole_days)
        print(f"generating {args.transactions:,} transactions over {args.days} days …", flush=True)
        t0 = time.perf_counter()
        generate(engine, args.transactions, now, args.days)
        with engine.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
            milestones = conn.execute(sa.text("SELECT count(*) FROM transaction_milestones")).scalar_one()
        print(f"{events:,} events, {milestones:,} milestones in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        rollups.rebuild(engine, defs, now)
        print(f"rollups built from scratch:            {time.perf_counter() - t0:8.1f} s")

        def table(window: timedelta) -> None:
            with engine.connect() as conn:
                compute.sla_table(conn, defs, window=window, now=now)

        def breaches() -> None:
            with engine.connect() as conn:
                compute.open_breaches(conn, sla="erp_posting", now=now, limit=500)

        erp = defs.get("erp_posting")
        assert erp is not None

        def naive(window: timedelta) -> None:
            with engine.connect() as conn:
                for sla in defs.latency:
                    af, ast = sla.from_milestone.split(".")
                    bf, bst = sla.to_milestone.split(".")
                    conn.execute(NAIVE, {"af": af, "ast": ast, "bf": bf, "bst": bst, "start": now - window, "end": now,
                                         "target": sla.target_ms or 0}).all()

        def naive_open() -> None:
            with engine.connect() as conn:
                conn.execute(NAIVE_OPEN, {"af": "order", "ast": "received", "bf": "order", "bst": "erp_posted",
                                          "end": now, "target": erp.target_ms}).all()

        results = {}
        for label, window in (("1h", timedelta(hours=1)), ("24h", timedelta(hours=24))):
            results[label] = timed(lambda w=window: table(w), args.repeat)
            naive_ms = timed(lambda w=window: naive(w), 1)[0]
            print(f"SLA table {label:>3} from rollups:        p50 {results[label][0]:7.1f} ms  max {results[label][1]:7.1f} ms")
            print(f"SLA table {label:>3} naive over events:   {naive_ms:11.1f} ms   (latency SLAs only) ratio {naive_ms / results[label][0]:,.0f}x")
        listing = timed(breaches, args.repeat)
        naive_listing = timed(naive_open, 1)[0]
        print(f"open-breach listing (erp_posting):    p50 {listing[0]:7.1f} ms  max {listing[1]:7.1f} ms")
        print(f"open breaches naive over events:      {naive_listing:11.1f} ms   ratio {naive_listing / listing[0]:,.0f}x")

        # one scheduler tick after 1,000 new orders arrived
        later = now + timedelta(minutes=1)
        with engine.begin() as conn:
            conn.execute(sa.text("""
                INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)
                SELECT 'N-' || g, m, CAST(:now AS timestamptz) - interval '20 minutes' + (CASE m WHEN 'order.received' THEN 0 ELSE 3 END) * interval '1 minute',
                       (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + g % 5], :now
                FROM generate_series(1, 1000) g, unnest(ARRAY['order.received', 'order.acknowledged', 'order.erp_posted']) m
            """), {"now": later})
            conn.execute(sa.text("""
                INSERT INTO transactions (correlation_id, channel, flow, first_event_at, first_event_id, last_event_at,
                                          last_event_id, status, last_milestone, event_count, error_count, retry_count,
                                          dead_letter_count, updated_at, business_id)
                SELECT 'N-' || g, (ARRAY['amazon','shopify','ebay','walmart','pos'])[1 + g % 5], 'order',
                       CAST(:now AS timestamptz) - interval '20 minutes', 'e', :now, 'e', 'ok', 'order.erp_posted', 3, 0, 0, 0,
                       :now, 'N-' || g
                FROM generate_series(1, 1000) g
            """), {"now": later})
        t0 = time.perf_counter()
        rollups.refresh_rollups(engine, defs, later + timedelta(seconds=1))
        print(f"incremental refresh, 1,000 new orders: {(time.perf_counter() - t0) * 1000:7.1f} ms")

        # one tick after late links merged 1,000 pairs of orders already counted (as ingest
        # journals them: both business ids in identity_changes)
        linked = later + timedelta(minutes=1)
        with engine.begin() as conn:
            conn.execute(sa.text("""
                WITH pairs AS (SELECT 'B-' || (2 * g) AS keep, 'B-' || (2 * g + 1) AS gone
                               FROM generate_series(1, 1000) g)
                UPDATE transactions t SET business_id = p.keep, updated_at = :now FROM pairs p WHERE t.correlation_id = p.gone
            """), {"now": linked})
            conn.execute(sa.text("""
                INSERT INTO identity_changes (business_id, changed_at)
                SELECT 'B-' || (2 * g + k), :now FROM generate_series(1, 1000) g, generate_series(0, 1) k
            """), {"now": linked})
        t0 = time.perf_counter()
        rollups.refresh_rollups(engine, defs, linked + timedelta(seconds=1))
        print(f"incremental refresh, 1,000 merges:     {(time.perf_counter() - t0) * 1000:7.1f} ms")
        rollups.refresh_rollups(engine, defs, linked + timedelta(minutes=3))  # past the safety lag
        t0 = time.perf_counter()
        rollups.refresh_rollups(engine, defs, linked + timedelta(minutes=6))
        print(f"incremental refresh, nothing new:      {(time.perf_counter() - t0) * 1000:7.1f} ms")
    finally:
        engine.dispose()
        if not args.keep:
            for worker in workers:
                scratch.drop(make_engine(worker), name)
            scratch.drop(admin, name)


if __name__ == "__main__":
    main()
