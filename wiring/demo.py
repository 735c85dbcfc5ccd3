"""`controltower demo`: the whole product on one machine with one command, showing an outage in minutes.

Starts (or reuses) the embedded PostgreSQL, applies migrations, backfills a day of simulated
history straight into the store, computes the SLAs over it, then runs the collector, the
scheduler and the dashboard as child processes and the live simulator in a thread of this
one; prints the URLs, and stops everything cleanly on Ctrl-C. Composition root: may start
every room.

The point of the demo is a page within minutes, so the timeline is laid out backwards from the
present: the live clock starts `--catch-up` (5 h) behind real now and runs `--speed` (240)
times faster until it reaches it (about 75 s), and the default fault, `erp_outage@-4h+4.5h`,
began four business hours before the present. When the live clock catches up, hours of orders
are already unposted past the 30-minute target, and the outage goes on for another 30 real
minutes. Backfill and live share one generator (`simulator.run.Run`), so the backfill never
posts orders the outage holds back, and orders in flight at the switch complete. The
scheduler uses the demo's alert rules (`demo_rules_text`: the shipped rules with `for` at
most 2m) and a 10 s evaluation interval unless the user configured others; its `log`
receiver prints each firing notification as one line in this terminal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml

from controltower import yamlfile
from controltower.clitools import console, context_of, fail, settings_of
from controltower.db import stop_embedded
from controltower.errors import ConfigError, ControlTowerError
from controltower.settings import parse_duration

DEMO_MAX_FOR = "2m"  # the longest `for` of the demo's rules (see demo_rules_text)
DEFAULT_BACKFILL = "1d"
DEFAULT_CATCH_UP = "5h"
DEFAULT_SPEED = 240.0
DEFAULT_FAULT = "erp_outage@-4h+4.5h"
EVALUATION_INTERVAL = "10s"  # the scheduler's tick in the demo (the product's default is 30s)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def _cli(settings_args: list[str], *args: str) -> list[str]:
    return [sys.executable, "-m", "wiring", *settings_args, *args]


def _wait_ready(url: str, children: list[Child], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                fail(f"{child.name} exited with code {child.process.returncode}; see its output above")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


_DEMO_HEADER = """\
# Alert rules of `controltower demo`, written at each start: the shipped rules (alerts/alerts.yaml)
# with every `for` longer than {cap} shortened to {cap}.
#
# Why: the demo must show a page within minutes of starting, but the shipped UnpostedOrders rule
# waits `for: 10m` of real time, and others 15 or 30 minutes. Not shorter than {cap}: the demo's
# live clock first catches up with the present at --speed (5 h of business in about 75 s), and
# while it does, orders whose next step is a few business minutes away look overdue against real
# time (in-flight work, not breaches). Two minutes outlast that catch-up, so what fires is what
# persists: the ERP outage the demo injects.
#
"""


def demo_rules_text(shipped: str, cap: str = DEMO_MAX_FOR, source: str = "alerts.yaml") -> str:
    """The shipped rules file with every rule's `for` longer than `cap` shortened to `cap` (nothing
    else changes: the value is replaced where YAML says it is, so a comment or an annotation that
    reads `for: 30m` stays as written). A file YAML cannot read raises ConfigError with file:line."""
    limit = parse_duration(cap)
    yamlfile.loads(shipped, source)  # file:line errors (and the size budget) before the raw walk
    root = yaml.compose(shipped, Loader=yaml.SafeLoader)
    spans: list[tuple[int, int]] = []
    rules = _value(root, "rules")
    for rule in rules.value if isinstance(rules, yaml.SequenceNode) else ():
        node = _value(rule, "for")
        if not isinstance(node, yaml.ScalarNode):
            continue
        try:
            seconds = parse_duration(node.value)
        except ConfigError:
            continue  # not a duration: left for the rules' own validation to report
        if seconds > limit:
            spans.append((node.start_mark.index, node.end_mark.index))
    out = shipped
    for start, end in sorted(spans, reverse=True):
        out = out[:start] + cap + out[end:]
    return _DEMO_HEADER.format(cap=cap) + out


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def write_demo_rules(folder: Path) -> Path:
    """Write the demo's rules (`demo_rules_text` of the shipped file) into `folder`, validated."""
    from alerts.rules import DEFAULT_FILE, load_rules

    path = folder / "demo-alerts.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_rules_text(DEFAULT_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    load_rules(path)
    return path


def check_alerts_file(environ: dict[str, str] | os._Environ[str]) -> None:
    """The user's own rules file (CONTROLTOWER_ALERTS_FILE), checked before anything starts: a
    missing or invalid file is one line now, not a scheduler dying after the backfill."""
    from alerts.rules import load_rules

    path = environ.get("CONTROLTOWER_ALERTS_FILE")
    if path:
        try:
            load_rules(Path(path))
        except ConfigError as exc:
            raise ConfigError(f"CONTROLTOWER_ALERTS_FILE: {exc}") from None


def child_environment(environ: dict[str, str], dashboard_url: str, alerts_file: Path) -> dict[str, str]:
    """The children's environment: the demo's rules, tick and deep links unless the user set them."""
    env = dict(environ, PYTHONUNBUFFERED="1")
    env.setdefault("CONTROLTOWER_ALERTS_FILE", str(alerts_file))
    env.setdefault("CONTROLTOWER_EVALUATION_INTERVAL", EVALUATION_INTERVAL)
    env.setdefault("CONTROLTOWER_DASHBOARD_URL", dashboard_url)
    return env


class LiveThread(threading.Thread):
    """The live simulator in a thread of the demo process; keeps the error that ended it."""

    def __init__(self, run: Any, sink: Any, speed: float, stop: threading.Event) -> None:
        super().__init__(name="simulator", daemon=True)
        self.run_, self.sink, self.speed, self.stop, self.error = run, sink, speed, stop, ""

    def run(self) -> None:
        try:
            self.run_.live(self.sink, speed=self.speed, stop=self.stop)
        except Exception as exc:  # thread boundary: reported as one line by the demo
            self.error = str(exc) if isinstance(exc, ControlTowerError) else f"{type(exc).__name__}: {exc}"


def demo_command(
    ctx: typer.Context,
    backfill: str = typer.Option(DEFAULT_BACKFILL, "--backfill", help="Simulated history to write into the store first (0 to skip)."),
    catch_up: str = typer.Option(DEFAULT_CATCH_UP, "--catch-up", help="How far behind real now the live clock starts; it runs --speed times faster until it reaches the present."),
    speed: float = typer.Option(DEFAULT_SPEED, "--speed", help="Catch-up time compression (240 = four business hours per minute)."),
    fault: list[str] = typer.Option([DEFAULT_FAULT], "--fault", help="Fault scenario(s) (see `controltower simulate --help`); @-START counts back from the present."),
    seed: int = typer.Option(7, "--seed"),
    ids: str = typer.Option("real", "--ids", help="real: each system speaks its own IDs and Control Tower joins them; shared: one correlation ID per order (see `controltower simulate --help`)."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Do not start the dashboard."),
) -> None:
    """Start the embedded database, backfill history, and run collector, scheduler, simulator and dashboard."""
    from metrics import jobs as metric_jobs
    from simulator.emit import HttpSink, StoreSink
    from simulator.faults import parse_faults
    from simulator.run import Run, check_window

    began = time.monotonic()
    settings = settings_of(ctx)
    try:
        history = parse_duration(backfill, where="--backfill") if backfill not in ("0", "") else 0.0
        lead = parse_duration(catch_up, where="--catch-up")
        check_window(history, lead, settings)
        run = Run(seed=seed, faults=parse_faults(fault), ids=ids, backfill=history, lead=lead)
        check_alerts_file(os.environ)
    except ConfigError as exc:
        fail(str(exc))
    context = context_of(ctx, application_name="controltower-demo")
    _say(began, f"database ready ({'embedded in ' + str(settings.data_dir) if not settings.database_url else 'external'}), migrations applied")
    database_url = context.engine.url.render_as_string(hide_password=False)
    common = ["--database-url", database_url, "--data-dir", str(settings.data_dir)]
    collector_url = f"http://{settings.host}:{settings.port}"
    dashboard_url = f"http://127.0.0.1:{settings.dashboard_port}"
    env = child_environment(dict(os.environ), dashboard_url, write_demo_rules(settings.data_dir))
    children: list[Child] = []
    stop = threading.Event()
    live: LiveThread | None = None
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `timeout`: shut down like Ctrl-C
    try:
        if history:
            _say(began, f"backfilling {backfill} of simulated history …")
            run.backfill(StoreSink(context.engine, settings), progress=True)
            with context.engine.connect() as conn:  # fresh statistics: the first SLA refresh plans well
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        children.append(Child("collector", subprocess.Popen(_cli(common, "serve", "--host", settings.host, "--port", str(settings.port)), env=env)))
        _say(began, "computing the SLAs over the history …")
        metric_jobs.refresh(context.engine, metric_jobs.load_definitions(settings), datetime.now(UTC), settings)
        if not _wait_ready(collector_url + "/readyz", children):
            raise typer.Exit(1)
        _say(began, f"collector ready on {collector_url}")
        children.append(Child("scheduler", subprocess.Popen(_cli(common, "scheduler"), env=env)))
        live = LiveThread(run, HttpSink(collector_url, None, span_share=0.1, stop=stop), speed, stop)
        live.start()
        if not no_dashboard:
            children.append(Child("dashboard", subprocess.Popen(_cli(common, "dashboard", "--port", str(settings.dashboard_port)), env=env)))
            _wait_ready(dashboard_url + "/_stcore/health", children)
        _banner(began, dashboard_url if not no_dashboard else "(not started)", collector_url, fault, ids, lead, speed, env)
        while all(c.process.poll() is None for c in children) and live.is_alive():
            time.sleep(0.5)
        if not live.is_alive():
            console.print(f"[red]simulator stopped: {live.error or 'ended'}; shutting down[/]", highlight=False)
        else:
            gone = next(c for c in children if c.process.poll() is not None)
            console.print(f"[red]{gone.name} stopped (exit code {gone.process.returncode}); shutting down[/]")
    except KeyboardInterrupt:
        console.print("\nstopping …")
    finally:
        stop.set()
        if live is not None:
            live.join(timeout=15)
        _stop(children)
        truth = run.result(settings.data_dir / "simulator-truth.json")
        console.print(f"simulated {truth['events_total']} events; ground truth in {settings.data_dir / 'simulator-truth.json'}", highlight=False)
        context.engine.dispose()
        if not settings.database_url:
            stop_embedded(settings.data_dir)
        console.print("stopped")


def _say(began: float, text: str) -> None:
    console.print(f"[{time.monotonic() - began:5.1f}s] {text}", highlight=False)


def _banner(began: float, dashboard: str, collector: str, faults: list[str], ids: str, lead: float, speed: float,
            env: dict[str, str]) -> None:
    catch_up_s = lead / max(speed - 1, 1e-9)
    console.print(
        "\n[bold]Control Tower demo is running[/]\n"
        f"  dashboard   {dashboard}\n"
        f"  collector   {collector}  (POST /v1/events, /v1/traces; GET /v1/sla, /v1/transactions?q=…, /metrics)\n"
        f"  faults      {', '.join(faults) or 'none'} (@-START: that long before the present)\n"
        f"  live clock  {lead / 3600:g} h behind real time, catching up at {speed:g}x in about {catch_up_s:.0f} s\n"
        f"  alerts      {env['CONTROLTOWER_ALERTS_FILE']}, evaluated every {env['CONTROLTOWER_EVALUATION_INTERVAL']}; "
        "firing notifications appear below as log lines\n"
        f"  ids         {ids} (`--ids shared`: one correlation ID per order)\n"
        "  Ctrl-C stops everything.\n",
        highlight=False,
    )
    _say(began, "demo running")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
