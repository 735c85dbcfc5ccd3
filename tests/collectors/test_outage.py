"""Storage outage during ingest: 503 + Retry-After, then recovery with nothing acknowledged lost.

Uses its own embedded PostgreSQL (pgserver) so the test can stop and restart the server, the
real collector app on loopback, and the real OpenTelemetry SDK exporter as the client.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from controltower import migrate
from controltower.context import AppContext
from controltower.db import make_engine, normalize_url
from controltower.settings import Settings
from tests.conftest import LoopbackServer
from wiring.server import build_app

pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres(tmp_path: Path):
    import pgserver
    from pgserver._commands import pg_ctl  # created at import time, one function per binary

    folder = tmp_path / "pgdata"
    server = pgserver.get_server(folder, cleanup_mode="delete")
    url = normalize_url(server.get_uri())

    def stop() -> None:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=folder, user=server.system_user)

    def start() -> None:
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {_socket_dir(url)}", "-l", str(folder / "log"), "start"],
               pgdata=folder, user=server.system_user)

    yield url, stop, start
    # the server we restarted by hand is not the one pgserver tracks: stop it ourselves, or it
    # outlives the test session (pgserver then only deletes the folder)
    try:
        stop()
    except Exception:  # already stopped
        pass


def _socket_dir(url: str) -> str:
    return sa.engine.make_url(url).query["host"]  # type: ignore[return-value]


def test_exporter_delivers_everything_across_a_database_restart(own_postgres, tmp_path):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    url, stop, start = own_postgres
    engine = make_engine(url, pool_size=4)
    migrate.upgrade(engine)
    settings = Settings.load({"database_url": url, "data_dir": tmp_path, "retry_after_seconds": 1}, environ={})
    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        provider = TracerProvider(resource=Resource.create({"service.name": "middleware"}))
        tracer = provider.get_tracer("test")
        exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", timeout=30)

        def spans(prefix: str, n: int) -> list:
            out = []
            for i in range(n):
                with tracer.start_as_current_span(f"order.received {i}") as span:
                    span.set_attribute("retail.correlation_id", f"{prefix}-{i}")
                    span.set_attribute("retail.channel", "shopify")
                    span.set_attribute("retail.flow", "order")
                    span.set_attribute("retail.stage", "received")
                    out.append(span)
            return out

        assert exporter.export(spans("before", 5)) == SpanExportResult.SUCCESS

        stop()
        events = httpx.post(server.url + "/v1/events", json=[{
            "event_id": "x", "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": "c",
            "channel": "shopify", "flow": "order", "stage": "received"}])
        assert events.status_code == 503 and events.headers["retry-after"] == "1"
        assert httpx.get(server.url + "/readyz").status_code == 503

        # The exporter retries 503 with Retry-After; bring the database back meanwhile.
        restarter = threading.Timer(3.0, start)
        restarter.start()
        started = time.monotonic()
        result = exporter.export(spans("during", 7))
        restarter.join()
        assert result == SpanExportResult.SUCCESS
        assert time.monotonic() - started >= 2.5  # it really had to wait for the database

        assert httpx.get(server.url + "/readyz").status_code == 200
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT correlation_id FROM events ORDER BY 1")).scalars().all()
        assert stored == sorted([f"before-{i}" for i in range(5)] + [f"during-{i}" for i in range(7)])
    engine.dispose()
