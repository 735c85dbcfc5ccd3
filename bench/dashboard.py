"""Dashboard benchmark: the database time behind the home page and the transaction view, and
the time a browser takes to show them.

Calls the `app/queries.py` functions directly (no Streamlit cache) against a database and
prints p50/max in ms over --repeat runs of:
  1. the home page's queries (headline counts, SLA table, hops, throughput, within-target,
     SLA list, freshness), summed per run,
  2. the transaction view's queries (search by key, the whole transaction, related alerts),
and with --browser warm page loads in Debian's Chromium (Playwright; one cold load first fills
the caches): ms from navigation to the first chart drawn, and to fully rendered (the last
change of text or charts before the page stayed unchanged for 1.5 s with its script done).

    python bench/dashboard.py postgresql://postgres@127.0.0.1:5432/postgres
    python bench/dashboard.py postgresql://postgres@127.0.0.1:5432/postgres --seed --browser
    python bench/dashboard.py postgresql://postgres@127.0.0.1:5432/postgres --seed --events 2300000 --browser --keep

--seed benchmarks a fresh database beside the given one, migrated and filled with the
dashboard tests' seed, or with --events with about that many generated events (bench/sla.py's
generator; 2,300,000 gives ~2.0 M stored) and the metrics job run over them; it is dropped
afterwards unless --keep. Otherwise the given database is read as it is. Figures only: no asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import queries  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine, normalize_url  # noqa: E402
from controltower.settings import Settings  # noqa: E402


def home_queries(engine: sa.Engine) -> None:
    now = datetime.now(UTC)
    queries.headline_counts(engine, now=now)
    queries.sla_status(engine, "1h")
    queries.hop_health(engine)
    queries.throughput(engine, 6, now=now)
    queries.within_target(engine, 6, None, now=now)
    queries.rollup_slas(engine, 24, now=now)
    queries.freshness(engine, now=now)


def transaction_queries(engine: sa.Engine, q: str) -> None:
    results = queries.search_transactions(engine, q)
    if results:
        tx = queries.get_transaction(engine, results[0]["correlation_id"], now=datetime.now(UTC))
        if tx:
            queries.related_alerts(engine, tx["channel"])


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm the pool and the plan cache
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(name: str, ms: list[float]) -> None:
    print(f"{name:<34} p50 {statistics.median(ms):8.1f} ms   max {max(ms):8.1f} ms   (n={len(ms)})")


HOME_CHARTS = 3  # throughput, error rate, within target


def page_load(page: Any, url: str, charts: int, quiet: float = 1.5) -> tuple[float, float]:
    """Navigate to `url`; (ms to the first chart drawn (Plotly or SVG), ms to fully rendered): the moment the page
    last changed (text or charts drawn) before it stayed unchanged for `quiet` s with the script done
    and `charts` charts drawn."""
    start = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    first = last_change = None
    previous = None
    while True:
        state = page.evaluate(
            """() => [document.querySelectorAll('.js-plotly-plot .main-svg, figure svg').length,
                      document.body.innerText.length,
                      (document.querySelector('[data-testid="stApp"]') || {dataset: {}}).dataset.testScriptState]"""
        )
        now = time.perf_counter()
        drawn, size, script = state
        if drawn and first is None:
            first = now
        if [drawn, size] != previous:
            previous, last_change = [drawn, size], now
        if script == "notRunning" and drawn >= charts and now - last_change >= quiet:
            break
        if now - start > 90:
            raise TimeoutError(f"{url}: {drawn} charts, script {script}")
        page.wait_for_timeout(25)
    return ((first or last_change) - start) * 1000, (last_change - start) * 1000


def browser_render(url: str, data_dir: Path, q: str | None, runs: int) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    from tests.app.test_browser import CHROMIUM_ARGS, Dashboard

    server = Dashboard(url, data_dir)
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            pages = [("home", "/", HOME_CHARTS)] + ([("transaction", f"/transaction?q={q}", 1)] if q else [])
            for name, path, charts in pages:
                page_load(page, server.url + path, charts)  # cold: fills the caches
                firsts, fulls = [], []
                for _ in range(runs):
                    first, full = page_load(page, server.url + path, charts)
                    firsts.append(first)
                    fulls.append(full)
                print(f"Chromium, warm, {name:<12} first chart p50 {statistics.median(firsts):6.0f} ms · fully rendered "
                      f"p50 {statistics.median(fulls):6.0f} ms, max {max(fulls):6.0f} ms (n={runs})", flush=True)
            browser.close()
    finally:
        server.stop()


def grow(engine: sa.Engine, events: int, days: int) -> None:
    """About `events` events (orders of ~10 events each over `days`), then the metrics job over them."""
    from bench.sla import generate
    from metrics import definitions, jobs

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = time.perf_counter()
    generate(engine, max(1, events // 10), now, days)
    with engine.begin() as conn:  # what ingest keeps per inventory feed (the generator writes events only)
        conn.execute(sa.text(
            "INSERT INTO freshness_state (sla, channel, key, last_at) "
            "SELECT 'inventory_freshness', channel, attributes->>'location', max(occurred_at) FROM events "
            "WHERE flow = 'inventory' AND status = 'ok' GROUP BY 2, 3"))
    defs = definitions.load()
    definitions.publish(engine, defs)
    jobs.refresh(engine, defs, now)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    print(f"grown to {n:,} events (rollups and SLA table refreshed) in {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--q", help="the key to search for (default: the latest transaction's order id)")
    parser.add_argument("--seed", action="store_true", help="benchmark a fresh seeded database beside this one")
    parser.add_argument("--browser", action="store_true", help="also time the first render in Chromium")
    parser.add_argument("--events", type=int, default=0,
                        help="with --seed: also generate about this many events (bench/sla.py's generator, ~10 per "
                             "order over --days) and run the metrics job over them, as a real store of that size")
    parser.add_argument("--days", type=int, default=7, help="with --events: days the generated orders span")
    parser.add_argument("--keep", action="store_true", help="with --seed: keep the scratch database (URL printed)")
    parser.add_argument("--runs", type=int, default=3, help="with --browser: warm loads of each page timed")
    args = parser.parse_args()

    url = normalize_url(args.database_url)
    scratch = None
    if args.seed:
        scratch = f"ct_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{scratch}"'))
        url = sa.engine.make_url(url).set(database=scratch).render_as_string(hide_password=False)
    data_dir = Path("/tmp") / f"ct-bench-dashboard-{uuid.uuid4().hex[:6]}"
    engine = make_engine(url, pool_size=3)
    try:
        if args.seed:
            from tests.app.test_dashboard import seed

            migrate.upgrade(engine)
            if args.events:
                grow(engine, args.events, args.days)
            else:
                seed(engine, Settings.load({"database_url": url, "data_dir": data_dir}, environ={}), datetime.now(UTC))
        state = queries.database_state(engine)
        if state != "ready":
            print(f"the database is {state}: run `controltower migrate` and the simulator, or pass --seed")
            return
        with engine.connect() as conn:
            q = args.q or conn.execute(sa.text(
                "SELECT COALESCE(order_id, correlation_id) FROM transactions ORDER BY last_event_at DESC LIMIT 1"
            )).scalar()
            counts = conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM sla_status), "
                "(SELECT count(*) FROM event_rollup_minute)")).one()
        print(f"database: {sa.engine.make_url(url).render_as_string(hide_password=True)}")
        print(f"rows: {counts[0]:,} transactions, {counts[1]:,} SLA rows, {counts[2]:,} event rollup rows; "
              f"search key {q!r}")
        report("home page queries (sum)", timed(lambda: home_queries(engine), args.repeat))
        if q:
            report("transaction view queries (sum)", timed(lambda: transaction_queries(engine, q), args.repeat))
        if args.browser:
            browser_render(url, data_dir, q, args.runs)
    finally:
        engine.dispose()
        if scratch and args.keep:
            print(f"kept: {url}")
        elif scratch:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
