"""#10 finding 20: /metrics needs the read scope once keys exist, or a metrics token, or is open by choice."""

from __future__ import annotations

import httpx
import pytest

from controltower import apikeys
from controltower.context import AppContext
from controltower.errors import ConfigError
from controltower.settings import Settings
from tests.conftest import LoopbackServer
from wiring.server import build_app


def test_read_key_mode_is_the_default(engine, settings):
    assert settings.metrics_auth == "read-key"
    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200  # no key ever: open like /v1
    reader = apikeys.create(engine, "prom", ("read",))
    writer = apikeys.create(engine, "src", ("ingest",))
    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {writer}"}).status_code == 401
        ok = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {reader}"})
        assert ok.status_code == 200 and "controltower_collector_events_accepted_total" in ok.text
        assert ok.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_token_mode(engine, settings):
    reader = apikeys.create(engine, "prom", ("read",))
    tokened = settings.with_(metrics_auth="token", metrics_token="s3cret-scrape")
    with LoopbackServer(build_app(AppContext(tokened, engine))) as server:
        for given in (None, "s3cret-scrap", "s3cret-scrape2", reader, "S3CRET-SCRAPE"):
            headers = {"authorization": f"Bearer {given}"} if given else {}
            assert httpx.get(server.url + "/metrics", headers=headers).status_code == 401, given
        assert httpx.get(server.url + "/metrics", headers={"authorization": "Bearer s3cret-scrape"}).status_code == 200
    # token mode without a token configured refuses everyone
    with LoopbackServer(build_app(AppContext(settings.with_(metrics_auth="token"), engine))) as server:
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/metrics", headers={"authorization": "Bearer x"}).status_code == 401


def test_open_mode(engine, settings):
    apikeys.create(engine, "prom", ("read",))
    with LoopbackServer(build_app(AppContext(settings.with_(metrics_auth="open"), engine))) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200


def test_metrics_auth_setting_is_validated():
    assert Settings.load(environ={"CONTROLTOWER_METRICS_AUTH": "Token"}).metrics_auth == "token"
    with pytest.raises(ConfigError, match='CONTROLTOWER_METRICS_AUTH: "basic" is not one of read-key, token, open'):
        Settings.load(environ={"CONTROLTOWER_METRICS_AUTH": "basic"})


def test_served_metrics_say_whether_alerting_runs(engine, settings):
    """The alerts room's collector is mounted: a scrape shows the last successful evaluation."""
    from datetime import UTC, datetime

    from alerts import health

    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        before = httpx.get(server.url + "/metrics").text
        assert "controltower_alerts_last_success_timestamp_seconds 0.0" in before  # never evaluated
        assert "controltower_alerts_evaluation_stale 1.0" in before
        at = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
        with engine.begin() as conn:
            health.record_cycle(conn, at, [], {}, {}, interval_seconds=30.0)
        after = httpx.get(server.url + "/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(after) for s in f.samples}
    assert values["controltower_alerts_last_success_timestamp_seconds"] == at.timestamp()
