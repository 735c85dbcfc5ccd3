"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), started by
`controltower dashboard` against the seeded test database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower.settings import Settings
from tests.app.test_dashboard import WALMART_REASON, seed

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dashboard:
    """`controltower dashboard` as a child process on a free loopback port."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.facts: dict[str, Any] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")}
        env["CONTROLTOWER_REFRESH_SECONDS"] = "5"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wiring", "--database-url", database_url, "--data-dir", str(data_dir),
             "dashboard", "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {self.proc.stdout.read().decode() if self.proc.stdout else ''}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("dashboard did not become healthy")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return int(self.proc.returncode)


@pytest.fixture
def dashboard(engine: Engine, settings: Settings, database_url: str, tmp_path: Path) -> Iterator[Dashboard]:
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    facts = seed(engine, settings, datetime.now(UTC))
    server = Dashboard(database_url, tmp_path / "data")
    server.facts = facts
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def settle(page: Any, selector: str | None = None, timeout: float = 30_000) -> None:
    """Wait until Streamlit is connected, has run the page's script, and `selector` is visible."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout)
    if selector:
        page.wait_for_selector(selector, timeout=timeout, state="visible")
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    previous, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 1.0:
        text = page.inner_text("body")
        if text != previous:
            previous, stable_since = text, time.monotonic()
        page.wait_for_timeout(250)
    page.evaluate("document.fonts.ready")


def shoot(page: Any, url: str, selector: str, path: Path) -> str:
    page.goto(url, wait_until="domcontentloaded")
    settle(page, selector)
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]
    # Streamlit scrolls inside its own container: grow the viewport to the content for a whole-page shot.
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stMainBlockContainer\"]')]"
        ".map(e => e.scrollHeight), 800)"
    )
    page.set_viewport_size({"width": 1500, "height": min(int(height) + 40, 6000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1500, "height": 1000})
    return page.inner_text("body")


def shoot_pages(database_url: str, data_dir: Path, pages: dict[str, str]) -> dict[str, str]:
    """Start the dashboard, screenshot each `{name: path}` into artifacts/screenshots/dashboard-<name>.png
    (waiting for a data frame) and return each page's visible text."""
    from playwright.sync_api import sync_playwright

    server = Dashboard(database_url, data_dir)
    shots = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    texts = {}
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                for name, path in pages.items():
                    texts[name] = shoot(page, f"{server.url}{path}", '[data-testid="stDataFrame"]',
                                        shots / f"dashboard-{name}.png")
            finally:
                browser.close()
    finally:
        server.stop()
    return texts


PAGES = ("health", "breaches", "transaction", "channel", "reconciliation", "inventory", "alerts")


def take_screenshots(base_url: str, folder: Path, recon_day: str) -> dict[str, str]:
    """Screenshots of every page into `folder`; returns each page's visible text."""
    from playwright.sync_api import sync_playwright

    texts = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            texts["health"] = shoot(page, f"{base_url}/", "figure svg", folder / "dashboard-health.png")
            texts["breaches"] = shoot(page, f"{base_url}/breaches?sla=erp_posting&channel=walmart",
                                      '[data-testid="stDataFrame"]', folder / "dashboard-breaches.png")
            texts["transaction"] = shoot(page, f"{base_url}/transaction?q=112-0000001-0000001",
                                         ".js-plotly-plot .main-svg", folder / "dashboard-transaction.png")
            texts["channel"] = shoot(page, f"{base_url}/channel?channel=walmart", ".js-plotly-plot .main-svg",
                                     folder / "dashboard-channel.png")
            texts["reconciliation"] = shoot(page, f"{base_url}/reconciliation?channel=ebay&day={recon_day}",
                                            '[data-testid="stDataFrame"]', folder / "dashboard-reconciliation.png")
            texts["inventory"] = shoot(page, f"{base_url}/inventory", ".js-plotly-plot .main-svg",
                                       folder / "dashboard-inventory.png")
            texts["alerts"] = shoot(page, f"{base_url}/alerts", '[data-testid="stDataFrame"]',
                                    folder / "dashboard-alerts.png")
        finally:
            browser.close()
    return texts


def test_dashboard_pages_in_chromium(dashboard: Dashboard, tmp_path: Path) -> None:
    texts = take_screenshots(dashboard.url, tmp_path, dashboard.facts["recon_day"].isoformat())
    # kept for people to look at (and for CI to archive): artifacts/screenshots/dashboard-<page>.png
    shots = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        shutil.copyfile(tmp_path / f"dashboard-{name}.png", shots / f"dashboard-{name}.png")
    print(f"dashboard screenshots: {shots}")
    health = texts["health"]
    assert "walmart" in health and "CRITICAL" in health.upper()
    assert WALMART_REASON in health
    assert "Where is the delay?" in health
    assert "4" in texts["breaches"] and "Overdue items" in texts["breaches"]
    assert "SO-1001" in texts["transaction"] and "order.erp_posted" in texts["transaction"]
    assert "Orders received (last hour)" in health and "Channels × SLAs" in health
    assert "Received from Amazon" in texts["transaction"]
    assert "Error budget" in texts["channel"] and "Open breaches" in texts["channel"]
    assert "Orders stuck between acknowledged and erp posted" in texts["reconciliation"]
    assert "Stale feeds" in texts["inventory"] and "3 h 10 min" in texts["inventory"]
    assert "Act on an alert" in texts["alerts"] and "Silences" in texts["alerts"]
    assert "version" in health
    for name in PAGES:
        assert (tmp_path / f"dashboard-{name}.png").stat().st_size > 20_000
    assert dashboard.stop() in (0, -signal.SIGTERM)


def test_hostile_event_values_are_text_in_the_dom(dashboard: Dashboard, engine: Engine, settings: Settings) -> None:
    """#15 in a real browser: no link or image made from an event's text, and nothing fetched from it."""
    from playwright.sync_api import sync_playwright

    from collectors.store import EventStore
    from tests.app.test_injection import BACKTICK_KEY, EVIL, SESSION, _event

    record = _event("cid-evil", error_message=EVIL, status="error", attributes={"external_order_id": BACKTICK_KEY})
    assert EventStore(engine, settings).ingest([record], source="test", now=datetime.now(UTC)).accepted == 1
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("request", lambda request: requested.append(request.url))
            from urllib.parse import quote

            for path, needle in ((f"/transaction?q={quote(BACKTICK_KEY)}", "Re-authenticate here"),
                                 (f"/transaction?q={quote(SESSION)}", "Your session expired")):
                page.goto(dashboard.url + path, wait_until="domcontentloaded")
                settle(page, '[data-testid="stAlert"]')
                assert needle in page.inner_text("body")  # shown, as text
                links = page.locator('a[href*="evil.example"]')
                assert links.count() == 0, [links.nth(i).evaluate("e => e.parentElement.parentElement.outerHTML")
                                            for i in range(links.count())]
                assert page.locator('img[src*="evil"]').count() == 0
                assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
                                     / "dashboard-hostile-transaction.png"), full_page=True)
        finally:
            browser.close()
    from urllib.parse import urlsplit

    assert requested and not [url for url in requested if urlsplit(url).hostname == "evil.example"]


def test_alerting_banner_in_chromium(dashboard: Dashboard, engine: Engine) -> None:
    """Alerting stopped 25 minutes ago and one rule fails: every page says so at the top, as text;
    an open item with a year-1 due time is listed on Open breaches as invalid, not a crash."""
    from datetime import timedelta

    import sqlalchemy as sa
    from playwright.sync_api import sync_playwright

    now = datetime.now(UTC)
    last = now - timedelta(minutes=25)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alert_evaluations SET last_success_at = :last, consecutive_failures = 50, "
                             "last_error = 'numeric field overflow' WHERE rule = ''"), {"last": last})
        conn.execute(sa.text(
            "INSERT INTO alert_evaluations (rule, last_run_at, last_error, failing_since, consecutive_failures) "
            "VALUES ('[ImpactHigh](https://evil.example/x)', :now, 'boom', :now, 3)"), {"now": now})
        conn.execute(sa.text(  # a stored time Python cannot hold (#11): listed, marked invalid
            "INSERT INTO sla_open_items VALUES ('erp_posting', 'Y1', 'walmart', "
            "CAST('0001-01-01T00:00:00+05:00' AS timestamptz), CAST('0001-01-02T00:00:00+05:00' AS timestamptz))"))
    shots = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            text = shoot(page, f"{dashboard.url}/", '[data-testid="stAlert"]', shots / "dashboard-alerting-stopped.png")
            text = text.replace("\u2060", "")  # the invisible word joiner escaping puts inside `https://`
            assert f"Alerting has not completed an evaluation since {last:%H:%M} UTC (25 min" in text
            assert "on-call is not being paged" in text
            assert "1 alert rule fails to evaluate and cannot fire: [ImpactHigh](https://evil.example/x)." in text
            assert page.locator('a[href*="evil.example"]').count() == 0
            text = shoot(page, f"{dashboard.url}/breaches", '[data-testid="stDataFrame"]',
                         shots / "dashboard-breaches-alerting-stopped.png")
            assert "on-call is not being paged" in text
            assert "1 item with an invalid date stored" in text  # the table itself is a canvas
        finally:
            browser.close()


def test_business_transaction_and_identity_pages_in_chromium(engine, settings, database_url, tmp_path) -> None:
    """Real-id simulator data (every system its own ids, linked on ingest): the transaction page
    found by a carrier's tracking number tells the whole order, the Identity page lists orphans."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    import sqlalchemy as sa
    from playwright.sync_api import sync_playwright

    from metrics import definitions, jobs
    from simulator.emit import StoreSink
    from simulator.run import simulate

    now = datetime.now(UTC)
    simulate(seed=11, backfill=3 * 3600, ids="real", store=StoreSink(engine, settings), now=now)
    jobs.refresh(engine, definitions.load(), now, settings)
    with engine.connect() as conn:
        # a tracking number the carrier scanned (no channel) on an order that was also posted
        tracking = conn.execute(sa.text("""
            SELECT k.value FROM transaction_keys k JOIN transactions c ON c.correlation_id = k.correlation_id
            WHERE k.kind = 'tracking_number' AND c.channel IS NULL AND c.last_system IS NOT NULL
              AND EXISTS (SELECT 1 FROM transactions o JOIN transaction_milestones m ON m.correlation_id = o.correlation_id
                          WHERE o.business_id = c.business_id AND m.milestone = 'order.erp_posted')
            ORDER BY k.value LIMIT 1""")).scalar_one()
    server = Dashboard(database_url, tmp_path / "data")
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                story = shoot(page, f"{server.url}/transaction?q={tracking}", ".js-plotly-plot .main-svg",
                              tmp_path / "dashboard-business-transaction.png")
                identity = shoot(page, f"{server.url}/identity", ".js-plotly-plot .main-svg",
                                 tmp_path / "dashboard-identity.png")
            finally:
                browser.close()
    finally:
        server.stop()
    shots = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for name in ("business-transaction", "identity"):
        shutil.copyfile(tmp_path / f"dashboard-{name}.png", shots / f"dashboard-{name}.png")
    assert "ERP posted it as 45" in story and tracking in story
    assert "correlation ids" in story
    assert "Orphans" in identity and "Hubs" in identity


def test_incidents_page_in_chromium(engine, settings, database_url, tmp_path) -> None:
    """An ERP outage on 5 channels seen as one incident: the list, then the incident with its
    title, cause, alerts and timeline (screenshots kept in artifacts/screenshots/)."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from datetime import timedelta

    import metrics.definitions
    import metrics.jobs
    from alerts.evaluate import evaluate
    from alerts.rules import parse
    from controltower.yamlfile import loads
    from tests.alerts.test_incidents_outage import NOW, RULES, seed_outage

    seed_outage(engine, settings)
    defs = metrics.definitions.load()
    rules = parse(loads(RULES.replace("URL", "http://127.0.0.1:9/hook"), "alerts.yaml"))
    for at in (NOW, NOW + timedelta(minutes=11)):
        metrics.jobs.refresh(engine, defs, at)
        evaluate(engine, rules.rules, at, routes=rules.routes, incidents=rules.incidents)
    with engine.connect() as conn:
        incident_id = conn.execute(sa.text("SELECT id FROM incidents")).scalar_one()

    texts = shoot_pages(database_url, tmp_path / "data",
                        {"incidents": "/incidents", "incident": f"/incidents?id={incident_id}"})
    listing, one = texts["incidents"], texts["incident"]
    title = "ERP posting is breaching on all 5 channels since 12:11 UTC"
    assert "No open incident" not in listing  # the list's cells are drawn on a canvas: the detail page has the text
    assert title in one
    assert "the ERP or the middleware in front of it" in one
    assert "likely cause" in one and "Acknowledge incident" in one


def test_exceptions_page_in_chromium(engine, settings, database_url, tmp_path) -> None:
    """The exception work queue and one group, seen in a browser (screenshots kept)."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from datetime import timedelta

    from tests.metrics.helpers import ingest
    from tests.metrics.test_exceptions_grouping import failed, tick

    now = datetime.now(UTC).replace(microsecond=0)
    ingest(engine, settings, [
        failed("w1", "order.erp_posted", now - timedelta(minutes=9), "Gateway timeout from ERP", code="504"),
        failed("w2", "order.erp_posted", now - timedelta(minutes=8), "Gateway timeout from ERP", code="504"),
        failed("w3", "order.acknowledged", now - timedelta(minutes=7), "Unknown SKU ZX-9", channel="ebay"),
    ], now=now)
    tick(engine, now)
    with engine.connect() as conn:
        group = conn.execute(sa.text("SELECT id FROM exception_groups WHERE class = 'timeout'")).scalar_one()

    texts = shoot_pages(database_url, tmp_path / "data",
                        {"exceptions": "/exceptions", "exception": f"/exceptions?id={group}"})
    listing, one = texts["exceptions"], texts["exception"]
    assert "Exceptions" in listing
    assert "timeout" in one
