"""CLI of guarded replay: `controltower replay request|approve|cancel|list|run`.

Parses arguments and calls one function each: the guards live in `controltower.replayops`, the
sending in `collectors.replay`. The taps file (`--config`, else CONTROLTOWER_TAPS_FILE) gives the
`replay:` section and, for `run`, the taps whose dead-letter queues are replayed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from controltower import replayops
from controltower.clitools import console, context_of, line, print_json, print_table, settings_of
from controltower.errors import ConfigError
from controltower.replayconfig import ReplayConfig, load_replay

replay_app = typer.Typer(name="replay", help="Guarded replay of failed messages (dead-letter queues, stored payloads).",
                         no_args_is_help=True)
_CONFIG = typer.Option(None, "--config", help="taps.yaml with a replay: section; default CONTROLTOWER_TAPS_FILE.")


def register(app: typer.Typer) -> None:
    app.add_typer(replay_app, name="replay")


def _taps_file(ctx: typer.Context, config: Path | None) -> Path:
    path = config or getattr(settings_of(ctx), "taps_file", None)
    if path is None:
        raise ConfigError("no taps file: pass --config taps.yaml or set CONTROLTOWER_TAPS_FILE")
    return Path(path)


def _replay_config(ctx: typer.Context, config: Path | None) -> ReplayConfig:
    return load_replay(_taps_file(ctx, config))


@replay_app.command("request")
def request_command(
    ctx: typer.Context,
    correlation_id: list[str] = typer.Option([], "--correlation-id", "-c", help="Replay this transaction's failed message."),
    group: int = typer.Option(None, "--group", help="Replay every occurrence of this exception group (paced)."),
    by: str = typer.Option(..., "--by", help="Who asks (recorded; an approver must be someone else)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent; record nothing."),
    confirm_duplicate: bool = typer.Option(False, "--confirm-duplicate", help="Replay even if already reached."),
    as_json: bool = typer.Option(False, "--json"),
    config: Path = _CONFIG,
) -> None:
    """Ask for a replay: the guards decide (duplicate, approval), the executor sends it."""
    cfg = _replay_config(ctx, config)
    plan = replayops.request_replay(context_of(ctx).engine, config=cfg, correlation_ids=correlation_id, group_id=group,
                                    by=by, now=datetime.now(UTC), dry_run=dry_run, confirm_duplicate=confirm_duplicate)
    if as_json:
        print_json({"batch": plan.batch, "dry_run": plan.dry_run, "items": [vars(i) for i in plan.items]})
        return
    print_table(["id", "correlation id", "flow", "target", "status", "reason"],
                [(i.id or "-", i.correlation_id, i.flow or "", i.target or "", i.status, i.reason) for i in plan.items],
                title=("dry run: nothing recorded" if dry_run else f"batch {plan.batch}"))
    if dry_run:
        for item in plan.accepted:
            print_json({"correlation_id": item.correlation_id, **item.preview})


@replay_app.command("approve")
def approve_command(ctx: typer.Context, request_id: int = typer.Argument(...),
                    by: str = typer.Option(..., "--by", help="Who approves (not the requester).")) -> None:
    """Approve a replay of a money-moving flow (a second person)."""
    row = replayops.approve_replay(context_of(ctx).engine, request_id, by, datetime.now(UTC))
    line(f"replay {row['id']} approved by {by}")


@replay_app.command("cancel")
def cancel_command(ctx: typer.Context, request_id: int = typer.Argument(None),
                   batch: str = typer.Option(None, "--batch"), group: int = typer.Option(None, "--group"),
                   by: str = typer.Option(..., "--by")) -> None:
    """Cancel what is not sent yet: one request, a bulk batch or an exception group's replays."""
    n = replayops.cancel_replay(context_of(ctx).engine, by=by, now=datetime.now(UTC), request_id=request_id,
                                batch=batch, group_id=group)
    line(f"{n} replay(s) cancelled")


@replay_app.command("list")
def list_command(ctx: typer.Context, as_json: bool = typer.Option(False, "--json"), config: Path = _CONFIG) -> None:
    """Replay requests, newest first, with when the replayed transaction then reached its milestone."""
    cfg = _replay_config(ctx, config) if (config or getattr(settings_of(ctx), "taps_file", None)) else None
    rows = replayops.list_replays(context_of(ctx).engine, cfg)
    if as_json:
        print_json(rows)
        return
    print_table(["id", "created", "by", "flow", "correlation id", "status", "approved by", "produced", "outcome"],
                [(r["id"], r["created_at"], r["requested_by"], r["flow"], r["correlation_id"], r["status"],
                  r["approved_by"] or "", r["produced_at"] or "", r["outcome"] or "") for r in rows])


@replay_app.command("run")
def run_command(ctx: typer.Context, config: Path = _CONFIG, limit: int = typer.Option(100, "--limit")) -> None:
    """Send the approved replays that are due, once (the scheduler and `controltower tap` do it continuously)."""
    report = run_due(ctx, _taps_file(ctx, config), limit=limit)
    console.print(report.summary(), highlight=False)


def run_due(ctx: typer.Context, path: Path, *, limit: int) -> Any:
    from collectors.replayjobs import ReplayRunner

    return ReplayRunner(context_of(ctx), path).run(datetime.now(UTC), limit=limit, clock=lambda: datetime.now(UTC))
