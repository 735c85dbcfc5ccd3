"""docker-compose.yml checked against the code, since Docker cannot run here.

Every service's command must be a real CLI command with real options, every environment
variable a setting the code reads, every dependency an existing service, and the exposed
ports the ones the processes listen on. Least privilege: each process connects as its own
role, granted by `controltower grant` for that process; only the one-shots use the owner;
the dashboard is published on loopback only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from controltower import grants
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
    names: set[str] = set()
    for service in SERVICES.values():
        names |= set(service.get("environment") or {})
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    app_names = {n for n in names if n.startswith(ENV_PREFIX)}
    assert app_names <= settings, app_names - settings
    # every ${VAR} the file needs is in .env.example, so a copy of it starts the stack
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    needed = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert needed <= example, needed - example


def _user(url: str) -> str:
    assert url.startswith("postgresql+psycopg://"), url
    return url.removeprefix("postgresql+psycopg://").split(":", 1)[0]


def test_each_process_connects_as_its_own_granted_role():
    owner = SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    urls = {name: (s.get("environment") or {}).get("CONTROLTOWER_DATABASE_URL") for name, s in SERVICES.items()}
    assert _user(urls["migrate"]) == owner
    roles = {}
    for process in grants.PROCESSES:
        service = SERVICES[process]
        role = _user(urls[process])
        assert role != owner, f"{process} connects as the owner"
        grant = SERVICES[f"grant-{process}"]
        command = grant["command"]
        assert command[:3] == ["grant", process, role], f"grant-{process}: {command}"
        assert _user(urls[f"grant-{process}"]) == owner
        secret = command[command.index("--password-env") + 1]
        # the role's password reaches the grant one-shot from the same .env value the process uses
        variable = re.search(r"\$\{(\w+)", grant["environment"][secret]).group(1)
        assert f"${{{variable}:?" in urls[process], f"{process}: its URL does not use {variable}"
        assert grant["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert service["depends_on"][f"grant-{process}"]["condition"] == "service_completed_successfully"
        roles[process] = role
    assert len(set(roles.values())) == len(roles), roles
    owners = {name for name, url in urls.items() if url and _user(url) == owner}
    assert owners == {"migrate", *(f"grant-{p}" for p in grants.PROCESSES)}
    assert urls["simulator"] is None  # HTTP only
    text = (ROOT / "docker-compose.yml").read_text()
    assert "env_file" not in text, "an env_file would hand every secret (the owner's too) to every container"


def test_the_resolved_file_is_valid_compose():
    compose_spec = pytest.importorskip("compose_spec")
    resolved = {k: v for k, v in COMPOSE.items() if not k.startswith("x-")}  # anchors merged by the loader
    compose_spec.PyCompose.from_yaml(yaml.safe_dump(resolved)).validate()


def test_dependencies_and_healthchecks():
    for name, service in SERVICES.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} health, which has no healthcheck"
    for name in ("migrate", *(f"grant-{p}" for p in grants.PROCESSES)):
        assert SERVICES[name]["restart"] == "no", name
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert "pgdata" in COMPOSE["volumes"]


def test_ports_match_the_processes():
    settings = Settings.load(environ={})
    assert SERVICES["collector"]["ports"] == [f"{settings.port}:{settings.port}"]
    # without sign-in the dashboard can silence alerts: loopback only
    assert SERVICES["dashboard"]["ports"] == [f"127.0.0.1:{settings.dashboard_port}:{settings.dashboard_port}"]
    assert "ports" not in SERVICES["postgres"] and "ports" not in SERVICES["scheduler"]
    assert "/readyz" in " ".join(SERVICES["collector"]["healthcheck"]["test"])


def test_the_dashboard_command_in_compose_is_allowed_to_start():
    """`dashboard --host 0.0.0.0` is refused without sign-in unless the service says a proxy (here:
    the loopback-only publish) protects it; compose must say so or the dashboard never starts."""
    from app.access import bind_refusal

    service = SERVICES["dashboard"]
    host = service["command"][service["command"].index("--host") + 1]
    env = {k: str(v) for k, v in service["environment"].items() if k.startswith(ENV_PREFIX)}
    settings = Settings.load(environ=env)
    assert bind_refusal(host, auth_configured=False, behind_proxy=settings.dashboard_behind_proxy) is None
    assert bind_refusal(host, auth_configured=False, behind_proxy=False) is not None


def test_no_secret_is_committed():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"^\s*\w*PASSWORD\w*:\s*[^$\s{]", text, re.M), "a literal password in docker-compose.yml"
    assert not re.search(r"://\w+:[^$@/\s]+@", text), "a literal password in a URL in docker-compose.yml"
    assert ".env" in (ROOT / ".gitignore").read_text()
