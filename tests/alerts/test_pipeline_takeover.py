"""Delivery across a leader crash, with two real `python -m wiring scheduler` processes.

The leader is SIGKILLed while a receiver holds its first notification's POST open (sent, not yet
marked as sent). The standby takes over within about a second and re-sends that one notification
(at-least-once: the row lock died with the leader's connection, the row is still pending); every
other notification arrives exactly once, and every row ends `sent`.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.rules import parse
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row
from tests.alerts.test_scheduler import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Capture(http.server.ThreadingHTTPServer):
    """Loopback webhook receiver: records each POST's groupKey; holds the first one until `release`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keys: list[str] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.server.keys.append(body["groupLabels"]["alertname"])
        if len(self.server.keys) == 1:
            self.server.first_arrived.set()
            self.server.release.wait(30)  # the sender dies meanwhile
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def rules_yaml(url: str, names: list[str]) -> str:
    rules = "\n".join(f"  - {{name: {n}, sla: erp_posting, channel: {n.lower()}, field: open_breaches, op: \">\", value: 0}}"
                      for n in names)
    return f"receivers:\n  hook: {{type: webhook, url: \"{url}/hook\", timeout: 30s}}\ndefault_receivers: [hook]\nrules:\n{rules}\n"


def start(name: str, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "wiring", "scheduler"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    return proc, log


@pytest.mark.slow
def test_a_killed_leader_costs_at_most_one_resent_notification(engine, database_url, tmp_path):
    names = ["Amazon", "Ebay", "Walmart"]
    server = Capture()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The processes evaluate a rule that never holds; the test's own rules fill the outbox.
    quiet = tmp_path / "alerts.yaml"
    quiet.write_text(rules_yaml(server.url, []).replace("rules:\n", "rules:\n  - {name: Quiet, sla: erp_posting, "
                                                        "field: open_breaches, op: \">\", value: 1000000000}\n"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONTROLTOWER_DATABASE_URL": database_url,
           "CONTROLTOWER_ALERTS_FILE": str(quiet), "CONTROLTOWER_EVALUATION_INTERVAL": "1",
           "CONTROLTOWER_DATA_DIR": str(tmp_path / "data")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, a_log = start("a", env, tmp_path)
        procs.append(a)
        wait_for(lambda: "scheduler is the leader" in a_log.read_text(), timeout=30)
        b, b_log = start("b", env, tmp_path)
        procs.append(b)
        wait_for(lambda: "scheduler started" in b_log.read_text(), timeout=30)
        assert "scheduler is the leader" not in b_log.read_text()

        rs = parse(loads(rules_yaml(server.url, names), "test.yaml"))
        now = datetime.now(UTC)
        for n in names:
            put_row(engine, channel=n.lower(), at=now, open_breaches=2)
        evaluate(engine, rs.rules, now)
        assert len(outbox(engine)) == 3  # one notification per rule

        assert server.first_arrived.wait(20), "the leader did not deliver"
        a.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.wait(10)
        server.release.set()
        wait_for(lambda: "scheduler is the leader" in b_log.read_text(), timeout=15)
        takeover = time.monotonic() - killed
        wait_for(lambda: len(server.keys) >= 4, timeout=20)
        time.sleep(2.5)  # several more ticks: nothing else is sent

        first = server.keys[0]
        assert Counter(server.keys) == Counter({first: 2, **{n: 1 for n in names if n != first}})
        with engine.connect() as conn:
            statuses = conn.execute(sa.text("SELECT status, count(*) FROM alert_notifications GROUP BY 1")).all()
        assert statuses == [("sent", 3)]
        assert takeover < 5, f"takeover took {takeover:.1f} s"
    finally:
        server.release.set()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        server.shutdown()
