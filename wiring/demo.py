"""`controltower demo`: the whole product on one machine with one command.

Starts (or reuses) the embedded PostgreSQL, applies migrations, backfills a few days of
simulated history, then runs the collector, the scheduler, the live simulator (with a fault
that starts a few minutes in; each system speaks its own IDs unless `--ids shared`) and the dashboard as child processes of this one, prints the
URLs, and stops everything cleanly on Ctrl-C. Composition root: may start every room.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import typer

from controltower.clitools import console, context_of, fail, settings_of
from controltower.db import stop_embedded


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


def demo_command(
    ctx: typer.Context,
    backfill: str = typer.Option("3d", "--backfill", help="Simulated history to generate first (0 to skip)."),
    speed: float = typer.Option(60.0, "--speed", help="Live time compression (60 = an hour of business per minute)."),
    fault: list[str] = typer.Option(["erp_outage@6h+2h"], "--fault", help="Fault scenario(s) for the live simulator (see `controltower simulate --help`)."),
    seed: int = typer.Option(7, "--seed"),
    ids: str = typer.Option("real", "--ids", help="real: each system speaks its own IDs and Control Tower joins them; shared: one correlation ID per order (see `controltower simulate --help`)."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Do not start the dashboard."),
) -> None:
    """Start the embedded database, backfill history, and run collector, scheduler, simulator and dashboard."""
    settings = settings_of(ctx)
    context = context_of(ctx, application_name="controltower-demo")
    console.print(f"database ready ({'embedded in ' + str(settings.data_dir) if not settings.database_url else 'external'}), migrations applied")
    database_url = context.engine.url.render_as_string(hide_password=False)
    common = ["--database-url", database_url, "--data-dir", str(settings.data_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if backfill not in ("0", "0d", ""):
        console.print(f"backfilling {backfill} of simulated history …")
        done = subprocess.run(_cli(common, "simulate", "--backfill", backfill, "--seed", str(seed), "--ids", ids), env=env, check=False)
        if done.returncode != 0:
            raise typer.Exit(done.returncode)
    collector_url = f"http://{settings.host}:{settings.port}"
    dashboard_url = f"http://127.0.0.1:{settings.dashboard_port}"
    children: list[Child] = []
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `timeout`: shut down like Ctrl-C
    try:
        children.append(Child("collector", subprocess.Popen(_cli(common, "serve", "--host", settings.host, "--port", str(settings.port)), env=env)))
        if not _wait_ready(collector_url + "/readyz", children):
            raise typer.Exit(1)
        children.append(Child("scheduler", subprocess.Popen(_cli(common, "scheduler"), env=env)))
        live = ["simulate", "--endpoint", collector_url, "--speed", str(speed), "--seed", str(seed), "--ids", ids]
        for spec in fault:
            live += ["--fault", spec]
        children.append(Child("simulator", subprocess.Popen(_cli(common, *live), env=env)))
        if not no_dashboard:
            children.append(Child("dashboard", subprocess.Popen(_cli(common, "dashboard", "--port", str(settings.dashboard_port)), env=env)))
            _wait_ready(dashboard_url + "/_stcore/health", children)
        console.print(
            "\n[bold]Control Tower demo is running[/]\n"
            f"  dashboard   {dashboard_url if not no_dashboard else '(not started)'}\n"
            f"  collector   {collector_url}  (POST /v1/events, /v1/traces; GET /v1/sla, /v1/transactions?q=…, /metrics)\n"
            f"  faults      {', '.join(fault) or 'none'}\n"
            f"  ids         {ids} (`--ids shared`: one correlation ID per order)\n"
            "  Ctrl-C stops everything.\n"
        )
        while all(c.process.poll() is None for c in children):
            time.sleep(0.5)
        gone = next(c for c in children if c.process.poll() is not None)
        console.print(f"[red]{gone.name} stopped (exit code {gone.process.returncode}); shutting down[/]")
    except KeyboardInterrupt:
        console.print("\nstopping …")
    finally:
        _stop(children)
        context.engine.dispose()
        if not settings.database_url:
            stop_embedded(settings.data_dir)
        console.print("stopped")


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

