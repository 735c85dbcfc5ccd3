"""CLI commands of the collectors room: `import`, `watch` and `search`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer

from controltower import transactions
from controltower.clitools import console, context_of, fail


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("watch")(watch_command)
    app.command("search")(search_command)


def _sink(ctx: typer.Context) -> Any:
    from collectors.masking import Masker, MaskingRules
    from collectors.store import EventStore

    context = context_of(ctx)
    store = EventStore(context.engine, context.settings, Masker(MaskingRules.load(context.settings.masking_rules)))

    def sink(records: list[dict[str, Any]], source: str) -> Any:
        return store.ingest(records, source=source, now=datetime.now(UTC))

    return sink


def import_command(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="CSV or JSONL files (optionally .gz) in the canonical shape."),
    batch_size: int = typer.Option(5000, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Import batch feeds; re-importing the same file stores nothing twice."""
    from collectors.files import import_files

    report = import_files(files, _sink(ctx), batch_size=batch_size, progress=not quiet)
    console.print(report.summary(), highlight=False)
    if getattr(report, "errors", None):
        raise typer.Exit(2)


def watch_command(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="Drop folder to watch."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between polls."),
) -> None:
    """Watch a drop folder: import new files, move them to processed/ or quarantine/."""
    from collectors.dropfolder import watch_folder

    if not folder.is_dir():
        fail(f"{folder}: not a folder")
    stop = threading.Event()
    console.print(f"watching {folder} (Ctrl-C to stop)")
    try:
        watch_folder(folder, _sink(ctx), stop=stop, interval=interval, on_report=_print_report)
    except KeyboardInterrupt:
        stop.set()


def _print_report(report: Any) -> None:
    state = "processed" if report.ok else "[red]quarantined[/]"
    console.print(f"{report.path.name}: {report.accepted} stored, {report.duplicates} already present, {len(report.errors)} rejected → {state}")


def verdict_line(verdict: dict[str, Any]) -> str:
    """One SLA verdict as a line; a deadline SLA has no target and may have no elapsed time."""
    elapsed, target = verdict.get("elapsed_ms"), verdict.get("target_ms")
    timing = f"{elapsed / 1000:.0f}s" if elapsed is not None else "-"
    timing += f" of {target / 1000:.0f}s" if target is not None else ""
    return f"  SLA {verdict['sla']}: {verdict['state']} ({timing})"


def search_command(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Order id, correlation id, marketplace order number, SKU or tracking number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Find a transaction by any of its keys and print its timeline."""
    from collectors.masking import Masker, MaskingRules

    context = context_of(ctx)
    # identifiers carrying personal data are stored as tokens: look up what was stored
    stored_key = Masker(MaskingRules.load(context.settings.masking_rules)).mask_identifier(key)
    with context.engine.connect() as conn:
        hits = transactions.search(conn, stored_key, limit=20)
        found = [transactions.get(conn, h["correlation_id"], now=datetime.now(UTC)) for h in hits[:1]]
    if as_json:
        typer.echo(orjson.dumps({"results": hits, "transaction": found[0] if found else None}, option=orjson.OPT_INDENT_2).decode())
        if not hits:
            raise typer.Exit(1)
        return
    if not hits:
        fail(f"nothing found for {key!r} (searched order ids, correlation ids and business keys)")
    if len(hits) > 1:
        console.print(f"{len(hits)} transactions match {key!r}; newest first:")
        for h in hits:
            console.print(f"  {h['correlation_id']}  {h['channel']}  {h['order_id'] or '-'}  {h['status']}  last {h['last_event_at']}")
    tx = found[0]
    assert tx is not None
    console.print(f"[bold]{tx['correlation_id']}[/]  channel {tx['channel']}  order {tx['order_id'] or '-'}  status {tx['status']}")
    for kind, values in tx["keys"].items():
        console.print(f"  {kind}: {', '.join(values)}")
    for verdict in tx["sla"]:
        console.print(verdict_line(verdict), highlight=False)
    for e in tx["events"]:
        err = f"  [red]{e.get('error_code', '')} {e.get('error_message', '')}[/]" if e["status"] != "ok" else ""
        console.print(f"  {e['occurred_at']}  {e.get('system', '-'):<12} {e['flow']}.{e['stage']:<22} {e['status']}{err}", highlight=False)
