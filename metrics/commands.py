"""CLI commands of the metrics room: `sla`, `slas check`, `reconcile` and `funnel`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.table import Table

from controltower.clitools import console, context_of, fail, settings_of
from controltower.settings import parse_duration
from metrics import compute, definitions, jobs, reconcile

HEALTH_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}
slas_app = typer.Typer(help="SLA definition files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("sla")(sla_command)
    app.add_typer(slas_app, name="slas")
    app.command("reconcile")(reconcile_command)
    app.command("funnel")(funnel_command)


def _dump(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


def sla_command(
    ctx: typer.Context,
    window: str = typer.Option("1h", "--window", "-w", help="Window, e.g. 15m, 1h, 24h, 7d."),
    channel: str = typer.Option(None, "--channel", "-c", help="Only this channel."),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="Bring rollups up to date first."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Recompute every rollup from the raw events."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Print the current SLA table: latency percentiles, open breaches, health per channel."""
    span = timedelta(seconds=parse_duration(window, where="--window"))
    context = context_of(ctx)
    defs = jobs.load_definitions(context.settings)
    now = datetime.now(UTC)
    if rebuild:
        from metrics import rollups

        rollups.rebuild(context.engine, defs, now)
    if refresh or rebuild:
        jobs.refresh(context.engine, defs, now)
    with context.engine.connect() as conn:
        table = compute.sla_table(conn, defs, window=span, now=now, channel=channel)
        cards = compute.scorecards(conn, defs, now=now)
    if as_json:
        _dump({"window": window, "as_of": now.isoformat(), "slas": table, "scorecards": cards})
        return
    if not table:
        console.print(f"no SLA data in the last {window} (is anything sending events? try `controltower simulate`)")
        return
    out = Table(title=f"SLAs over the last {window}", show_lines=False)
    for name in ("SLA", "channel", "count", "p50", "p95", "p99", "target", "within", "open", "oldest", "budget", "health"):
        out.add_column(name, justify="right" if name not in ("SLA", "channel", "health") else "left")
    for r in table:
        within = f"{r['within_target_ratio']:.1%}" if r["within_target_ratio"] is not None else "-"
        budget = f"{r['error_budget_remaining']:.0%}" if r["error_budget_remaining"] is not None else "-"
        value = compute.human_ms(r["value"]) if r["kind"] in ("freshness", "absence") else None
        out.add_row(
            r["sla"], r["channel"], str(r["count"] if r["count"] is not None else "-"),
            value or compute.human_ms(r["p50_ms"]), compute.human_ms(r["p95_ms"]), compute.human_ms(r["p99_ms"]),
            compute.human_ms(r["target_ms"]) if r["target_ms"] else (f"{r['threshold']:g}" if r["threshold"] is not None else "-"),
            within, str(r["open_breaches"] or 0), compute.human_ms(r["oldest_breach_ms"]), budget,
            f"[{HEALTH_STYLE[r['health']]}]{r['health']}[/]",
        )
    console.print(out)
    for r in table:
        if r["reason"] and r["health"] != "ok":
            console.print(f"[{HEALTH_STYLE[r['health']]}]{r['channel']}[/]: {r['reason']}", highlight=False)
    for card in cards:
        if card["orders"]:
            console.print(
                f"scorecard {card['channel']} {card['metric']}: {card['rate']:.2%} of {card['orders']} (limit {card['limit']:.0%}),"
                f" {card['late_orders_left']} more late orders allowed",
                highlight=False,
            )


@slas_app.command("check")
def slas_check(
    file: Path = typer.Argument(None, help="SLA definitions YAML (default: the configured or shipped file)."),
) -> None:
    """Validate an SLA definitions file; errors name the line."""
    defs = definitions.load(file)
    for warning in defs.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"{defs.source}: {len(defs.slas)} SLAs, {len(defs.hops)} hops, {len(defs.scorecards)} scorecards: ok", highlight=False)


@slas_app.command("list")
def slas_list(ctx: typer.Context) -> None:
    """Print the SLA definitions in effect."""
    defs = jobs.load_definitions(settings_of(ctx))
    for s in defs.slas:
        detail = f"{s.from_milestone} → {s.to_milestone}" if s.is_latency else (s.milestone or s.metric or "")
        console.print(f"{s.name:<24} {s.kind:<18} {detail}", highlight=False)


def reconcile_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The channel's own order report (CSV or TSV)."),
    channel: str = typer.Option(..., "--channel", "-c", help="Channel the report comes from."),
    column: str = typer.Option(None, "--column", help="Order number column (default: detected)."),
    since: str = typer.Option(None, "--since", help="Report period start (ISO date/time; default: from the report)."),
    until: str = typer.Option(None, "--until", help="Report period end (exclusive)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare a channel's order report with what was collected: orders we never saw, and the reverse."""
    report = reconcile.read_report(file, column=column)
    bounds = [_moment(v, name) if v else None for v, name in ((since, "--since"), (until, "--until"))]
    context = context_of(ctx)
    with context.engine.connect() as conn:
        result = reconcile.reconcile(conn, report, channel=channel, since=bounds[0], until=bounds[1])
    if as_json:
        _dump(result)
    else:
        console.print(f"{result['report_orders']} orders in the report, {result['matched']} collected, "
                      f"{len(result['missing'])} never seen, {len(result['extra'])} not in the report", highlight=False)
        for m in result["missing"][:50]:
            console.print(f"  [red]never seen[/] {m['order']} (report line {m['line']})", highlight=False)
        for e in result["extra"][:50]:
            console.print(f"  [yellow]not in report[/] {e['external_order_id'] or e['order_id']} ({e['correlation_id']})", highlight=False)
    if result["missing"] or result["extra"]:
        raise typer.Exit(3)


def funnel_command(
    ctx: typer.Context,
    channel: str = typer.Option(..., "--channel", "-c"),
    day: str = typer.Option(None, "--day", help="YYYY-MM-DD (default: today, UTC)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Orders of one channel and day that reached each milestone, and where they stopped."""
    try:
        the_day = date.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        fail(f"--day: {day!r} is not a date like 2026-11-23")
    context = context_of(ctx)
    with context.engine.connect() as conn:
        steps = reconcile.funnel(conn, channel=channel, day=the_day)
    if as_json:
        _dump(steps)
        return
    top = steps[0]["orders"] or 1
    for s in steps:
        bar = "█" * round(30 * s["orders"] / top)
        console.print(f"{s['milestone']:<30} {s['orders']:>7}  {bar}", highlight=False)


def _moment(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{name}: {text!r} is not an ISO date or time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
