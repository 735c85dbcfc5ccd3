"""CLI commands of the `simulator` room, registered by the composition root."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer

from controltower.clitools import console, context_of, fail, settings_of
from controltower.errors import ConfigError, ControlTowerError
from controltower.settings import parse_duration


def register(app: typer.Typer) -> None:
    """Add this room's commands to `app`."""
    app.command("simulate")(simulate_command)


def simulate_command(
    ctx: typer.Context,
    endpoint: str = typer.Option("http://127.0.0.1:4318", "--endpoint", help="Collector base URL (live mode)."),
    speed: float = typer.Option(60.0, "--speed", help="Simulated seconds per wall second until caught up with real time."),
    seed: int = typer.Option(7, "--seed", help="Same seed, same window: same events."),
    backfill: str | None = typer.Option(None, "--backfill", help="History to write straight into the database, e.g. 7d, 6h."),
    fault: list[str] = typer.Option([], "--fault", help="KIND[:CHANNEL[:LOCATION]]\\[@START][+DURATION], e.g. erp_outage@10m+30m, slow_ack:walmart@1h+2h; repeatable or comma-separated."),
    duration: str | None = typer.Option(None, "--duration", help="Live run length (wall time); default until Ctrl-C."),
    catch_up: str | None = typer.Option(None, "--catch-up", help="How far behind real now the live clock starts (it runs --speed times faster until caught up); default 6h, or what --duration fills."),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiplier of order volume."),
    ids: str = typer.Option("shared", "--ids", help="shared: every hop of an order under one correlation ID; real: each system (connector, ERP, WMS, carrier) under its own IDs with only the keys it knows, plus split shipments, ERP duplicates and orphans (what `controltower demo` runs)."),
    truth: Path | None = typer.Option(None, "--truth", help="Ground-truth JSON (default <data_dir>/simulator-truth.json)."),
    drop_folder: Path | None = typer.Option(None, "--drop-folder", help="Write the 3PL's shipment feed here as files (live mode)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="CONTROLTOWER_API_KEY", help="Ingest key, when keys are required."),
) -> None:
    """Simulate retail integration traffic with optional faults, and write its ground truth.

    --backfill alone writes history into the database and exits; without it, or with --duration as well, events go live to the collector over HTTP.
    """
    from simulator.emit import FileSink, HttpSink, StoreSink
    from simulator.faults import parse_faults
    from simulator.identities import IDS_MODES
    from simulator.run import check_window, live_lead, simulate

    settings = settings_of(ctx)
    try:
        specs = parse_faults(fault)
        history = parse_duration(backfill, where="--backfill") if backfill else 0.0
        wall = parse_duration(duration, where="--duration") if duration else None
        if rate_scale < 0:
            raise ConfigError(f"--rate-scale: {rate_scale} is negative")
        if ids not in IDS_MODES:
            raise ConfigError(f"--ids: {ids!r} is not one of {', '.join(IDS_MODES)}")
        live = not history or wall is not None
        lead = parse_duration(catch_up, where="--catch-up") if catch_up else live_lead(speed, wall)
        check_window(history, lead if live else 0.0, settings)
    except ConfigError as exc:
        fail(str(exc))
    stop = threading.Event()
    options: dict[str, Any] = {
        "seed": seed, "faults": specs, "rate_scale": rate_scale, "ids": ids, "backfill": history,
        "speed": speed, "duration": wall, "stop": stop, "progress": True,
        "truth_path": truth or settings.data_dir / "simulator-truth.json", "lead": lead,
    }
    if history:
        options["store"] = StoreSink(context_of(ctx).engine, settings)
    if live:
        options["live"] = HttpSink(endpoint, api_key, span_share=0.1, stop=stop)
        options["files"] = FileSink(drop_folder) if drop_folder else None
        console.print(f"simulating live to {endpoint} at speed {speed:g} (Ctrl-C to stop)")
    _report(_run_interruptible(simulate, options, stop), options["truth_path"])


def _run_interruptible(run: Any, options: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Run in a worker thread so Ctrl-C only sets `stop` and the run ends cleanly with its truth."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["truth"] = run(**options)
        except Exception as exc:  # thread boundary: report it as one line, not a traceback
            outcome["error"] = str(exc) if isinstance(exc, ControlTowerError) else f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=work, name="simulator", daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            worker.join(0.5)
        except KeyboardInterrupt:
            console.print("stopping…")
            stop.set()
    if "error" in outcome:
        fail(outcome["error"])
    return outcome["truth"]  # type: ignore[no-any-return]


def _report(truth: dict[str, Any], path: Path) -> None:
    for name, totals in truth["sinks"].items():
        console.print(
            f"{name}: {totals['sent']} sent, {totals['accepted']} stored, {totals['duplicates']} duplicates, "
            f"{totals['rejected']} rejected" + (f", {totals['spans']} as spans" if totals["spans"] else "")
            + (f", {totals['files']} files" if totals["files"] else ""),
            highlight=False,
        )
    console.print(
        f"{truth['events_total']} events ({truth['malformed_records']} malformed, "
        f"{truth['duplicate_records']} duplicate copies, {truth['ids']} ids); {truth['unposted_count']} "
        f"orders unposted, {truth['orphan_count']} orphans, {truth['duplicate_order_count']} duplicate orders "
        f"at {truth['end']}; ground truth in {path}",
        highlight=False,
    )
