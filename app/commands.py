"""CLI commands of the `app` room: `controltower dashboard` runs the Streamlit dashboard.

It listens on loopback unless sign-in is configured or CONTROLTOWER_DASHBOARD_BEHIND_PROXY says
an authenticating proxy is in front (app/access.py decides; a refusal is one line, exit 2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import typer

from app import access
from controltower.clitools import console, settings_of
from controltower.settings import ENV_PREFIX, Settings

MAIN = Path(__file__).resolve().parent / "main.py"
# The repository's .streamlit/config.toml (theme, server): Streamlit only reads the one in the
# working directory, so when started elsewhere its settings are passed as flags.
CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


def register(app: typer.Typer) -> None:
    """Add this room's commands to `app`."""
    app.command("dashboard")(dashboard_command)


def config_flags(config: Path = CONFIG, cwd: Path | None = None) -> list[str]:
    """`--section.key value` flags for `config` unless Streamlit will read it itself from `cwd`."""
    cwd = cwd or Path.cwd()
    if not config.is_file() or (cwd / ".streamlit" / "config.toml").is_file():
        return []
    flags: list[str] = []
    for section, values in tomllib.loads(config.read_text()).items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if section == "server" and key in ("address", "port", "headless"):
                continue  # given explicitly
            if isinstance(value, bool):
                value = str(value).lower()
            flags.append(f"--{section}.{key}={value}")
    return flags


def dashboard_argv(host: str, port: int, *, cwd: Path | None = None) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        *config_flags(cwd=cwd),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
    ]


def bind_refusal(host: str, settings: Settings, cwd: Path | None = None) -> str | None:
    """Why `controltower dashboard --host HOST` must not start, or None."""
    configured = access.secrets_have_auth(access.secrets_paths(cwd or Path.cwd()))
    return access.bind_refusal(host, auth_configured=configured, behind_proxy=settings.dashboard_behind_proxy)


def dashboard_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours (CONTROLTOWER_* included) plus the resolved database and data folder."""
    env = dict(os.environ if base is None else base)
    if settings.database_url:
        env[ENV_PREFIX + "DATABASE_URL"] = settings.database_url
    env[ENV_PREFIX + "DATA_DIR"] = str(Path(settings.data_dir).resolve())
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def dashboard_command(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on. Other than loopback only with sign-in ([auth] in .streamlit/secrets.toml) "
        "or CONTROLTOWER_DASHBOARD_BEHIND_PROXY=1.",
    ),
    port: int = typer.Option(None, "--port", help="Port; default CONTROLTOWER_DASHBOARD_PORT (8501).", show_default=False),
) -> None:
    """Run the dashboard (Streamlit): channel health, open breaches, transaction search."""
    settings = settings_of(ctx)
    port = port or settings.dashboard_port
    refusal = bind_refusal(host, settings)
    if refusal:
        typer.echo(f"error: {refusal}", err=True)  # one line, never wrapped
        raise typer.Exit(2)
    argv = dashboard_argv(host, port)
    console.print(f"dashboard on http://{host}:{port} (Ctrl-C to stop)", highlight=False)
    child = subprocess.Popen(argv, env=dashboard_env(settings))  # noqa: S603 - our own interpreter and file
    previous: Any = signal.getsignal(signal.SIGTERM)

    def forward_term(signum: int, frame: Any) -> None:
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward_term)
    try:
        code = _wait(child)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise typer.Exit(code if code > 0 else 1)


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the whole group; send it again in case we were signalled alone.
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
            try:
                return child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()
            except KeyboardInterrupt:
                child.kill()
                return child.wait()
