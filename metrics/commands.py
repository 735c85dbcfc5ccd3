"""CLI commands of the metrics room: `sla`, `slas check`, `reconcile`, `funnel`, `identity
orphans|duplicates|hubs` and (from `metrics.exceptions_commands`) `exceptions ...`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from controltower import funnel
from controltower.clitools import (
    context_of,
    fail,
    line,
    plain,
    print_json,
    print_table,
    settings_of,
)
from controltower.context import AppContext
from controltower.settings import parse_duration
from controltower.vocab import human_duration
from metrics import compute, definitions, exceptions_commands, jobs, reconcile, signallists, signals

HEALTH_STYLE = {"ok": "green", "warn": "yellow", "critical": "bold red"}
slas_app = typer.Typer(help="SLA definition files.", no_args_is_help=True)
identity_app = typer.Typer(help="What the identity graph signals: orphans, duplicate orders, hubs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("sla")(sla_command)
    app.add_typer(slas_app, name="slas")
    app.command("reconcile")(reconcile_command)
    app.command("funnel")(funnel_command)
    app.add_typer(identity_app, name="identity")
    exceptions_commands.register(app)  # the exception work queue (`controltower exceptions ...`)


def _dump(value: Any) -> None:
    print_json(value)


def _ms(value: Any) -> str:
    return human_duration(value) if value is not None else "-"


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
        jobs.refresh(context.engine, defs, now, context.settings)
    with context.engine.connect() as conn:
        table = compute.sla_table(conn, defs, window=span, now=now, channel=channel)
        cards = compute.scorecards(conn, defs, now=now)
    if as_json:
        _dump({"window": window, "as_of": now.isoformat(), "slas": table, "scorecards": cards})
        return
    if not table:
        line(f"no SLA data in the last {window} (is anything sending events? try `controltower simulate`)")
        return
    rows = []
    for r in table:
        within = r.get("within_target_ratio")
        budget = r.get("error_budget_remaining")
        value = _ms(r.get("value")) if r.get("kind") in ("freshness", "absence", "dlq_not_empty") else None
        threshold = r.get("threshold")
        rows.append((
            r.get("sla"), r.get("channel"), r["count"] if r.get("count") is not None else "-",
            value or _ms(r.get("p50_ms")), _ms(r.get("p95_ms")), _ms(r.get("p99_ms")),
            _ms(r["target_ms"]) if r.get("target_ms") else (f"{threshold:g}" if threshold is not None else "-"),
            f"{within:.1%}" if within is not None else "-", r.get("open_breaches") or 0,
            _ms(r.get("oldest_breach_ms")), f"{budget:.0%}" if budget is not None else "-", r.get("health"),
        ))
    names = ("SLA", "channel", "count", "p50", "p95", "p99", "target", "within", "open", "oldest", "budget", "health")
    print_table(names, rows, title=f"SLAs over the last {window}", right=names[2:-1],
                styles={len(names) - 1: lambda h: HEALTH_STYLE.get(h, "")})
    for r in table:
        if r.get("reason") and r.get("health") != "ok":
            line(f"{r['channel']}: {r['reason']}", style=HEALTH_STYLE.get(r["health"]))
    for card in cards:
        if card.get("orders"):
            line(
                f"scorecard {card['channel']} {card['metric']}: {card['rate']:.2%} of {card['orders']} (limit {card['limit']:.0%}),"
                f" {card['late_orders_left']} more late orders allowed"
            )


@slas_app.command("check")
def slas_check(
    file: Path = typer.Argument(None, help="SLA definitions YAML (default: the configured or shipped file)."),
) -> None:
    """Validate an SLA definitions file; errors name the line."""
    defs = definitions.load(file)
    for warning in defs.warnings:
        line(f"warning: {warning}", style="yellow")
    calendars = f", {len(defs.calendars)} calendars" if defs.calendars else ""
    line(f"{defs.source}: {len(defs.slas)} SLAs, {len(defs.hops)} hops, {len(defs.scorecards)} scorecards{calendars}: ok")


@slas_app.command("list")
def slas_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Print the SLA definitions in effect."""
    defs = jobs.load_definitions(settings_of(ctx))
    rows = []
    for s in defs.slas:
        detail = f"{s.from_milestone} → {s.to_milestone}" if s.is_latency else (s.milestone or s.metric or "")
        rows.append({"name": s.name, "kind": s.kind, "measures": detail})
    if as_json:
        print_json({"slas": rows})
        return
    print_table(("SLA", "kind", "measures"), [(r["name"], r["kind"], r["measures"]) for r in rows])


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
        line(f"{result['report_orders']} orders in the report, {result['matched']} collected, "
             f"{len(result['missing'])} never seen, {len(result['extra'])} not in the report")
        for m in result["missing"][:50]:
            line(f"  never seen {plain(m['order'])} (report line {m['line']})", style="red")
        for e in result["extra"][:50]:
            line(f"  not in report {plain(e['external_order_id'] or e['order_id'])} ({plain(e['correlation_id'])})", style="yellow")
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
        steps = funnel.funnel(conn, channel=channel, day=the_day)
    if as_json:
        _dump(steps)
        return
    top = steps[0]["orders"] or 1
    for s in steps:
        bar = "█" * round(30 * s["orders"] / top)
        line(f"{plain(s['milestone']):<30} {s['orders']:>7}  {bar}")


def _moment(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{name}: {text!r} is not an ISO date or time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_LIMIT = typer.Option(signallists.PAGE_DEFAULT, "--limit", "-n", help=f"At most this many (1..{signallists.PAGE_LIMIT}).")
_OFFSET = typer.Option(0, "--offset", help="Skip this many (paging).")
_CHANNEL = typer.Option(None, "--channel", "-c", help="Only this channel (unknown: none known).")
_REFRESH = typer.Option(True, "--refresh/--no-refresh", help="Bring the signals up to date first.")
_JSON = typer.Option(False, "--json", help="Print JSON for machines.")


def _identity_list(
    ctx: typer.Context, name: str, refresh: bool, limit: int, offset: int, **filters: str | None
) -> tuple[AppContext, datetime]:
    """Check the options (a bad one is one line and exit 1), open the database, bring the signals
    up to date if asked; returns the context and the moment the list is as of."""
    problem = signallists.check(name, limit, offset, filters)
    if problem:
        fail(f"--{problem}")
    context = context_of(ctx)
    now = datetime.now(UTC)
    if refresh:
        signals.refresh(context.engine, jobs.load_definitions(context.settings), now, context.settings)
    return context, now


def _keys_text(keys: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind}={', '.join(values)}" for kind, values in sorted(keys.items()))


@identity_app.command("orphans")
def identity_orphans(
    ctx: typer.Context,
    channel: str = _CHANNEL,
    system: str = typer.Option(None, "--system", "-s", help="Only this system (unknown: none known)."),
    limit: int = _LIMIT,
    offset: int = _OFFSET,
    refresh: bool = _REFRESH,
    as_json: bool = _JSON,
) -> None:
    """Business transactions whose identity keys link to no channel order or return, newest first."""
    context, now = _identity_list(ctx, "orphans", refresh, limit, offset, channel=channel, system=system)
    with context.engine.connect() as conn:
        rows = signallists.orphans(conn, now=now, channel=channel, system=system, limit=limit, offset=offset)
        counts = signallists.orphan_counts(conn)
    if as_json:
        print_json({"as_of": now.isoformat(), "orphans": rows, "counts": counts})
        return
    total = sum(c["orphans"] for c in counts)
    if not total:
        line("no orphans: every business transaction with an identity key has its order or return")
        return
    by = ", ".join(f"{c['system']}/{c['channel']} {c['orphans']}" for c in counts)
    line(f"{total} orphan{'s' if total != 1 else ''} (system/channel: {by})")
    print_table(
        ("correlation id", "system", "channel", "age", "milestones", "keys", "members"),
        [(r["correlation_id"], r["system"], r["channel"], _ms(r["age_ms"]), ", ".join(r["milestones"]),
          _keys_text(r["keys"]), len(r["correlation_ids"])) for r in rows],
        right=("members",),
    )


@identity_app.command("duplicates")
def identity_duplicates(
    ctx: typer.Context,
    channel: str = _CHANNEL,
    limit: int = _LIMIT,
    offset: int = _OFFSET,
    refresh: bool = _REFRESH,
    as_json: bool = _JSON,
) -> None:
    """Channel orders posted to the ERP as two or more documents, newest first."""
    context, now = _identity_list(ctx, "duplicates", refresh, limit, offset, channel=channel)
    with context.engine.connect() as conn:
        rows = signallists.duplicates(conn, channel=channel, limit=limit, offset=offset)
    if as_json:
        print_json({"as_of": now.isoformat(), "duplicates": rows})
        return
    if not rows:
        line("no duplicate orders" + (f" at offset {offset}" if offset else ""))
        return
    print_table(
        ("correlation id", "channel", "order id", "received", "ERP documents", "members"),
        [(r["correlation_id"], r["channel"], r["order_id"], r["received_at"], ", ".join(r["erp_documents"]),
          ", ".join(r["correlation_ids"])) for r in rows],
    )


@identity_app.command("hubs")
def identity_hubs(
    ctx: typer.Context,
    kind: str = typer.Option(None, "--kind", "-k", help="Only this key (tracking_number, erp_document, ...)."),
    limit: int = _LIMIT,
    offset: int = _OFFSET,
    as_json: bool = _JSON,
) -> None:
    """Identity values on more correlation ids than the fan-out limit: they link none of them."""
    context, now = _identity_list(ctx, "hubs", False, limit, offset, kind=kind)
    with context.engine.connect() as conn:
        rows = signallists.hubs(conn, kind=kind, limit=limit, offset=offset)
    if as_json:
        print_json({"as_of": now.isoformat(), "hubs": rows})
        return
    if not rows:
        line("no hubs: no identity value is on more correlation ids than the fan-out limit")
        return
    print_table(
        ("kind", "value", "fan-out", "first seen", "last seen"),
        [(r["kind"], r["value"], r["fanout"], r["first_seen_at"], r["last_seen_at"]) for r in rows],
        right=("fan-out",),
    )
