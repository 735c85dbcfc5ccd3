"""CLI commands for incidents, added to `controltower alerts` by `alerts.commands.register`.

    controltower alerts incidents [--all] [--json]
    controltower alerts incident ID [--json]
    controltower alerts incident-ack ID --by NAME

They call the core operations (`controltower.alertops`) and print; nothing else.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

import typer

from alerts.commands import alerts_app
from controltower.clitools import console, context_of, fail, line, plain, print_json, print_table
from controltower.errors import ControlTowerError


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = _when(v)
        elif isinstance(v, list):
            out[k] = [_jsonable(x) if isinstance(x, dict) else x for x in v]
        elif k == "impact" and isinstance(v, dict):
            out[k] = {ik: iv for ik, iv in v.items() if ik != "by_alert"}
        else:
            out[k] = v
    return out


def _impact(row: dict[str, Any]) -> str:
    impact = row.get("impact") or {}
    text = f"{impact.get('orders_at_risk', 0)} orders"
    if "order_value_at_risk" in impact:
        text += f", {impact['order_value_at_risk']:.2f}"
    return text


@alerts_app.command("incidents")
def incidents_command(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Also resolved incidents."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Incidents: alerts grouped by their likely cause (open and acknowledged; --all adds resolved)."""
    from controltower.alertops import INCIDENT_STATES, list_incidents

    states = INCIDENT_STATES if show_all else ("open", "acknowledged")
    rows = list_incidents(context_of(ctx).engine, states)
    if as_json:
        print_json({"incidents": [_jsonable(r) for r in rows]})
        return
    if not rows:
        console.print("no incidents")
        return
    print_table(
        ("id", "state", "since", "alerts", "channels", "impact", "title"),
        [(r["id"], r["state"], _when(r["opened_at"]), r["alert_count"], ", ".join(r["channels"] or []),
          _impact(r), r["title"]) for r in rows],
    )


@alerts_app.command("incident")
def incident_command(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Incident id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """One incident: its alerts and its timeline."""
    from controltower.alertops import get_incident

    try:
        row = get_incident(context_of(ctx).engine, incident_id)
    except ControlTowerError as exc:
        fail(str(exc))
    if as_json:
        print_json(_jsonable(row))
        return
    line(f"incident {row['id']} ({row['state']}): {plain(row['title'])}")
    for a in row["alerts"]:
        line(f"  {a['fingerprint']} {a['rule']} {a['labels'].get('channel', '')} {a['state'] or ''}: {plain(a['summary'])}")
    for e in row["timeline"]:
        line(f"  {_when(e['at'])} {plain(e['text'])}")


@alerts_app.command("incident-ack")
def incident_ack_command(
    ctx: typer.Context,
    incident_id: int = typer.Argument(..., help="Incident id."),
    by: str = typer.Option(None, "--by", help="Who acknowledges (default: the current user).", show_default=False),
) -> None:
    """Acknowledge an incident and its alerts: no repeat notifications until it resolves."""
    from controltower.alertops import acknowledge_incident

    try:
        row = acknowledge_incident(context_of(ctx).engine, incident_id, by or getpass.getuser(), datetime.now(UTC))
    except ControlTowerError as exc:
        fail(str(exc))
    line(f"acknowledged incident {row['id']} by {plain(row['acknowledged_by'])}: {plain(row['title'])}")
