"""Alerts benchmark, end to end: breach -> page and fix -> resolved, through real scheduler processes.

Creates a scratch database (dropped at the end unless --keep), starts two real
`python -m wiring scheduler` processes on it (leader + hot standby; CONTROLTOWER_DATABASE_URL,
CONTROLTOWER_ALERTS_FILE and CONTROLTOWER_EVALUATION_INTERVAL set), and a webhook receiver on
loopback in this process. The rules file holds one rule: erp_posting open_breaches > 0 for
`--for` (10 s). Each trial, on a channel of its own:
  - breach at a known moment B (a random phase against the scheduler's ticks): an
    `order.received` whose posting deadline is B (occurred_at = B - the SLA target) is ingested
    just before B; the time from B to the webhook's firing POST is measured;
  - fix at F: `order.erp_posted` is ingested; the time from F to the resolved POST is measured.
Per interval the leader is SIGKILLed once (after the first trial) and the time until the standby
holds the leader lock is reported; the killed process is restarted as the new standby. POSTs are
counted by status: each trial must get exactly one firing and one resolved notification.
Targets (issue 13): breach -> page <= for + interval + 2 s; resolution <= interval + 2 s.

    python bench/alerts.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/alerts.py --intervals 5 --trials 5        # one interval, more trials
    python bench/alerts.py --cycle-cost                     # also the 100-rule cycle cost (bench/alerts_cycle.py)
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import alerts_cycle, scratch  # noqa: E402
from collectors.store import EventStore  # noqa: E402
from controltower import migrate  # noqa: E402
from controltower.db import make_engine  # noqa: E402
from controltower.settings import Settings  # noqa: E402
from metrics import definitions  # noqa: E402
from wiring.scheduler import LEADER_LOCK  # noqa: E402

RULE = "BenchUnpostedOrders"


@dataclass
class Post:
    at: datetime
    status: str
    channels: tuple[str, ...]


class Receiver(http.server.ThreadingHTTPServer):
    """The webhook receiver: every POST with its arrival time, status and channels."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[Post] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def first(self, status: str, channel: str) -> Post | None:
        return next((p for p in self.posts if p.status == status and channel in p.channels), None)

    def count(self, channel: str) -> Counter[str]:
        return Counter(p.status for p in self.posts if channel in p.channels)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        at = datetime.now(UTC)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        channels = tuple(str(a.get("labels", {}).get("channel", "")) for a in body.get("alerts", []))
        self.server.posts.append(Post(at, str(body.get("status")), channels))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@dataclass
class Schedulers:
    """Two `controltower scheduler` processes on the scratch database."""

    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"scheduler-{self.started}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "wiring", "scheduler"], cwd=ROOT, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def leader_backend(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = :k AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"), {"k": LEADER_LOCK}).scalar()


def wait_for(condition, timeout: float, step: float = 0.02) -> bool:  # noqa: ANN001 - a plain predicate
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def order(cid: str, channel: str, stage: str, at: datetime) -> dict[str, object]:
    return {"event_id": f"{cid}-{stage}", "occurred_at": at.isoformat(), "correlation_id": cid, "order_id": cid,
            "channel": channel, "flow": "order", "stage": stage, "status": "ok",
            "system": "marketplace" if stage == "received" else "erp"}


@dataclass
class Trial:
    interval: float
    page_s: float | None
    resolve_s: float | None
    counts: Counter[str]


def trial(store: EventStore, receiver: Receiver, target: timedelta, interval: float, for_s: float, n: int,
          rng: random.Random) -> Trial:
    channel = f"bench{int(interval)}s{n}"
    cid = f"BENCH-{int(interval)}-{n}-{rng.randrange(10**6)}"
    breach = datetime.now(UTC) + timedelta(seconds=1 + rng.uniform(0, interval))  # any phase against the ticks
    store.ingest([order(cid, channel, "received", breach - target)], source="bench", now=datetime.now(UTC))
    limit = for_s + 2 * interval + 15
    wait_for(lambda: receiver.first("firing", channel) is not None, (breach - datetime.now(UTC)).total_seconds() + limit)
    page = receiver.first("firing", channel)
    time.sleep(rng.uniform(0, 1))
    fixed = datetime.now(UTC)
    store.ingest([order(cid, channel, "erp_posted", fixed)], source="bench", now=fixed)
    wait_for(lambda: receiver.first("resolved", channel) is not None, 2 * interval + 15)
    resolved = receiver.first("resolved", channel)
    time.sleep(0.5)  # a duplicate would arrive right behind
    return Trial(interval, (page.at - breach).total_seconds() if page else None,
                 (resolved.at - fixed).total_seconds() if resolved else None, receiver.count(channel))


def run_interval(args: argparse.Namespace, url: str, engine: sa.Engine, store: EventStore, receiver: Receiver,
                 interval: float, logs: Path, rng: random.Random) -> tuple[list[Trial], float | None]:
    rules = logs / f"alerts-{int(interval)}.yaml"
    rules.write_text(
        f"receivers:\n  hook: {{type: webhook, url: \"{receiver.url}/hook\"}}\ndefault_receivers: [hook]\n"
        f"rules:\n  - {{name: {RULE}, sla: erp_posting, field: open_breaches, op: \">\", value: 0, "
        f"for: {args.for_seconds:g}s, severity: page}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONTROLTOWER_DATABASE_URL": url,
           "CONTROLTOWER_ALERTS_FILE": str(rules), "CONTROLTOWER_EVALUATION_INTERVAL": f"{interval:g}",
           "CONTROLTOWER_DATA_DIR": str(logs / "data")}
    group = Schedulers(env, logs)
    takeover: float | None = None
    target = timedelta(milliseconds=definitions.load().get("erp_posting").target_for("bench"))  # type: ignore[union-attr]
    try:
        first = group.start()
        if not wait_for(lambda: leader_backend(engine) is not None, 60):
            raise SystemExit("the scheduler never became leader: see " + str(logs))
        group.start()
        time.sleep(3)  # the standby is up and trying the lock
        trials = []
        for n in range(args.trials):
            trials.append(trial(store, receiver, target, interval, args.for_seconds, n, rng))
            t = trials[-1]
            print(f"  interval {interval:g}s trial {n + 1}: breach->page {fmt(t.page_s)}  fix->resolved "
                  f"{fmt(t.resolve_s)}  POSTs {dict(t.counts)}", flush=True)
            if n == 0:
                old = leader_backend(engine)
                first.send_signal(signal.SIGKILL)  # the first process started is the leader
                killed = time.monotonic()
                first.wait(10)
                if wait_for(lambda old=old: (leader_backend(engine) or old) != old, 60, step=0.01):
                    takeover = time.monotonic() - killed
                print(f"  leader SIGKILLed: standby holds the lock after {fmt(takeover)}", flush=True)
                group.start()  # the new standby
                time.sleep(2)
        return trials, takeover
    finally:
        group.stop()


def fmt(seconds: float | None) -> str:
    return "   none" if seconds is None else f"{seconds:6.2f} s"


def report(interval: float, for_s: float, trials: list[Trial], takeover: float | None) -> bool:
    pages = [t.page_s for t in trials if t.page_s is not None]
    fixes = [t.resolve_s for t in trials if t.resolve_s is not None]
    page_target, fix_target = for_s + interval + 2, interval + 2
    once = all(t.counts == Counter({"firing": 1, "resolved": 1}) for t in trials)
    ok_page = len(pages) == len(trials) and max(pages) <= page_target
    ok_fix = len(fixes) == len(trials) and max(fixes) <= fix_target

    def stats(xs: list[float]) -> str:
        return f"min {min(xs):5.2f}  median {statistics.median(xs):5.2f}  max {max(xs):5.2f} s" if xs else "none"

    print(f"interval {interval:g} s, for {for_s:g} s, {len(trials)} trials, leader killed once "
          f"(takeover {fmt(takeover).strip()}):")
    print(f"  breach -> page      {stats(pages)}  target <= {page_target:g} s  {'PASS' if ok_page else 'FAIL'}")
    print(f"  fix -> resolved     {stats(fixes)}  target <= {fix_target:g} s  {'PASS' if ok_fix else 'FAIL'}")
    print(f"  one firing + one resolved POST per trial: {'PASS' if once else 'FAIL'}")
    return ok_page and ok_fix and once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTROLTOWER_DATABASE_URL"))
    parser.add_argument("--intervals", default="5,30", help="evaluation intervals to measure, seconds (default 5,30)")
    parser.add_argument("--trials", type=int, default=3, help="trials per interval (default 3)")
    parser.add_argument("--for", dest="for_seconds", type=float, default=10.0, help="the rule's for, seconds")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--cycle-cost", action="store_true", help="then run the 100-rule cycle cost (bench/alerts_cycle.py)")
    alerts_cycle.add_arguments(parser)
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("--database-url (or CONTROLTOWER_DATABASE_URL) is required: the benchmark creates its own database there")
    admin, name, url = scratch.create(args.database_url, "ct_bench_alerts_e2e")
    engine = make_engine(url, pool_size=2)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rng = random.Random(args.seed)
    results = []
    try:
        migrate.upgrade(engine)
        settings = Settings.load({"database_url": url}, environ={})
        store = EventStore(engine, settings)
        with tempfile.TemporaryDirectory(prefix="ct-bench-alerts-") as tmp:
            for interval in (float(x) for x in args.intervals.split(",")):
                print(f"interval {interval:g} s: two schedulers, {args.trials} trials …", flush=True)
                trials, takeover = run_interval(args, url, engine, store, receiver, interval, Path(tmp), rng)
                results.append((interval, trials, takeover))
        print()
        passed = [report(interval, args.for_seconds, trials, takeover) for interval, trials, takeover in results]
        print(f"overall: {'PASS' if all(passed) else 'FAIL'}")
    finally:
        receiver.shutdown()
        engine.dispose()
        if not args.keep:
            scratch.drop(admin, name)
    if args.cycle_cost:
        print()
        alerts_cycle.run(args)


if __name__ == "__main__":
    main()
