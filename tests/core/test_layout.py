"""Repository layout rules: rooms import from this repo, the import contracts hold, settings are documented."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controltower.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", ["controltower", "collectors", "metrics", "alerts", "app", "simulator", "wiring"])
def test_rooms_import_from_this_repository(package):
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.fields_help() if f"CONTROLTOWER_{name.upper()}" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_settings_precedence_and_errors():
    from controltower.errors import ConfigError

    env = {"CONTROLTOWER_PORT": "9999", "CONTROLTOWER_MAX_EVENT_AGE": "7d", "CONTROLTOWER_MAX_BODY_BYTES": "1MiB"}
    s = Settings.load({"port": 1234}, environ=env)
    assert (s.port, s.max_event_age, s.max_body_bytes) == (1234, 7 * 86400, 1024 * 1024)
    with pytest.raises(ConfigError, match='CONTROLTOWER_MAX_EVENT_AGE: "soon" is not a duration'):
        Settings.load(environ={"CONTROLTOWER_MAX_EVENT_AGE": "soon"})
    with pytest.raises(ConfigError, match='CONTROLTOWER_PORT: "x" is not an integer'):
        Settings.load(environ={"CONTROLTOWER_PORT": "x"})


def test_every_v1_route_requires_a_scope_and_every_refusal_is_mapped_once(engine, settings):
    """The web layer is the only auth: each room's /v1 endpoint is wrapped in `require_scope`,
    and no room module keeps its own key cache, bearer parsing or 503 mapping."""
    from starlette.routing import Route

    from controltower.context import AppContext
    from wiring.server import build_app

    app = build_app(AppContext(settings, engine))
    v1 = [r for r in app.routes if isinstance(r, Route) and r.path.startswith("/v1/")]
    assert len(v1) >= 7
    unguarded = [r.path for r in v1 if getattr(r.endpoint, "required_scope", None) not in ("ingest", "read")]
    assert not unguarded, unguarded
    for room in ("collectors/http.py", "metrics/http.py", "alerts/http.py"):
        text = (ROOT / room).read_text()
        for copy in ("KeyCache(", "bearer_token(", '"authorization"', '"Retry-After"', "except StorageUnavailable"):
            assert copy not in text, f"{room} re-implements {copy!r}: use controltower.web"
