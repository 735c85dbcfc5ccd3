"""docker-compose.yml checked against the code, since Docker cannot run here.

Every service's command must be a real CLI command with real options, every environment
variable a setting the code reads, every dependency an existing service, and the exposed
ports the ones the processes listen on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
import yaml

from controltower.settings import ENV_PREFIX, Settings
from wiring.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _command(path: list[str]) -> Any:
    group = typer.main.get_command(app)
    ctx = group.context_class(group)
    cmd: Any = group
    for word in path:
        # typer >= 0.29 vendors click, so test the shape rather than click.Group
        assert hasattr(cmd, "get_command"), f"{path}: {word} follows a command that takes no subcommand"
        sub = cmd.get_command(ctx, word)
        assert sub is not None, f"`controltower {' '.join(path)}`: no command {word!r}"
        cmd = sub
    return cmd


def test_every_service_runs_a_real_command_with_real_options():
    for name, service in SERVICES.items():
        if "command" not in service:
            assert service.get("image", "").startswith("postgres:"), name
            continue
        argv = service["command"]
        words = [w for w in argv if not w.startswith("-")]
        # subcommand words come first; the rest are option values
        path = []
        for w in words:
            try:
                _command(path + [w])
            except AssertionError:
                break
            path.append(w)
        assert path, f"{name}: {argv[0]!r} is not a controltower command"
        cmd = _command(path)
        known = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        for flag in (a for a in argv if a.startswith("--")):
            assert flag in known, f"service {name}: `controltower {' '.join(path)}` has no option {flag}"


def test_environment_names_are_settings_the_code_reads():
    settings = {ENV_PREFIX + n.upper() for n in Settings.fields_help()}
    anchor = COMPOSE["x-app"]["environment"]
    names = set(anchor)
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    app_names = {n for n in names if n.startswith(ENV_PREFIX)}
    assert app_names <= settings, app_names - settings
    assert "CONTROLTOWER_DATABASE_URL" in anchor
    assert anchor["CONTROLTOWER_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dependencies_and_healthchecks():
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} health, which has no healthcheck"
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert "pgdata" in COMPOSE["volumes"]


def test_ports_match_the_processes():
    settings = Settings.load(environ={})
    assert SERVICES["collector"]["ports"] == [f"{settings.port}:{settings.port}"]
    assert SERVICES["dashboard"]["ports"] == [f"{settings.dashboard_port}:{settings.dashboard_port}"]
    assert "/readyz" in " ".join(SERVICES["collector"]["healthcheck"]["test"])


def test_no_secret_is_committed():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"^\s*\w*PASSWORD\w*:\s*[^$\s{]", text, re.M), "a literal password in docker-compose.yml"
    assert not re.search(r"://\w+:[^$@/\s]+@", text), "a literal password in a URL in docker-compose.yml"
    assert ".env" in (ROOT / ".gitignore").read_text()
