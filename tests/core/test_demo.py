"""The README's first command: `controltower demo` starts everything and stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from controltower.db import embedded_url, make_engine, stop_embedded

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_running(data_dir: Path) -> bool:
    return (data_dir / "pgdata" / "postmaster.pid").exists()


def test_embedded_postgres_starts_reuses_and_stops(tmp_path):
    url = embedded_url(tmp_path)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()
    assert embedded_url(tmp_path) == url  # reused, not re-initialised
    assert stop_embedded(tmp_path) and not postgres_running(tmp_path)
    assert not stop_embedded(tmp_path)


def test_demo_runs_the_stack_and_shuts_down_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")}
    env |= {"CONTROLTOWER_PORT": str(port), "CONTROLTOWER_EVALUATION_INTERVAL": "2s", "PYTHONUNBUFFERED": "1"}
    data = tmp_path / "data"
    log = (tmp_path / "demo.log").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "wiring", "--data-dir", str(data), "demo", "--backfill", "2h", "--no-dashboard", "--speed", "600"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        rows = []
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                rows = httpx.get(base + "/v1/sla", params={"window": "3h"}, timeout=5).json()["slas"]
                log.seek(0)
                running = "Control Tower demo is running" in log.read()  # the collector answers before the banner
                if running and any(r["sla"] == "erp_posting" and r["open_breaches"] for r in rows):
                    break
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(1)
        # the demo's outage began hours before the present: unposted orders, not postings, fill the window
        assert any(r["sla"] == "erp_posting" and r["open_breaches"] for r in rows), log.seek(0) or log.read()[-3000:]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) in (0, 130)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        stop_embedded(data)
    log.seek(0)
    text = log.read()
    assert "Control Tower demo is running" in text and "stopped" in text
    assert not postgres_running(data)
    with pytest.raises(httpx.HTTPError):
        httpx.get(base + "/healthz", timeout=2)
