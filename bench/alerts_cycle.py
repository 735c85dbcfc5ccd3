"""Alerts benchmark, cycle cost: one evaluation cycle of 100 rules over an SLA table backed by 1 M transactions.

(The end-to-end figure, breach -> page with real scheduler processes, is `bench/alerts.py`;
this one runs alone or as `python bench/alerts.py --cycle-cost`.)

Creates a fresh database (dropped at the end unless --keep), migrates it, and generates with
set-based SQL: --transactions orders (an `order.received` event with an order_total and its
milestone each), one open SLA item per order (a tenth of them past due), 8 days of minute
event rollups for every channel, and the SLA table (10 SLAs x --channels channels x 2 windows).
Then it times, against a real webhook receiver on loopback:
  1. the first evaluation cycle (every breached series goes pending),
  2. the cycle where they fire (notifications grouped per rule, impact computed in SQL),
  3. steady cycles with nothing new (what every scheduler tick costs),
  4. delivering the outbox,
  5. one evaluate + deliver pass, back to back: an SLA row turns bad -> evaluate -> deliver ->
     the receiver has it (the work of one pipeline tick, without the scheduler's waiting).

    python bench/alerts_cycle.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.evaluate import evaluate  # noqa: E402
from alerts.notify import deliver_pending  # noqa: E402
from alerts.rules import parse  # noqa: E402
from bench import scratch  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from controltower.yamlfile import loads  # noqa: E402

SLAS = ["order_acknowledgement", "erp_posting", "warehouse_release", "warehouse_shipping", "shipment_confirmation",
        "ship_by_expected_date", "return_refund", "settlement", "error_rate", "channel_silence"]
VARIANTS = [  # (field, op, value, extra options)
    ("open_breaches", ">", 0, "    impact: true\n"),
    ("open_breaches", ">", 50, "    impact: true\n    digest_interval: 15m\n"),
    ("health", ">=", "warn", ""),
    ("health", "==", "critical", "    keep_firing_for: 10m\n"),
    ("burn_rate_short", ">", 14.4, ""),
    ("burn_rate_long", ">", 6, "    max_notifications_per_hour: 4\n"),
    ("error_budget_remaining", "<", 0.25, ""),
    ("p95_ms", ">", 1_800_000, "    no_data: alert\n"),
    ("volume_ratio", "<", 0.5, ""),
    ("within_target_ratio", "<", 0.99, "    no_data: breach\n"),
]


def rules_yaml(url: str, channels: list[str]) -> str:
    lines = ["receivers:", "  hook:", "    type: webhook", f"    url: {url}/hook", "default_receivers: [hook]",
             "routes:", "  - match: {channel: ch01}", "    receivers: [hook]", "rules:"]
    for i in range(100):
        sla = SLAS[i % 10]
        field, op, value, extra = VARIANTS[i // 10]
        channel = f"    channel: {channels[i % len(channels)]}\n" if i % 3 == 0 else ""
        lines.append(
            f"  - name: R{i:03d}\n    sla: {sla}\n{channel}    field: {field}\n    op: \"{op}\"\n    value: {value}\n"
            f"    for: 1m\n    repeat_interval: 1h\n{extra}".rstrip("\n")
        )
    return "\n".join(lines) + "\n"


def generate(engine: sa.Engine, n: int, channels: list[str], now: datetime) -> None:
    migrate.ensure_partitions(engine, {(now - timedelta(days=d)).date() for d in range(4)})
    params = {"n": n, "now": now, "channels": channels, "slas": SLAS[:8]}
    with engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO events (occurred_at, correlation_id, event_id, received_at, order_id, channel, flow, stage,
                                status, system, attributes, source)
            SELECT CAST(:now AS timestamptz) - (g % 172800) * interval '1 second', 'T-' || g, 'T-' || g || '-r',
                   CAST(:now AS timestamptz), 'SO-' || g, (CAST(:channels AS text[]))[1 + g % cardinality(CAST(:channels AS text[]))],
                   'order', 'received', 'ok', 'marketplace',
                   jsonb_build_object('order_total', ((g % 50000) / 100.0)::text), 'bench'
            FROM generate_series(1, :n) g
        """), params)
        conn.execute(sa.text("""
            INSERT INTO transaction_milestones (correlation_id, milestone, reached_at, channel, recorded_at)
            SELECT correlation_id, 'order.received', occurred_at, channel, received_at FROM events
        """))
        conn.execute(sa.text("""
            INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at)
            SELECT (CAST(:slas AS text[]))[1 + g % 8], 'T-' || g,
                   (CAST(:channels AS text[]))[1 + g % cardinality(CAST(:channels AS text[]))],
                   CAST(:now AS timestamptz) - interval '3 hours',
                   CAST(:now AS timestamptz) + CASE WHEN g % 10 = 0 THEN - interval '1 hour' ELSE interval '1 hour' END
            FROM generate_series(1, :n) g
        """), params)
        conn.execute(sa.text("""
            INSERT INTO event_rollup_minute (minute, channel, flow, stage, status, count)
            SELECT date_trunc('minute', CAST(:now AS timestamptz)) - m * interval '1 minute', c, 'order', 'received', 'ok',
                   CASE WHEN m < 60 AND c IN ('ch02', 'ch03') THEN 0 ELSE 1 + m % 7 END
            FROM generate_series(1, 8 * 1440) m, unnest(CAST(:channels AS text[])) c
        """), params)
        conn.execute(sa.text("""
            INSERT INTO sla_status (sla, channel, "window", kind, computed_at, count, p50_ms, p95_ms, p99_ms, target_ms,
                                    within_target_ratio, open_breaches, oldest_breach_ms, value, threshold, health,
                                    reason, objective, error_budget_remaining, burn_rate_short, burn_rate_long)
            SELECT s, c, w, 'milestone_latency', :now, 1000, 60000, 900000 + (h % 5) * 500000, 2000000, 1800000,
                   0.95 + (h % 6) / 100.0, o.n, CASE WHEN o.n > 0 THEN 5400000 END, 1, 1,
                   (ARRAY['ok', 'warn', 'critical'])[1 + h % 3], 'bench', 0.99, (h % 10) / 10.0, (h % 20), (h % 9)
            FROM unnest(CAST(:slas_all AS text[])) s, unnest(CAST(:channels AS text[])) c,
                 unnest(ARRAY['1h', '24h']) w,
                 LATERAL (SELECT abs(hashtext(s || c || w)) AS h) hh,
                 LATERAL (SELECT count(*) AS n FROM sla_open_items i
                          WHERE i.sla = s AND i.channel = c AND i.due_at < :now) o
        """), {**params, "slas_all": SLAS})
        conn.execute(sa.text("ANALYZE"))


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.received.append(time.perf_counter())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    add_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    run(parser.parse_args())


def run(args: argparse.Namespace) -> None:
    if not args.database_url:
        sys.exit("--database-url (or CONTROLTOWER_DATABASE_URL) is required: the benchmark creates its own database there")
    admin, name, scratch_url = scratch.create(args.database_url, "ct_bench_alerts")
    engine = make_engine(scratch_url, pool_size=2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        channels = [f"ch{i:02d}" for i in range(1, args.channels + 1)]
        print(f"generating {args.transactions:,} transactions, {len(channels)} channels …", flush=True)
        t0 = time.perf_counter()
        generate(engine, args.transactions, channels, now)
        with engine.connect() as conn:
            status_rows = conn.execute(sa.text("SELECT count(*) FROM sla_status")).scalar_one()
        print(f"generated in {time.perf_counter() - t0:.0f} s: {status_rows} SLA rows")
        ruleset = parse(loads(rules_yaml(url, channels), "bench.yaml"))

        def cycle(at: datetime) -> tuple[float, int]:
            t = time.perf_counter()
            changes = evaluate(engine, ruleset.rules, at, routes=ruleset.routes)
            return (time.perf_counter() - t) * 1000, len(changes)

        first_ms, pending = cycle(now)
        fire_ms, fired = cycle(now + timedelta(minutes=2))
        with engine.connect() as conn:
            outbox = conn.execute(sa.text("SELECT count(*), coalesce(sum(alert_count), 0) FROM alert_notifications")).one()
        steady = [cycle(now + timedelta(minutes=3 + i))[0] for i in range(args.repeat)]
        t = time.perf_counter()
        report = deliver_pending(engine, ruleset.receivers, now + timedelta(minutes=10))
        deliver_ms = (time.perf_counter() - t) * 1000
        print(f"{len(ruleset.rules)} rules over {status_rows} SLA rows ({args.transactions:,} transactions)")
        print(f"cycle 1 (series go pending):           {first_ms:8.1f} ms  ({pending} transitions)")
        print(f"cycle 2 (fire, group, impact):         {fire_ms:8.1f} ms  ({fired} transitions, "
              f"{outbox[0]} notifications carrying {outbox[1]} alerts)")
        print(f"steady cycle:                     p50 {statistics.median(steady):8.1f} ms  max {max(steady):8.1f} ms")
        print(f"deliver the outbox:                    {deliver_ms:8.1f} ms  ({report.sent} sent)")

        # breach -> notification: one more series turns bad, then one evaluate + deliver tick
        probe = parse(loads(f"""
receivers:
  hook: {{type: webhook, url: "{url}/probe"}}
default_receivers: [hook]
rules:
  - name: Probe
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 999999
    impact: true
""", "probe.yaml"))
        latencies = []
        for i in range(args.repeat):
            at = now + timedelta(minutes=20 + i)
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE sla_status SET open_breaches = :v WHERE sla = 'erp_posting' AND channel = 'ch01'"),
                             {"v": 1_000_000 if i % 2 == 0 else 0})
            if i % 2:
                evaluate(engine, [*ruleset.rules, *probe.rules], at, routes=ruleset.routes)
                deliver_pending(engine, {**ruleset.receivers, **probe.receivers}, at)
                continue
            before = len(Receiver.received)
            t = time.perf_counter()
            evaluate(engine, [*ruleset.rules, *probe.rules], at, routes=ruleset.routes)
            deliver_pending(engine, {**ruleset.receivers, **probe.receivers}, at)
            if len(Receiver.received) > before:
                latencies.append((Receiver.received[before] - t) * 1000)
        if latencies:
            print(f"evaluate + deliver, back to back:   p50 {statistics.median(latencies):8.1f} ms  "
                  f"max {max(latencies):8.1f} ms  (end to end through the scheduler: bench/alerts.py)")
        target = "met" if fire_ms <= 1000 and max(steady) <= 1000 else "MISSED"
        print(f"target: evaluation cycle <= 1 s: {target}")
    finally:
        server.shutdown()
        engine.dispose()
        if not args.keep:
            scratch.drop(admin, name)


if __name__ == "__main__":
    main()
