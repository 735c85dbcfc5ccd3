"""What every CLI command shares: the settings from the global options, one-line errors, output.

Rooms register their commands with `register(app)` functions and use these helpers; the
composition root (`wiring.cli`) owns the app and the global options.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from controltower.context import AppContext
from controltower.settings import Settings

console = Console()
err_console = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    settings = root.obj["settings"] if isinstance(root.obj, dict) else None
    if settings is None:
        raise RuntimeError("settings were not initialised by the CLI callback")
    return settings  # type: ignore[no-any-return]


def context_of(ctx: typer.Context, *, migrate_first: bool = True, application_name: str = "controltower-cli") -> AppContext:
    """Open the database the settings name (starting the embedded one), migrated unless told not to."""
    from controltower import migrate

    app_ctx = AppContext.open(settings_of(ctx), pool_size=2, application_name=application_name)
    if migrate_first:
        migrate.upgrade(app_ctx.engine)
    return app_ctx


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
