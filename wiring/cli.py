"""The `controltower` command: the composition root that wires the rooms' commands together.

Each command parses its arguments, calls one function, and maps errors to one line and an exit
code (`--debug` shows the traceback). Rooms add their commands through `register(app)`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from controltower import __version__
from controltower.clitools import err_console
from controltower.errors import ControlTowerError
from controltower.settings import Settings

app = typer.Typer(
    name="controltower",
    help="Control Tower: business SLAs and channel health for retail integrations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state: dict[str, Any] = {"debug": False}
OUR_LOGGERS = ("controltower", "collectors", "metrics", "alerts", "app", "simulator", "wiring")
# pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"controltower {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL; default: CONTROLTOWER_DATABASE_URL, else embedded.",
        show_default=False,
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help="Local state folder (embedded database).", show_default=False),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug
    settings = Settings.load({"database_url": database_url, "data_dir": data_dir})
    if debug:
        settings = settings.with_(log_level="debug")
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    # our own loggers at the configured level; libraries (pgserver, alembic, httpx, apscheduler)
    # only when something is wrong, unless --debug
    logging.basicConfig(level=level if debug else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    ctx.obj = {"settings": settings}


def _register_rooms() -> None:
    from alerts import commands as alert_commands
    from app import commands as app_commands
    from collectors import commands as collector_commands
    from collectors import replay_commands
    from metrics import commands as metric_commands
    from simulator import commands as simulator_commands
    from wiring import corecommands, demo, scheduler

    corecommands.register(app)
    demo.register(app)
    scheduler.register(app)
    collector_commands.register(app)
    replay_commands.register(app)
    metric_commands.register(app)
    alert_commands.register(app)
    simulator_commands.register(app)
    app_commands.register(app)


_register_rooms()


def main(argv: list[str] | None = None) -> None:
    try:
        # without standalone mode click returns (not raises) the code of `typer.Exit`
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except ControlTowerError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # process boundary: one readable line, the traceback behind --debug
        # typer >= 0.29 vendors its own click: recognise usage errors by shape, not by class
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError) and isinstance(exc.orig, Exception):
            detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            err_console.print(f"[bold red]error:[/] database: {detail}", highlight=False, soft_wrap=True)
            sys.exit(1)
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
