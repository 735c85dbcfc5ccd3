"""CLI of the exception work queue: `controltower exceptions list|show|assign|comment|tag|snooze|
resolve|reopen|stats|check`. Parses, calls one `controltower.exceptionops` function, prints.
Every action records `--by` (default: the current user) in the group's audit trail."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from controltower import exceptionops
from controltower.clitools import context_of, fail, line, print_json, print_table
from controltower.errors import ControlTowerError
from controltower.masking import Masker
from controltower.maskrules import MaskingRules
from controltower.settings import parse_duration
from controltower.vocab import human_duration
from metrics import exceptionrules

exceptions_app = typer.Typer(help="The exception work queue: failure groups, their actions and counts.",
                             no_args_is_help=True)
BY = typer.Option(None, "--by", help="Who acts (default: the current user).", show_default=False)
JSON = typer.Option(False, "--json", help="Print JSON for machines.")


def register(app: typer.Typer) -> None:
    app.add_typer(exceptions_app, name="exceptions")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


def _act(ctx: typer.Context, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    context = context_of(ctx)
    try:
        return dict(fn(context.engine, *args, **kwargs))
    except ControlTowerError as exc:
        fail(str(exc))


def _by(by: str | None) -> str:
    return by or getpass.getuser()


def _masker(ctx: typer.Context) -> Masker:
    return Masker(MaskingRules.for_settings(context_of(ctx).settings))


@exceptions_app.command("list")
def list_command(
    ctx: typer.Context,
    state: str = typer.Option("active", "--state", help="open, snoozed, resolved, active (open+snoozed) or all."),
    channel: str = typer.Option(None, "--channel", "-c", help="Only this channel.", show_default=False),
    cls: str = typer.Option(None, "--class", help="Only this class (timeout, mapping, ...).", show_default=False),
    assignee: str = typer.Option(None, "--assignee", help="Only groups assigned to this person (- : unassigned).",
                                 show_default=False),
    limit: int = typer.Option(200, "--limit", help="At most this many groups."),
    as_json: bool = JSON,
) -> None:
    """List exception groups: open first, most open occurrences first."""
    states = {"active": exceptionops.ACTIVE, "all": exceptionops.STATES}.get(state, (state,))
    if any(s not in exceptionops.STATES for s in states):
        fail(f"--state: {state!r} is not one of open, snoozed, resolved, active, all")
    context = context_of(ctx)
    rows = exceptionops.list_groups(context.engine, states=states, channel=channel, cls=cls, assignee=assignee,
                                    limit=limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        line("no exception groups match")
        return
    print_table(
        ("id", "state", "class", "channel", "milestone", "open", "total", "last seen", "assignee", "message"),
        [(r["id"], r["state"], r["class"], r["channel"], r["milestone"], r["open_count"], r["occurrence_count"],
          _when(r["last_seen_at"]), r["assignee"] or "", (r["sample_message"] or r["message"])[:80]) for r in rows],
        title="Exception groups", right=("open", "total"),
    )


@exceptions_app.command("show")
def show_command(ctx: typer.Context, group_id: int = typer.Argument(..., help="Group id."), as_json: bool = JSON) -> None:
    """One group: its occurrences and its audit trail."""
    g = _act(ctx, exceptionops.get_group, group_id)
    if as_json:
        print_json(g)
        return
    line(f"#{g['id']} {g['state']} · {g['class']} · {g['channel']} · {g['milestone']} · "
         f"{g['open_count']} open of {g['occurrence_count']}")
    line(f"message: {g['sample_message'] or g['message']}")
    if g["error_code"]:
        line(f"error code: {g['error_code']}")
    extra = [f"assignee {g['assignee']}" if g["assignee"] else "", f"tags {', '.join(g['tags'])}" if g["tags"] else "",
             f"snoozed until {_when(g['snoozed_until'])}" if g["snoozed_until"] else "",
             f"resolved ({g['resolution']}) by {g['resolved_by']} at {_when(g['resolved_at'])}" if g["resolved_at"] else ""]
    if any(extra):
        line(" · ".join(e for e in extra if e))
    print_table(("correlation id", "source", "at", "count", "awaits", "resolved"),
                [(o["correlation_id"], o["source"], _when(o["at"]), o["count"], ", ".join(o["awaits"]),
                  _when(o["resolved_at"])) for o in g["occurrences"]], title="Occurrences", right=("count",))
    print_table(("at", "who", "action", "via", "detail"),
                [(_when(a["at"]), a["actor"], a["action"], a["via"],
                  ", ".join(f"{k}={v}" for k, v in a["detail"].items())) for a in g["actions"]], title="Audit trail")


@exceptions_app.command("assign")
def assign_command(ctx: typer.Context, group_id: int = typer.Argument(...),
                   assignee: str = typer.Argument(..., help="Who takes it (\"\" to unassign)."), by: str = BY) -> None:
    """Assign a group to someone."""
    _act(ctx, exceptionops.assign, group_id, assignee, _by(by), datetime.now(UTC))
    line(f"#{group_id} assigned to {assignee or 'nobody'}")


@exceptions_app.command("comment")
def comment_command(ctx: typer.Context, group_id: int = typer.Argument(...), text: str = typer.Argument(...),
                    by: str = BY) -> None:
    """Comment on a group (personal data is masked before it is stored)."""
    _act(ctx, exceptionops.comment, group_id, text, _by(by), datetime.now(UTC), masker=_masker(ctx))
    line(f"#{group_id}: comment added")


@exceptions_app.command("tag")
def tag_command(ctx: typer.Context, group_id: int = typer.Argument(...),
                tags: list[str] = typer.Argument(None, help="Tags to add."),
                remove: list[str] = typer.Option(None, "--remove", help="A tag to remove (repeatable)."),
                by: str = BY) -> None:
    """Add tags, or remove them with --remove."""
    row = _act(ctx, exceptionops.tag, group_id, _by(by), datetime.now(UTC), add=tags or [], remove=remove or [])
    line(f"#{group_id} tags: {', '.join(row['tags']) or '(none)'}")


@exceptions_app.command("snooze")
def snooze_command(ctx: typer.Context, group_id: int = typer.Argument(...),
                   duration: str = typer.Option("4h", "--for", help="How long, e.g. 30m, 4h, 2d."), by: str = BY) -> None:
    """Put a group aside; it wakes (opens) by itself after the time."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=parse_duration(duration, where="--for"))
    _act(ctx, exceptionops.snooze, group_id, until, _by(by), now)
    line(f"#{group_id} snoozed until {_when(until)} UTC")


@exceptions_app.command("resolve")
def resolve_command(ctx: typer.Context, group_id: int = typer.Argument(...),
                    note: str = typer.Option("", "--note", help="What was done."), by: str = BY) -> None:
    """Resolve a group by hand (a new occurrence reopens it)."""
    _act(ctx, exceptionops.resolve, group_id, note, _by(by), datetime.now(UTC), masker=_masker(ctx))
    line(f"#{group_id} resolved")


@exceptions_app.command("reopen")
def reopen_command(ctx: typer.Context, group_id: int = typer.Argument(...), by: str = BY) -> None:
    """Open a resolved or snoozed group again."""
    _act(ctx, exceptionops.reopen, group_id, _by(by), datetime.now(UTC))
    line(f"#{group_id} reopened")


@exceptions_app.command("stats")
def stats_command(ctx: typer.Context, days: int = typer.Option(14, "--days", help="Days back."),
                  as_json: bool = JSON) -> None:
    """Manual-exception volume per channel and day, and time-to-resolve (p50/p90) per channel."""
    context = context_of(ctx)
    s = exceptionops.stats(context.engine, datetime.now(UTC), days=max(1, min(days, 366)))
    if as_json:
        print_json(s)
        return
    print_table(("day", "channel", "new occurrences", "resolved by a person", "auto-resolved"),
                [(str(r["day"]), r["channel"], r["occurrences"], r["resolved_manually"], r["resolved_automatically"])
                 for r in s["volume"]], title=f"Exceptions per day (last {s['days']} days)",
                right=("new occurrences", "resolved by a person", "auto-resolved"))
    print_table(("channel", "resolved", "by a person", "p50", "p90"),
                [(r["channel"], r["resolved"], r["manual"], human_duration(r["p50_ms"]), human_duration(r["p90_ms"]))
                 for r in s["time_to_resolve"]], title="Time to resolve", right=("resolved", "by a person", "p50", "p90"))


@exceptions_app.command("check")
def check_command(file: Path = typer.Argument(None, help="exceptions.yaml (default: the shipped file).")) -> None:
    """Validate an exceptions file; errors name the line."""
    rules = exceptionrules.load(file)
    line(f"{rules.source}: {len(rules.rules)} rules, quiet_minutes {rules.quiet_minutes}: ok")
