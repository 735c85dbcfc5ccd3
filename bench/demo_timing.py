"""Demo timing: how long a new user waits, from `controltower demo` to a red ERP hop and a page.

Runs the real demo (embedded PostgreSQL in a fresh temporary data folder, free ports) as a
child process, timestamps its terminal lines, and polls what a user would look at:
  - the phases the demo prints (database, backfill, SLAs over the history, collector ready),
  - the ERP posting hop turning critical (red) on the home page (`hop_health`),
  - an UnpostedOrders alert firing (`GET /v1/alerts`) and its first notification line in
    the terminal (the scheduler's `log` receiver),
  - the deep link of that line: the dashboard's Open breaches page (run with Streamlit's
    AppTest on the demo's database, with the link's query parameters) lists unposted orders.
Then it stops the demo (SIGTERM, as Ctrl-C) and checks the embedded PostgreSQL is gone.

    python bench/demo_timing.py [--dashboard] [--timeout 420] [-- demo options…]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controltower.db import stop_embedded  # noqa: E402

PHASES = {
    "database ready": "database ready, migrations applied",
    "computing the SLAs": "backfill done (history in the store)",
    "collector ready": "SLAs over the history computed, collector ready",
    "demo running": "demo running (banner printed)",
}
FIRING = re.compile(r"\[FIRING[^\]]*\].*?(unposted|Unposted)")
LINK = re.compile(r"\((http://[^)\s]*/breaches\?[^)\s]*)\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Terminal(threading.Thread):
    """Reads the demo's output, echoes it with the elapsed time, and records first sightings."""

    def __init__(self, process: subprocess.Popen[str], began: float, echo: bool) -> None:
        super().__init__(daemon=True)
        self.process, self.began, self.echo = process, began, echo
        self.seen: dict[str, float] = {}
        self.firing_line = ""
        self.notifications: list[str] = []

    def run(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n").split("\r")[-1]
            at = time.monotonic() - self.began
            if self.echo and "h/s]" not in line:
                print(f"  {at:6.1f}s | {line}", flush=True)
            for needle, name in PHASES.items():
                if needle in line:
                    self.seen.setdefault(name, at)
            if "[FIRING" in line or "[RESOLVED" in line:
                self.notifications.append(f"{at:6.1f} s  {line.split(': ', 1)[-1]}")
            if FIRING.search(line) and not self.firing_line:
                self.seen["first FIRING line in the terminal"] = at
                self.firing_line = line


def deep_link_rows(link: str, database_url: str, data_dir: Path) -> int:
    """Rows of the Open breaches page opened by `link` (AppTest on the demo's database)."""
    from streamlit.testing.v1 import AppTest

    os.environ["CONTROLTOWER_DATABASE_URL"] = database_url
    os.environ["CONTROLTOWER_DATA_DIR"] = str(data_dir)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    for key, values in parse_qs(urlsplit(link).query).items():
        at.query_params[key] = values[0]
    at.run()
    at.switch_page("views/breaches.py").run()
    tables = [d.value for d in at.dataframe if "Overdue by" in d.value.columns]
    return len(tables[0]) if tables else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dashboard", action="store_true", help="Start the dashboard too (as a user would).")
    parser.add_argument("--timeout", type=float, default=420.0)
    parser.add_argument("--quiet", action="store_true", help="Do not echo the demo's terminal.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary data folder.")
    parser.add_argument("--linger", type=float, default=0.0,
                        help="Keep the demo running this many seconds after the page, to list every notification.")
    parser.add_argument("demo_args", nargs="*", help="Extra `controltower demo` options (after --).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ct-demo-timing-"))
    data = work / "data"
    port, dash_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")}
    env |= {"CONTROLTOWER_PORT": str(port), "CONTROLTOWER_DASHBOARD_PORT": str(dash_port), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "wiring", "--data-dir", str(data), "demo", *args.demo_args]
    if not args.dashboard:
        command.append("--no-dashboard")
    print(f"$ {' '.join(command[2:])}   (data in {data}, collector :{port})", flush=True)
    began = time.monotonic()
    demo = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    terminal = Terminal(demo, began, echo=not args.quiet)
    terminal.start()
    seen = terminal.seen
    database_url = f"postgresql+psycopg://postgres@/postgres?host={data / 'pgdata'}"
    engine = sa.create_engine(database_url, pool_pre_ping=True)
    links = 0
    try:
        while time.monotonic() - began < args.timeout and demo.poll() is None:
            elapsed = time.monotonic() - began
            if "demo running (banner printed)" in seen:
                try:
                    with engine.connect() as conn:
                        red = conn.execute(sa.text(
                            "SELECT string_agg(channel || ' ' || backlog, ', ' ORDER BY backlog DESC) FROM hop_health "
                            "WHERE sla = 'erp_posting' AND health = 'critical'")).scalar()
                    if red and "ERP posting hop red (hop_health critical)" not in seen:
                        seen["ERP posting hop red (hop_health critical)"] = elapsed
                        print(f"  {elapsed:6.1f}s * ERP posting critical: {red}", flush=True)
                except sa.exc.SQLAlchemyError:
                    pass
                try:
                    alerts = httpx.get(f"http://127.0.0.1:{port}/v1/alerts", timeout=5).json()
                    rows = alerts.get("alerts", alerts) if isinstance(alerts, dict) else alerts
                    if any(a.get("rule") == "UnpostedOrders" and a.get("state") == "firing" for a in rows):
                        seen.setdefault("UnpostedOrders firing (GET /v1/alerts)", elapsed)
                except (httpx.HTTPError, ValueError, AttributeError):
                    pass
            if terminal.firing_line and not links:
                match = LINK.search(terminal.firing_line)
                if match:
                    links = deep_link_rows(match.group(1), database_url.replace("postgresql+psycopg", "postgresql"), data)
                    seen[f"deep link {match.group(1).split('/')[-1]} lists {links} unposted orders"] = time.monotonic() - began
            if len([k for k in seen if not k.startswith("deep")]) >= len(PHASES) + 3 and links:
                if args.linger <= 0 or time.monotonic() - began > seen["first FIRING line in the terminal"] + args.linger:
                    break
            time.sleep(1.0)
    finally:
        stop_began = time.monotonic()
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        engine.dispose()
        stopped = time.monotonic() - stop_began
        stop_embedded(data)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ndemo timing ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"options: {' '.join(args.demo_args) or 'defaults'}{'' if args.dashboard else ' --no-dashboard'})")
    for name, at in sorted(seen.items(), key=lambda kv: kv[1]):
        print(f"  {at:6.1f} s  {name}")
    if terminal.firing_line:
        print(f"  first terminal line: {terminal.firing_line}")
    if args.linger > 0:
        print("  every notification line:", *terminal.notifications, sep="\n    ")
    print(f"  stopped in {stopped:.1f} s; embedded PostgreSQL running afterwards: "
          f"{(data / 'pgdata' / 'postmaster.pid').exists()}")


if __name__ == "__main__":
    main()
