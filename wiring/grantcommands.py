"""CLI: `controltower grant collector|scheduler|dashboard ROLE` (and the older `grant-readonly`).

Parses, calls `controltower.grants.apply` as the connecting user (the schema's owner), prints
one line per role. The policy itself lives in `controltower.grants`.
"""

from __future__ import annotations

import os

import typer

from controltower import grants
from controltower.clitools import console, context_of, fail


def register(app: typer.Typer) -> None:
    app.command("grant")(grant_command)
    app.command("grant-readonly")(grant_readonly_command)


def grant_command(
    ctx: typer.Context,
    process: str = typer.Argument(..., help="collector, scheduler or dashboard: whose privileges the role gets."),
    role: str = typer.Argument(..., help="The PostgreSQL login role that process connects as."),
    password_env: str = typer.Option(
        None, "--password-env", metavar="VAR",
        help="Create the role (or reset its password) with the password in environment variable VAR.",
        show_default=False,
    ),
) -> None:
    """Give a role exactly what one process needs (run as the schema's owner after `migrate`)."""
    if process not in grants.PROCESSES:
        fail(f"process {process!r}: expected one of {', '.join(grants.PROCESSES)}")
    _grant(ctx, process, role, password_env)


def grant_readonly_command(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="An existing PostgreSQL role (create it with a password first)."),
) -> None:
    """Alias of `grant dashboard ROLE`: read every table, acknowledge alerts, create silences."""
    _grant(ctx, "dashboard", role, None)


def _grant(ctx: typer.Context, process: str, role: str, password_env: str | None) -> None:
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            fail(f"--password-env {password_env}: that environment variable is not set or empty")
    context = context_of(ctx)
    created = False
    try:
        with context.engine.begin() as conn:
            if password is not None:
                created = grants.ensure_login(conn, role, password)
            grants.apply(conn, process, role)
    except grants.GrantError as exc:
        fail(str(exc))
    finally:
        context.engine.dispose()
    console.print(
        f"{role}: {'created; ' if created else ''}{process} privileges ({grants.POLICY[process].summary})",
        highlight=False,
    )
