"""Core CLI commands: `migrate`, `serve` (the collector) and `keys`.

Composition root like `wiring.cli`: `serve` mounts every room's routes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import typer

from controltower import apikeys, distribute, migrate
from controltower.clitools import console, context_of, fail, keys_json, print_json, settings_of
from controltower.db import redact, resolve_url
from controltower.settings import ENV_PREFIX, parse_duration
from wiring import grantcommands

keys_app = typer.Typer(help="API keys for ingest and read access (stored hashed).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
    app.command("retention")(retention_command)
    app.command("relink")(relink_command)
    grantcommands.register(app)  # grant, grant-readonly


def retention_command(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be removed."),
) -> None:
    """Drop expired event partitions and delete expired rows in batches (the scheduler does it hourly)."""
    from controltower import retention

    context = context_of(ctx)
    if dry_run:
        console.print(retention.plan(context.engine, context.settings).summary(), highlight=False)
        return
    try:
        done = retention.apply(context.engine, context.settings)
    except retention.RetentionError as exc:  # the other tables ran: say what they removed, then fail
        console.print("removed:\n" + exc.plan.summary(), highlight=False)
        raise
    console.print("removed:\n" + done.summary(), highlight=False)


def relink_command(
    ctx: typer.Context,
    chunk: int = typer.Option(2000, "--chunk", min=1, max=100_000, help="Correlation IDs per database transaction."),
) -> None:
    """Rebuild the business transactions from the stored keys after CONTROLTOWER_IDENTITY_KEYS or
    CONTROLTOWER_LINK_FANOUT_LIMIT changed. Online: ingest keeps running; memory stays bounded."""
    from contextlib import contextmanager

    import sqlalchemy as sa
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from controltower import linking

    context = context_of(ctx)
    engine, settings = context.engine, context.settings

    @contextmanager
    def connect():
        with engine.begin() as conn:
            yield conn.connection.driver_connection

    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar_one()
    columns = (TextColumn("relinking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("relink", total=total)
        stats = linking.relink(
            connect, kinds=settings.identity_keys, limit=settings.link_fanout_limit,
            now=datetime.now(UTC), chunk=chunk, progress=lambda n: bar.advance(task, n),
        )
    console.print(
        f"relinked {stats.transactions:,} correlation IDs by {', '.join(settings.identity_keys) or 'no keys'} "
        f"(fan-out limit {settings.link_fanout_limit}): {stats.moved:,} moved, {stats.merged:,} business "
        f"transactions merged away, {stats.new_hubs:,} new hubs",
        highlight=False,
    )


def migrate_command(
    ctx: typer.Context,
    distributed: bool = typer.Option(
        False, "--distributed",
        help="Then distribute the schema on a Citus coordinator (checks the extension and the workers; re-running is a no-op).",
    ),
    shards: int = typer.Option(
        distribute.SHARD_COUNT, "--shards", min=1, max=4096,
        help="Shards of the distributed tables when first distributed (2-4 per worker core is a good start).",
    ),
) -> None:
    """Apply pending schema migrations (every room's branch) and create partitions ahead."""
    context = context_of(ctx, migrate_first=False)
    applied = migrate.upgrade(context.engine)
    with context.engine.connect() as conn:
        parts = migrate.event_partitions(conn)
    console.print(
        f"database {redact(str(context.engine.url))}: "
        + (f"applied {', '.join(applied)}" if applied else "already current")
        + f"; {len(parts)} event partitions"
    )
    if distributed:
        done = distribute.distribute(context.engine, shard_count=shards)
        changed = done.distributed + done.reference
        console.print(
            f"citus {done.citus_version} with {done.workers} workers: "
            + (f"distributed {', '.join(done.distributed) or 'none'}; reference {', '.join(done.reference) or 'none'}"
               if changed else "already distributed")
            + f"; {len(done.already)} tables already in place",
            highlight=False,
        )


def serve_command(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", help="Listen address (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Listen port (default 4318, the OTLP/HTTP port)."),
    workers: int = typer.Option(None, "--workers", help="Worker processes."),
) -> None:
    """Run the collector: OTLP/HTTP traces, the events API, search, SLA and alert read routes."""
    from wiring import server

    settings = settings_of(ctx).with_(**{k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None})
    url = resolve_url(settings)  # starts the embedded database once, before any worker
    context = context_of(ctx)
    context.engine.dispose()
    settings = settings.with_(database_url=url)
    # Workers rebuild their settings from the environment: hand them what the flags decided.
    os.environ[ENV_PREFIX + "DATABASE_URL"] = url
    console.print(f"collector on http://{settings.host}:{settings.port} (database {redact(url)})")
    server.serve(settings, workers=max(1, settings.workers))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Who uses the key, e.g. the source system."),
    scope: list[str] = typer.Option(["ingest"], "--scope", help="ingest and/or read (repeatable)."),
    expires: str = typer.Option(None, "--expires", help="Lifetime, e.g. 90d; default never."),
) -> None:
    """Create a key and print it once; only its hash is stored."""
    context = context_of(ctx)
    expires_at = None
    if expires:
        lifetime = parse_duration(expires, where="--expires")
        if lifetime <= 0:
            fail(f'--expires: "{expires}" would create a key that is already expired')
        expires_at = datetime.now(UTC) + timedelta(seconds=lifetime)
    token = apikeys.create(context.engine, name, tuple(scope), expires_at)
    console.print(f"key for {name} (scopes: {', '.join(scope)}); store it now, it is not shown again:")
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """List keys (names, prefixes, scopes; never the keys themselves)."""
    context = context_of(ctx)
    rows = apikeys.list_keys(context.engine)
    if as_json:
        print_json({"keys": [keys_json(r, datetime.now(UTC)) for r in rows]})
        return
    if not rows:
        console.print("no keys: ingest is open (create one with `controltower keys create NAME`)")
    now = datetime.now(UTC)
    if rows and all(apikeys.key_state(r, now=now) != "active" for r in rows):
        console.print("no active key: every request is refused until one is created")
    for r in rows:
        state = apikeys.key_state(r, now=now)
        console.print(f"{r['name']}\tct_{r['prefix']}_…\t{','.join(r['scopes'])}\t{state}\tcreated {r['created_at']:%Y-%m-%d}")


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, name: str = typer.Argument(..., help="Key name or prefix.")) -> None:
    """Revoke a key (takes effect within seconds on every collector)."""
    context = context_of(ctx)
    if not apikeys.revoke(context.engine, name, now=datetime.now(UTC)):
        fail(f"no active key named or prefixed {name!r}")
    console.print(f"revoked {name}")
